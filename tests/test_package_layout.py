"""The package's shape: no two parts import each other (directly or round a cycle), and
nothing outside `objectives/` branches on an objective's name."""

import ast
import pathlib

import bert_jax

ROOT = pathlib.Path(bert_jax.__file__).parent


def _part(module: str) -> str:
    """bert_jax.training.finetune -> training; bert_jax.encode -> encode."""
    return module.split(".")[1] if module.count(".") else ""


def _imports() -> dict[str, set[str]]:
    """Part -> the other parts it imports, counting imports inside functions."""
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        part = rel.parts[0]
        graph.setdefault(part, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bert_jax"):
                names = (
                    [node.module] if node.module != "bert_jax" else [f"bert_jax.{a.name}" for a in node.names]
                )
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("bert_jax.")]
            else:
                continue
            graph[part] |= {_part(n) for n in names} - {part, ""}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_part_of_the_package_imports_one_that_imports_it_back():
    graph = _imports()
    assert "training" in graph["encode"] and "data" in graph["training"]  # the scan sees imports
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_a_cycle_is_found():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_nothing_outside_objectives_branches_on_an_objective_name():
    from bert_jax.objectives import OBJECTIVES

    names = set(OBJECTIVES)
    found = []
    for path in ROOT.rglob("*.py"):
        if path.relative_to(ROOT).parts[0] == "objectives":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(
                isinstance(side, ast.Attribute)
                and side.attr == "objective"
                or isinstance(side, ast.Name)
                and side.id == "objective"
                for side in (node.left, *node.comparators)
            ):
                constants = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant)]
                if names & set(constants):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, found
