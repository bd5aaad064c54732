"""Examples as every source reads them (`_Row`, `_Question`, `_Sentence`), the checks all
sources share, and `_Source`: a task's kind, label set, default splits and reader."""

from __future__ import annotations

import dataclasses

from bert_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class _Row:
    """One sentence or sentence pair (classification / regression)."""

    id: str
    texts: tuple[str, ...]
    label: str | float | None  # label name, regression target, or None (unlabelled)
    where: str  # "FILE:LINE" or "glue/cola split train idx 7", for error messages


@dataclasses.dataclass(frozen=True)
class _Question:
    """One SQuAD question with its context."""

    id: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]  # (text, answer_start); () when unanswerable
    label: bool | None  # True: labelled (answers given, maybe none); None: unlabelled
    where: str


@dataclasses.dataclass(frozen=True)
class _Sentence:
    """One CoNLL sentence."""

    words: tuple[str, ...]
    label: tuple[str, ...] | None  # the tags, or None when unlabelled
    where: str  # of the sentence
    word_where: tuple[str, ...] = ()  # of each word, where known ("FILE:LINE")

    def where_of(self, w: int) -> str:
        return self.word_where[w] if self.word_where else f"{self.where} word {w}"


class _Source:
    """Where a task's examples come from: the kind, label set, default splits and readers."""

    def __init__(
        self,
        kind: str,
        label_names: tuple[str, ...],
        default_train: str,
        read_fn,
        default_eval: tuple[str, ...] = (),
        default_predict: tuple[str, ...] = (),
        version_2: bool = False,
        glue: str = "",
        files: dict[str, str] | None = None,
    ):
        self.kind, self.label_names, self.default_train = kind, label_names, default_train
        self._read_fn, self._default_eval, self._default_predict = read_fn, default_eval, default_predict
        self.version_2, self.glue, self.files = version_2, glue, files
        self._cache: dict[str, list] = {}

    def read(self, split: str) -> list:
        if split not in self._cache:
            self._cache[split] = self._read_fn(split)
        return self._cache[split]

    def labelled(self, split: str) -> bool:
        return all(e.label is not None for e in self.read(split))

    def default_eval(self) -> tuple[str, ...]:
        if self.files is None:
            return self._default_eval
        return tuple(s for s in ("validation", "test") if s in self.files and self.labelled(s))

    def default_predict(self) -> tuple[str, ...]:
        if self.files is None:
            return self._default_predict
        return ("test",) if "test" in self.files and not self.labelled("test") else ()


def _nonempty(examples: list, what: str) -> list:
    if not examples:
        raise UserError(f"{what}: no examples (an empty split)")
    return examples


def _check_ids(questions: list[_Question]) -> list[_Question]:
    seen = {}
    for q in questions:
        if q.id in seen:
            raise UserError(f"{q.where}: question id {q.id!r} repeats {seen[q.id]}; ids must be unique")
        seen[q.id] = q.where
    return questions
