"""Fine-tuning task pipelines: examples (TFDS or the user's files) -> model rows -> scores and
prediction files.

    task = load_task(config.task, tokenizer)
    train = task.features(task.train_split, training=True)     # Features: numpy rows + meta
    metrics, predictions = task.evaluate(split, features, outputs)   # outputs row-aligned logits
    task.write_predictions(split, predictions, output_dir)

Four kinds of task, one head each:

  classification          GLUE (glue/<cola|sst2|mrpc|qqp|mnli|qnli|rte|wnli|ax>) or CSV/TSV/JSONL;
                          one row per example, pairs truncated longest-first as BERT did.
  regression              GLUE STS-B or CSV/TSV/JSONL with a numeric label; the head's single
                          logit is the prediction.
  span                    SQuAD v1.1 / v2.0 (TFDS, SQuAD JSON, HF-style JSONL), as BERT's
                          run_squad.py: whitespace words, per-word sub-tokens, sliding windows
                          over the context, n-best search over all of a question's windows.
  token_classification    CoNLL-2003 (TFDS) or CoNLL files; a word's label sits on its first
                          sub-token.

Every word is tokenized on its own, which gives the same sub-tokens as tokenizing the whole
text: WordPiece and SentencePiece split on whitespace first anyway, and for byte-level BPE
(RoBERTa) every word but a text's first is tokenized with its leading space (" word" ->
"Ġword"), as it appears inside the text.

Anything wrong with the data raises `UserError` naming the file and line (TFDS: split and
idx/example number), the field and what was expected.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from bert_jax.data.tokenizers import BYTE_DECODER, Tokenizer
from bert_jax.errors import UserError

KINDS = ("classification", "regression", "span", "token_classification")
HEADS = {"classification": "classification", "regression": "classification", "span": "span",
         "token_classification": "token_classification"}

# The task config's fields and their defaults (configs/finetune/finetune_base.py defines them);
# a plain dict given to load_task may leave any of them out.
DEFAULTS = {
    "source": "tfds", "name": "glue/cola", "kind": "", "tfds_data_dir": "", "train_split": "",
    "eval_splits": "", "predict_splits": "", "files": {"train": "", "validation": "", "test": ""},
    "text_columns": "", "label_column": "label", "id_column": "", "labels": "", "max_seq_length": 128,
    "doc_stride": 128, "max_query_length": 64, "n_best_size": 20, "max_answer_length": 30,
    "max_examples": 0,
}

# GLUE in TFDS: text features, metrics (main first... see `main`), main metric.
_GLUE = {
    "cola": (("sentence",), ("mcc",), "mcc"),
    "sst2": (("sentence",), ("accuracy",), "accuracy"),
    # GLUE reports accuracy and F1 of the positive class (equivalent / duplicate); F1 is main.
    "mrpc": (("sentence1", "sentence2"), ("accuracy", "f1"), "f1"),
    "qqp": (("question1", "question2"), ("accuracy", "f1"), "f1"),
    "stsb": (("sentence1", "sentence2"), ("pearson", "spearman"), "pearson"),
    "mnli": (("premise", "hypothesis"), ("accuracy",), "accuracy"),
    "qnli": (("question", "sentence"), ("accuracy",), "accuracy"),
    "rte": (("sentence1", "sentence2"), ("accuracy",), "accuracy"),
    "wnli": (("sentence1", "sentence2"), ("accuracy",), "accuracy"),
    "ax": (("premise", "hypothesis"), ("accuracy",), "accuracy"),
}
# The leaderboard's file for each test split, and the tasks it wants label names from.
_GLUE_FILES = {
    "cola": {"test": "CoLA.tsv"}, "sst2": {"test": "SST-2.tsv"}, "mrpc": {"test": "MRPC.tsv"},
    "qqp": {"test": "QQP.tsv"}, "stsb": {"test": "STS-B.tsv"},
    "mnli": {"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"},
    "qnli": {"test": "QNLI.tsv"}, "rte": {"test": "RTE.tsv"}, "wnli": {"test": "WNLI.tsv"},
    "ax": {"test": "AX.tsv"},
}
_GLUE_NAMED = ("mnli", "qnli", "rte", "ax")
TFDS_NAMES = (*(f"glue/{t}" for t in _GLUE), "squad/v1.1", "squad/v2.0", "conll2003")

# File formats each kind reads, by extension.
_FORMATS = {
    "classification": (".csv", ".tsv", ".jsonl"),
    "regression": (".csv", ".tsv", ".jsonl"),
    "span": (".json", ".jsonl"),
    "token_classification": (".conll", ".txt", ".tsv"),
}

# BERT's run_squad.py whitespace: these characters only (not e.g. U+00A0).
_SQUAD_WHITESPACE = frozenset(" \t\r\n\u202f")
_IGNORE = -100  # token_classification label on non-first sub-tokens, specials and padding


@dataclasses.dataclass
class Features:
    """Model rows of one split.

    arrays: numpy arrays with a common leading dim N (one row per model input): input_ids,
      attention_mask, segment_ids int32 [N, S]; classification labels int32 [N] (-1 = none),
      regression labels float32 [N] (nan = none), span start_positions / end_positions int32
      [N] (0 = [CLS]: no answer in this window), token_classification labels int32 [N, S] (-100
      off first sub-tokens).
    num_examples: examples read from the split (before windows and skips).
    skipped: reason -> count; dropped examples and kept-but-cut ones ("truncated").
    meta: what evaluate() and write_predictions() need.
    """

    arrays: dict[str, np.ndarray]
    num_examples: int
    skipped: dict[str, int]
    meta: Any


class Task:
    """One fine-tuning task: its label set, metrics, splits, features and scoring.

    name: "glue/cola", "squad/v2.0", "conll2003" or the files task's name. kind: one of KINDS.
    head: the model head ("classification" also serves regression, "span",
    "token_classification"). num_labels: classes (regression 1, span 2). label_names: class
    names in id order (() for regression and span). metrics: the names reported; main_metric:
    the one that picks the best checkpoint (higher is better). train_split, eval_splits
    (labelled, scored), predict_splits (only predicted, e.g. GLUE test).

    features(split, training): rows in a fixed order. training=True may drop examples (SQuAD
    answers not found in their context, counted in `skipped`); training=False keeps every
    example so each gets a prediction.
    evaluate(split, features, outputs): outputs are numpy logits aligned with the rows
    ("classification_logits" [N, C] or [N, 1], "start_logits"/"end_logits" [N, S],
    "token_classification_logits" [N, S, C]). Returns (metrics, predictions); metrics is {} for
    a predict split. predictions: classification/regression {"ids", "predictions" (class ids or
    floats), "labels"}; span {"predictions" {qid: text}, "null_odds" (v2), "nbest",
    "threshold"}; token_classification [(words, gold tags or None, predicted tags)].
    write_predictions(split, predictions, output_dir): the files written (paths).
    """

    name: str
    kind: str
    head: str
    num_labels: int
    label_names: tuple[str, ...]
    metrics: tuple[str, ...]
    main_metric: str
    train_split: str
    eval_splits: tuple[str, ...]
    predict_splits: tuple[str, ...]
    max_seq_length: int

    def __init__(self, settings: _Settings, source: _Source, tokenizer: Tokenizer):
        self.name, self.kind, self.head = settings.name, source.kind, HEADS[source.kind]
        self._s, self._source, self._tok = settings, source, tokenizer
        self.max_seq_length = settings.max_seq_length
        self.train_split = settings.train_split or source.default_train
        self.eval_splits = settings.eval_splits or source.default_eval()
        self.predict_splits = settings.predict_splits or tuple(
            split for split in source.default_predict() if split not in self.eval_splits)
        both = sorted(set(self.eval_splits) & set(self.predict_splits))
        if both:
            raise UserError(f"task split(s) {', '.join(both)} are in both task.eval_splits and "
                            f"task.predict_splits; a split is either scored or only predicted")

    def features(self, split: str, *, training: bool) -> Features:
        raise NotImplementedError

    def evaluate(self, split: str, features: Features, outputs: dict[str, np.ndarray]) -> tuple[dict, Any]:
        raise NotImplementedError

    def write_predictions(self, split: str, predictions: Any, output_dir: str) -> list[str]:
        raise NotImplementedError

    def _examples(self, split: str, *, labelled: bool) -> list:
        """The split's examples; labelled=True demands a label on each (train and eval splits)."""
        if not split:
            raise UserError(f"{self.name}: no split given; set task.train_split (or, for source=files, "
                            f"task.files.train)")
        examples = self._source.read(split)
        if labelled:
            missing = next((e for e in examples if e.label is None), None)
            if missing is not None:
                raise UserError(
                    f"{missing.where}: no label, but split {split!r} is used for training or scoring "
                    f"(list unlabelled splits in task.predict_splits)")
        return examples

    def _scored(self, split: str) -> bool:
        return split not in self.predict_splits

    def _pad(self, rows: list[tuple[list[int], list[int]]]) -> dict[str, np.ndarray]:
        """Right-pad (ids, segment_ids) rows to max_seq_length."""
        n, s = len(rows), self.max_seq_length
        ids = np.full((n, s), self._tok.pad_id, np.int32)
        mask = np.zeros((n, s), np.int32)
        seg = np.zeros((n, s), np.int32)
        for r, (row_ids, row_seg) in enumerate(rows):
            ids[r, : len(row_ids)] = row_ids
            mask[r, : len(row_ids)] = 1
            seg[r, : len(row_seg)] = row_seg
        return {"input_ids": ids, "attention_mask": mask, "segment_ids": seg}


def load_task(task_cfg, tokenizer: Tokenizer) -> Task:
    """The task that `task_cfg` (ConfigDict or dict with the fields of DEFAULTS) describes.

    Defaults when a split field is "":
      GLUE: train; eval validation (mnli: validation_matched,validation_mismatched); predict
        test (mnli: test_matched,test_mismatched). glue/ax has only a test split: it trains and
        is scored on MNLI (train; validation_matched,validation_mismatched) and predicts AX
        test, which is how GLUE's diagnostic set is meant to be run.
      squad/v1.1, squad/v2.0: train; eval validation; no predict split.
      conll2003: train; eval validation,test ("validation" reads TFDS's "dev" split).
      files: train if files.train is set; eval validation (if set) and test if its file has
        labels; predict test if its file has no labels.
    """
    s = _Settings.parse(task_cfg)
    if s.source == "tfds":
        source = _tfds_source(s)
    else:
        source = _files_source(s)
    task_class = {"classification": _SequenceTask, "regression": _SequenceTask, "span": _SpanTask,
                  "token_classification": _TaggingTask}[source.kind]
    return task_class(s, source, tokenizer)


# ---------------------------------------------------------------------------------------------
# Settings


@dataclasses.dataclass(frozen=True)
class _Settings:
    source: str
    name: str
    kind: str
    tfds_data_dir: str
    train_split: str
    eval_splits: tuple[str, ...]
    predict_splits: tuple[str, ...]
    files: dict[str, str]
    text_columns: tuple[str, ...]
    label_column: str
    id_column: str
    labels: tuple[str, ...]
    max_seq_length: int
    doc_stride: int
    max_query_length: int
    n_best_size: int
    max_answer_length: int
    max_examples: int

    @classmethod
    def parse(cls, cfg) -> _Settings:
        def get(key):
            try:
                value = cfg[key]
            except (KeyError, AttributeError, TypeError):
                return DEFAULTS[key]
            return DEFAULTS[key] if value is None else value

        def text(key) -> str:
            value = get(key)
            if not isinstance(value, str):
                raise UserError(f"task.{key} must be a string, got {value!r}")
            return value.strip()

        def integer(key, minimum) -> int:
            value = get(key)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise UserError(f"task.{key} must be an integer >= {minimum}, got {value!r}")
            return int(value)

        def names(key) -> tuple[str, ...]:
            return tuple(p.strip() for p in text(key).split(",") if p.strip())

        source = text("source")
        if source not in ("tfds", "files"):
            raise UserError(f"task.source={source!r}; choose one of: tfds, files")
        kind = text("kind")
        if kind and kind not in KINDS:
            raise UserError(f"task.kind={kind!r} is not a task kind; choose one of: {', '.join(KINDS)}")
        files = get("files")
        try:
            files = {str(k): v for k, v in dict(files).items()}
        except (TypeError, ValueError):
            raise UserError(f"task.files must map split names to paths, got {files!r}") from None
        for split, path in files.items():
            if not isinstance(path, str):
                raise UserError(f"task.files.{split} must be a path string, got {path!r}")
        settings = cls(
            source=source, name=text("name"), kind=kind, tfds_data_dir=text("tfds_data_dir"),
            train_split=text("train_split"), eval_splits=names("eval_splits"),
            predict_splits=names("predict_splits"),
            files={k: v.strip() for k, v in files.items() if v.strip()},
            text_columns=names("text_columns"), label_column=text("label_column"),
            id_column=text("id_column"), labels=names("labels"),
            max_seq_length=integer("max_seq_length", 3), doc_stride=integer("doc_stride", 1),
            max_query_length=integer("max_query_length", 1), n_best_size=integer("n_best_size", 1),
            max_answer_length=integer("max_answer_length", 1), max_examples=integer("max_examples", 0),
        )
        if len(settings.text_columns) > 2:
            raise UserError(f"task.text_columns={','.join(settings.text_columns)!r}: at most two text "
                            f"columns (a sentence or a pair)")
        if len(set(settings.labels)) != len(settings.labels):
            raise UserError(f"task.labels={','.join(settings.labels)!r} lists a label twice")
        return settings


# ---------------------------------------------------------------------------------------------
# Examples and sources


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

    def __init__(self, kind: str, label_names: tuple[str, ...], default_train: str, read_fn,
                 default_eval: tuple[str, ...] = (), default_predict: tuple[str, ...] = (),
                 version_2: bool = False, glue: str = "", files: dict[str, str] | None = None):
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


def _tfds_source(s: _Settings) -> _Source:
    if s.name not in TFDS_NAMES:
        raise UserError(f"task.name={s.name!r} is not a TFDS task; choose one of: {', '.join(TFDS_NAMES)} "
                        f"(or task.source=files for your own data)")
    kind = ("regression" if s.name == "glue/stsb" else "classification" if s.name.startswith("glue/")
            else "span" if s.name.startswith("squad/") else "token_classification")
    if s.kind and s.kind != kind:
        raise UserError(f"task.kind={s.kind!r} does not fit {s.name}, which is a {kind} task; "
                        f"leave task.kind empty")
    data_dir = s.tfds_data_dir or None
    if s.name.startswith("glue/"):
        task = s.name.split("/")[1]
        text_features, _, _ = _GLUE[task]
        text_features = s.text_columns or text_features
        label_names = _tfds_label_names("glue/mnli" if task == "ax" else s.name, s.label_column, data_dir,
                                        kind)
        if s.labels and s.labels != label_names:
            raise UserError(f"task.labels={','.join(s.labels)!r} differs from {s.name}'s labels "
                            f"{','.join(label_names)!r}; leave task.labels empty for TFDS")

        def dataset(split):
            if task != "ax":
                return s.name
            return "glue/ax" if split == "test" else "glue/mnli"  # AX trains and is scored on MNLI

        def read(split):
            name = dataset(split)
            rows = []
            for i, ex in enumerate(_tfds_examples(name, split, data_dir, s.max_examples)):
                idx = int(ex["idx"]) if "idx" in ex else i
                where = f"{name} split {split} idx {idx}"
                texts = tuple(_feature_text(ex, f, where) for f in text_features)
                raw = ex.get(s.label_column)
                if raw is None:
                    raise UserError(f"{where}: no feature {s.label_column!r} (task.label_column); "
                                    f"features: {', '.join(ex)}")
                if kind == "regression":
                    label = float(raw)
                    label = None if label < 0 else label  # TFDS writes -1 on the unlabelled test split
                else:
                    label = None if int(raw) < 0 else _tfds_class(label_names, int(raw), where)
                rows.append(_Row(str(idx), texts, label, where))
            return _nonempty(rows, f"{name} split {split}")

        mnli = task in ("mnli", "ax")
        mnli_eval = ("validation_matched", "validation_mismatched")
        return _Source(kind, label_names, "train", read,
                       default_eval=mnli_eval if mnli else ("validation",),
                       default_predict={"mnli": ("test_matched", "test_mismatched"),
                                        "ax": ("test",)}.get(task, ("test",)),
                       glue=task)
    if kind == "span":
        def read(split):
            out = []
            for i, ex in enumerate(_tfds_examples(s.name, split, data_dir, s.max_examples)):
                where = f"{s.name} split {split} example {i}"
                qid = _feature_text(ex, "id", where)
                answers = ex["answers"]
                texts = [_decode(t, where) for t in answers["text"]]
                starts = [int(a) for a in answers["answer_start"]]
                impossible = bool(ex.get("is_impossible", False))
                pairs = () if impossible else tuple(zip(texts, starts, strict=True))
                out.append(_Question(qid, _feature_text(ex, "question", where),
                                     _feature_text(ex, "context", where), pairs, True, f"{where} (id {qid})"))
            return _check_ids(_nonempty(out, f"{s.name} split {split}"))

        return _Source(kind, (), "train", read, default_eval=("validation",),
                       version_2=s.name == "squad/v2.0")

    label_names = _tfds_label_names(s.name, "ner", data_dir, kind)

    def read(split):
        tfds_split = "dev" if split == "validation" else split  # conll2003's TFDS name
        out = []
        for i, ex in enumerate(_tfds_examples(s.name, tfds_split, data_dir, s.max_examples)):
            where = f"{s.name} split {tfds_split} example {i}"
            words = tuple(_decode(w, where) for w in ex["tokens"])
            tags = tuple(_tfds_class(label_names, int(t), where) for t in ex["ner"])
            if len(tags) != len(words):
                raise UserError(f"{where}: {len(words)} tokens but {len(tags)} ner tags")
            out.append(_Sentence(words, tags, where))
        return _nonempty(out, f"{s.name} split {tfds_split}")

    return _Source(kind, label_names, "train", read, default_eval=("validation", "test"))


def _tfds_label_names(name: str, feature: str, data_dir, kind: str) -> tuple[str, ...]:
    if kind == "regression":
        return ()
    import tensorflow_datasets as tfds

    try:
        features = tfds.builder(name, data_dir=data_dir).info.features
    except Exception as e:  # tfds raises many types for a missing dataset
        raise UserError(f"tfds dataset {name!r}: {e}") from None
    if feature not in features:
        raise UserError(f"{name} has no feature {feature!r}; features: {', '.join(features)}")
    names = features[feature]
    names = getattr(names, "feature", names)  # conll's ner is a Sequence of ClassLabel
    return tuple(names.names)


def _tfds_examples(name: str, split: str, data_dir, max_examples: int) -> Iterator[dict]:
    import tensorflow_datasets as tfds

    try:
        ds = tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False)
    except Exception as e:  # unknown split, missing data, download failure...
        raise UserError(f"tfds {name!r} split {split!r}: {e}") from None
    if max_examples:
        ds = ds.take(max_examples)
    return iter(tfds.as_numpy(ds))


def _tfds_class(names: tuple[str, ...], value: int, where: str) -> str:
    if not 0 <= value < len(names):
        raise UserError(f"{where}: label {value} is outside the label set {', '.join(names)}")
    return names[value]


def _decode(value, where: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{where}: text is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    return str(value)


def _feature_text(ex: dict, feature: str, where: str) -> str:
    if feature not in ex:
        raise UserError(f"{where}: no feature {feature!r}; features: {', '.join(ex)}")
    return _decode(ex[feature], where)


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


# ---------------------------------------------------------------------------------------------
# Files


def _files_source(s: _Settings) -> _Source:
    if not s.kind:
        raise UserError(f"task.kind is required for source=files; choose one of: {', '.join(KINDS)}")
    if not s.files:
        raise UserError("task.files sets no split file; set task.files.train / validation / test")
    for split, path in s.files.items():
        if not os.path.isfile(path):
            raise UserError(f"task.files.{split}={path!r}: no such file")
        ext = os.path.splitext(path)[1].lower()
        if ext not in _FORMATS[s.kind]:
            raise UserError(f"task.files.{split}={path!r}: a {s.kind} task reads "
                            f"{', '.join(_FORMATS[s.kind])} files, not {ext or 'no extension'!r}")

    def path_of(split):
        if split not in s.files:
            raise UserError(f"split {split!r} has no file; task.files sets: {', '.join(s.files)}")
        return s.files[split]

    def cut(rows):
        return rows[: s.max_examples] if s.max_examples else rows

    if s.kind in ("classification", "regression"):
        def read(split):
            return cut(_read_table(path_of(split), s, s.kind == "regression"))
    elif s.kind == "span":
        def read(split):
            return _check_ids(cut(_read_squad(path_of(split))))
    else:
        def read(split):
            return cut(_read_conll(path_of(split)))

    source = _Source(s.kind, (), "train" if "train" in s.files else "", read, files=s.files)
    for split in s.files:  # every file is checked now, not after an epoch of training
        source.read(split)
    if s.kind == "span":
        source.version_2 = s.name == "squad/v2.0" or any(
            q.label and not q.answers for split in s.files for q in source.read(split))
    elif s.kind != "regression":
        source.label_names = s.labels or _labels_from_train(source, s)
        for split in s.files:
            _check_labels(source.read(split), source.label_names, s.kind)
    return source


def _labels_from_train(source: _Source, s: _Settings) -> tuple[str, ...]:
    if "train" not in s.files:
        raise UserError("task.labels is empty and task.files.train is not set: set task.labels to the "
                        "label set in order (comma-separated), as the model was trained with")
    examples = source.read("train")
    if s.kind == "classification":
        labels = {e.label for e in examples if e.label is not None}
        if not labels:
            raise UserError(f"{s.files['train']}: no labels (column {s.label_column!r}); the train split "
                            f"must be labelled")
        if all(re.fullmatch(r"-?\d+", x) for x in labels):
            return tuple(sorted(labels, key=int))
        return tuple(sorted(labels))
    tags = {t for e in examples for t in (e.label or ())}
    if not tags:
        raise UserError(f"{s.files['train']}: no tags (a single column); the train split must be labelled")
    return ("O", *sorted(tags - {"O"}))


def _check_labels(examples: list, names: tuple[str, ...], kind: str) -> None:
    known = set(names)
    for e in examples:
        if e.label is None:
            continue
        if kind == "classification":
            if e.label not in known:
                raise UserError(f"{e.where}: label {e.label!r} is not in the label set: {', '.join(names)}")
            continue
        for w, tag in enumerate(e.label):
            if tag not in known:
                raise UserError(f"{e.where_of(w)}: tag {tag!r} is not in the label set: {', '.join(names)}")


def _lines(path: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, text with its newline) of a UTF-8 file; UserError at a bad line."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{path}:{n}: not valid UTF-8 ({e.reason} at byte {e.start} of the line)"
                                ) from None
            yield n, (line.removeprefix("\ufeff") if n == 1 else line)


def _records(path: str) -> Iterator[tuple[int, dict]]:
    """(line, row as column -> value) of a CSV (header row), TSV (header row, no quoting, like
    GLUE's files) or JSONL (one object a line) file."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".jsonl":
        for n, line in _lines(path):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n}: invalid JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(obj, dict):
                raise UserError(f"{path}:{n}: expected a JSON object, found {type(obj).__name__}")
            yield n, obj
        return
    texts = (line for _, line in _lines(path))
    reader = (csv.reader(texts, delimiter="\t", quoting=csv.QUOTE_NONE) if ext == ".tsv"
              else csv.reader(texts))
    header = None
    try:
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if header is None:
                header = [f.strip() for f in fields]
                continue
            if len(fields) != len(header):
                raise UserError(f"{path}:{reader.line_num}: expected {len(header)} fields (as the header: "
                                f"{', '.join(header)}), found {len(fields)}")
            yield reader.line_num, dict(zip(header, fields, strict=True))
    except csv.Error as e:
        raise UserError(f"{path}:{reader.line_num}: {e}") from None
    if header is None:
        raise UserError(f"{path}: empty file (expected a header row and data rows)")


def _read_table(path: str, s: _Settings, regression: bool) -> list[_Row]:
    rows: list[_Row] = []
    columns = text_cols = id_col = None
    labelled = False
    for n, rec in _records(path):
        if columns is None:  # the header / the first object decides the columns
            columns = list(rec)
            text_cols = s.text_columns or (("text",) if "text" in rec else ("sentence1", "sentence2"))
            id_col = s.id_column or next((c for c in ("id", "idx") if c in rec), "")
            required = [*text_cols, *([id_col] if id_col else [])]
            missing = [c for c in required if c not in rec]
            if missing:
                raise UserError(
                    f"{path}: no column(s) {', '.join(map(repr, missing))}; columns found: "
                    f"{', '.join(columns)} (set task.text_columns / task.id_column)")
            labelled = s.label_column in rec
        where = f"{path}:{n}"
        wanted = (*text_cols, *([id_col] if id_col else []), *([s.label_column] if labelled else []))
        missing = [c for c in wanted if c not in rec]
        if missing:
            raise UserError(f"{where}: no column(s) {', '.join(map(repr, missing))}; this row has: "
                            f"{', '.join(rec)}")
        texts = tuple(_cell_text(rec[c], c, where) for c in text_cols)
        label = None
        if labelled:
            label = _cell_label(rec[s.label_column], s.label_column, where, regression)
        row_id = _cell_text(rec[id_col], id_col, where) if id_col else str(len(rows))
        rows.append(_Row(row_id, texts, label, where))
    return _nonempty(rows, path)


def _cell_text(value, column: str, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UserError(f"{where}: column {column!r} must be a string, found {json.dumps(value)}")
    return str(value)


def _cell_label(value, column: str, where: str, regression: bool) -> str | float:
    if regression:
        try:
            if isinstance(value, bool):
                raise ValueError
            label = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: label {value!r} in column {column!r} is not a number") from None
        if not math.isfinite(label):
            raise UserError(f"{where}: label {value!r} in column {column!r} is not a finite number")
        return label
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, (str, int, float)):
        raise UserError(f"{where}: label in column {column!r} must be a string or number, "
                        f"found {json.dumps(value)}")
    label = str(value).strip()
    if not label:
        raise UserError(f"{where}: empty label in column {column!r}")
    return label


def _read_squad(path: str) -> list[_Question]:
    """Official SQuAD JSON ({"data": [{"paragraphs": [{"context", "qas": [...]}]}]}) or JSONL, one
    {"id", "question", "context", "answers": {"text": [...], "answer_start": [...]}} a line (HF
    datasets' layout). A question is unanswerable when it has no answers (or is_impossible);
    a file where no question has "answers" or "is_impossible" is unlabelled."""
    out = []
    if path.lower().endswith(".jsonl"):
        for n, obj in _records(path):
            where = f"{path}:{n}"
            fields = [_json_str(obj, k, where) for k in ("id", "question", "context")]
            answers = obj.get("answers")
            labelled = answers is not None or "is_impossible" in obj
            pairs = ()
            if answers is not None:
                if not (isinstance(answers, dict) and isinstance(answers.get("text"), list)
                        and isinstance(answers.get("answer_start"), list)
                        and len(answers["text"]) == len(answers["answer_start"])):
                    raise UserError(f"{where}: answers must be {{\"text\": [...], \"answer_start\": [...]}} "
                                    f"with lists of equal length")
                pairs = tuple(_answer(t, a, where) for t, a in zip(answers["text"], answers["answer_start"],
                                                                    strict=True))
            if obj.get("is_impossible"):
                pairs = ()
            out.append(_Question(*fields, pairs, True if labelled else None, where))
        return _nonempty(out, path)
    text = "\n".join(line.rstrip("\r\n") for _, line in _lines(path))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise UserError(f'{path}: expected SQuAD JSON: {{"data": [{{"paragraphs": [{{"context": ..., '
                        f'"qas": [...]}}]}}]}}')
    for a, article in enumerate(data["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise UserError(f"{path}: data[{a}] must be an object with a list 'paragraphs'")
        for p, para in enumerate(paragraphs):
            where_p = f"{path}: data[{a}].paragraphs[{p}]"
            if not isinstance(para, dict) or not isinstance(para.get("qas"), list):
                raise UserError(f"{where_p} must be an object with 'context' and a list 'qas'")
            context = _json_str(para, "context", where_p)
            for k, qa in enumerate(para["qas"]):
                where = f"{where_p}.qas[{k}]"
                if not isinstance(qa, dict):
                    raise UserError(f"{where} must be an object")
                qid, question = _json_str(qa, "id", where), _json_str(qa, "question", where)
                answers = qa.get("answers")
                labelled = answers is not None or "is_impossible" in qa
                if answers is not None and not isinstance(answers, list):
                    raise UserError(f"{where}: answers must be a list of {{\"text\", \"answer_start\"}}")
                pairs = ()
                if answers and not qa.get("is_impossible"):
                    if not all(isinstance(ans, dict) for ans in answers):
                        raise UserError(f"{where}: answers must be a list of {{\"text\", \"answer_start\"}}")
                    pairs = tuple(_answer(ans.get("text"), ans.get("answer_start"), where) for ans in answers)
                out.append(_Question(qid, question, context, pairs, True if labelled else None,
                                     f"{where} (id {qid})"))
    return _nonempty(out, path)


def _json_str(obj: dict, key: str, where: str) -> str:
    value = obj.get(key)
    if key == "id" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise UserError(f"{where}: {key!r} must be a string, found {json.dumps(value)}; "
                        f"keys: {', '.join(obj)}")
    return value


def _answer(text, start, where: str) -> tuple[str, int]:
    if not isinstance(text, str) or isinstance(start, bool) or not isinstance(start, int):
        raise UserError(f"{where}: an answer needs a string text and an integer answer_start, found "
                        f"{json.dumps(text)} at {json.dumps(start)}")
    return text, start


def _read_conll(path: str) -> list[_Sentence]:
    """CoNLL: whitespace-separated columns (tabs for .tsv), token first and IOB tag last, a blank
    line between sentences, -DOCSTART- lines skipped. One column: unlabelled tokens."""
    split = (lambda line: line.split("\t")) if path.lower().endswith(".tsv") else str.split
    sentences, words, tags, lines = [], [], [], []
    columns = None

    def close():
        if words:
            sentences.append(_Sentence(tuple(words), tuple(tags) if columns > 1 else None, lines[0],
                                       tuple(lines)))
            words.clear()
            tags.clear()
            lines.clear()

    for n, line in _lines(path):
        line = line.rstrip("\r\n")
        if not line.strip():
            close()
            continue
        if line.startswith("-DOCSTART-"):
            close()
            continue
        fields = split(line)
        if columns is None:
            columns = len(fields)
        if len(fields) != columns:
            raise UserError(f"{path}:{n}: expected {columns} columns, found {len(fields)}")
        words.append(fields[0])
        tags.append(fields[-1])
        lines.append(f"{path}:{n}")
    close()
    return _nonempty(sentences, path)


# ---------------------------------------------------------------------------------------------
# Classification and regression


class _SequenceTask(Task):
    """Sentence or pair -> one label (classification) or number (regression)."""

    def __init__(self, settings: _Settings, source: _Source, tokenizer: Tokenizer):
        super().__init__(settings, source, tokenizer)
        regression = source.kind == "regression"
        self.label_names = () if regression else source.label_names
        self.num_labels = 1 if regression else len(self.label_names)
        if source.glue:
            _, self.metrics, self.main_metric = _GLUE[source.glue]
        elif regression:
            self.metrics, self.main_metric = ("pearson", "spearman"), "pearson"
        else:
            self.metrics, self.main_metric = ("accuracy", "macro_f1"), "accuracy"

    def features(self, split: str, *, training: bool) -> Features:
        scored = self._scored(split)
        rows = self._examples(split, labelled=scored)
        tok = self._tok
        n_texts = {len(r.texts) for r in rows}
        encoded = [tok.encode_batch_ids([r.texts[k] for r in rows]) for k in range(max(n_texts))]
        single_budget = self.max_seq_length - len(tok.build_pair([])[0])
        pair_budget = self.max_seq_length - len(tok.build_pair([], [])[0])
        if pair_budget < 2 and max(n_texts) == 2:
            raise UserError(f"task.max_seq_length={self.max_seq_length} leaves no room for a sentence pair")
        built, truncated = [], 0
        for i in range(len(rows)):
            a = encoded[0][i]
            if len(encoded) == 1:
                truncated += len(a) > single_budget
                built.append(tok.build_pair(a[:single_budget]))
                continue
            b = encoded[1][i]
            la, lb = _truncate_pair(len(a), len(b), pair_budget)
            truncated += (la, lb) != (len(a), len(b))
            built.append(tok.build_pair(a[:la], b[:lb]))
        arrays = self._pad(built)
        if self.kind == "regression":
            labels = [r.label if scored else None for r in rows]
            arrays["labels"] = np.array([np.nan if x is None else x for x in labels], np.float32)
        else:
            index = {name: i for i, name in enumerate(self.label_names)}
            arrays["labels"] = np.array([index[r.label] if scored else -1 for r in rows], np.int32)
        return Features(arrays, len(rows), {"truncated": truncated},
                        {"ids": [r.id for r in rows], "labels": [r.label for r in rows] if scored else None})

    def evaluate(self, split, features, outputs):
        from bert_jax.evaluation import metrics

        logits = np.asarray(outputs["classification_logits"], np.float32)  # [N, C]
        if self.kind == "regression":
            preds = logits[:, 0].astype(np.float64)
        else:
            preds = logits.argmax(-1)
        predictions = {"ids": features.meta["ids"], "predictions": preds.tolist(),
                       "labels": features.meta["labels"]}
        if not self._scored(split):
            return {}, predictions
        labels = features.arrays["labels"]
        return metrics.score(self.metrics, labels, preds), predictions

    def write_predictions(self, split, predictions, output_dir):
        os.makedirs(output_dir, exist_ok=True)
        glue = self._source.glue
        preds, labels = predictions["predictions"], predictions["labels"]
        if self.kind == "regression":
            fmt = (lambda v: f"{v:.3f}") if glue else (lambda v: f"{v:.6g}")
            pred_text = [fmt(v) for v in preds]
            label_text = None if labels is None else [fmt(v) for v in labels]
        elif glue and glue not in _GLUE_NAMED:  # the leaderboard wants label ids for these tasks
            pred_text = [str(v) for v in preds]
            index = {name: i for i, name in enumerate(self.label_names)}
            label_text = None if labels is None else [str(index[x]) for x in labels]
        else:
            pred_text = [self.label_names[v] for v in preds]
            label_text = labels
        leaderboard = _GLUE_FILES.get(glue, {}).get(split) if not self._scored(split) else None
        if leaderboard:
            if glue == "stsb":  # the leaderboard's scale
                pred_text = [f"{min(max(v, 0.0), 5.0):.3f}" for v in preds]
            lines = ["index\tprediction"]
            order = sorted(range(len(preds)), key=lambda i: int(predictions["ids"][i]))
            lines += [f"{predictions['ids'][i]}\t{pred_text[i]}" for i in order]
            path = os.path.join(output_dir, leaderboard)
        else:
            head = ["index" if glue else "id", "prediction"] + ([] if label_text is None else ["label"])
            lines = ["\t".join(head)]
            for i, row_id in enumerate(predictions["ids"]):
                lines.append("\t".join([_tsv_cell(row_id), _tsv_cell(pred_text[i])]
                                       + ([] if label_text is None else [_tsv_cell(label_text[i])])))
            path = os.path.join(output_dir, f"{split}_predictions.tsv")
        _write(path, "\n".join(lines) + "\n")
        return [path]


def _truncate_pair(la: int, lb: int, budget: int) -> tuple[int, int]:
    """Lengths after BERT's _truncate_seq_pair, which drops one token at a time from the longer
    side (b on a tie): the longer side shrinks to the shorter, then b and a take turns."""
    excess = la + lb - budget
    if excess <= 0:
        return la, lb
    if abs(la - lb) >= excess:
        return (la - excess, lb) if la > lb else (la, lb - excess)
    excess -= abs(la - lb)
    m = min(la, lb)
    return m - excess // 2, m - (excess + 1) // 2


def _tsv_cell(value) -> str:
    return str(value).replace("\t", " ").replace("\n", " ").replace("\r", " ")


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


# ---------------------------------------------------------------------------------------------
# Span extraction (SQuAD)


@dataclasses.dataclass
class _Context:
    """A context split into whitespace words and sub-tokens (run_squad.py's read_squad_examples
    and convert_examples_to_features)."""

    text: str
    words: list[str]
    char_to_word: list[int]  # -1 before the first word; whitespace maps to the word before it
    word_starts: list[int]  # character offset of each word
    word_ids: list[list[int]]  # sub-tokens of each word
    tok_to_word: np.ndarray  # int32 [tokens]
    word_to_tok: list[int]  # first sub-token of each word (the next word's for a word without any)
    ids: list[int]  # all sub-tokens


class _SpanTask(Task):
    """SQuAD v1.1 / v2.0, as BERT's run_squad.py.

    Training targets: the first answer's characters -> whitespace words (its text must match
    the context there, whitespace-normalized, or the question is skipped) -> sub-tokens,
    tightened to the answer's own sub-tokens (_improve_answer_span); 0/0 ([CLS]) in windows that
    do not hold the whole answer and for unanswerable questions.

    Prediction text is cut from the context, from the first sub-token's first character to the
    last one's last: the sub-tokens' surface strings ("##" or "▁" removed, byte-level bytes) are
    laid over their word, so "1895" can come out of "(1895-1943),". Where they cannot be placed
    (an [UNK] piece, or a normalization that changed the word's length, e.g. NFKD) the cut falls
    back to the word's edge. This plays the part of run_squad.py's get_final_text for every
    tokenizer, and keeps the context's own whitespace.

    v2: a question's null score is the lowest start_logits[0] + end_logits[0] over its windows;
    its null odds are null score - best span score. "exact"/"f1" are at odds threshold 0 (BERT's
    and HF's default), best_* over all thresholds, and the predictions returned (and written)
    apply best_f1_thresh. Predict splits use threshold 0.
    """

    def __init__(self, settings: _Settings, source: _Source, tokenizer: Tokenizer):
        super().__init__(settings, source, tokenizer)
        self.label_names, self.num_labels = (), 2
        self.version_2 = source.version_2
        if self.version_2:
            self.metrics = ("exact", "f1", "best_exact", "best_f1", "best_f1_thresh", "HasAns_f1", "NoAns_f1")
            self.main_metric = "best_f1"
        else:
            self.metrics, self.main_metric = ("exact", "f1"), "f1"
        self._specials_pair = len(tokenizer.build_pair([], [])[0])

    def _contexts(self, questions: list[_Question]) -> dict[str, _Context]:
        texts = list(dict.fromkeys(q.context for q in questions))
        split = [_squad_words(t) for t in texts]
        word_ids = _word_ids(self._tok, [words for words, _, _ in split])
        out = {}
        for text, (words, char_to_word, starts), ids_per_word in zip(texts, split, word_ids, strict=True):
            tok_to_word, word_to_tok, ids = [], [], []
            for w, pieces in enumerate(ids_per_word):
                word_to_tok.append(len(ids))
                tok_to_word += [w] * len(pieces)
                ids += pieces
            out[text] = _Context(text, words, char_to_word, starts, ids_per_word,
                                 np.array(tok_to_word, np.int32), word_to_tok, ids)
        return out

    def _answer_tokens(self, q: _Question, ctx: _Context, answer_ids: tuple[list[int], list[int]]
                       ) -> tuple[int, int] | None:
        """Token span of the first answer, or None when it cannot be located (run_squad.py).
        answer_ids: the answer's sub-tokens at a context's start and inside it (byte-level BPE:
        without and with a leading space; the same otherwise)."""
        text, start = q.answers[0]
        end = start + len(text) - 1
        if not text or start < 0 or end >= len(ctx.text):
            return None
        start_word, end_word = ctx.char_to_word[start], ctx.char_to_word[end]
        if start_word < 0:
            return None
        actual = " ".join(ctx.words[start_word:end_word + 1])
        if actual.find(" ".join(text.split())) == -1:
            return None
        tok_start = ctx.word_to_tok[start_word]
        tok_end = (ctx.word_to_tok[end_word + 1] - 1) if end_word + 1 < len(ctx.words) else len(ctx.ids) - 1
        if tok_end < tok_start:
            return None
        # run_squad.py's _improve_answer_span: the tightest sub-token span equal to the answer's.
        answer_ids = answer_ids[1 if start_word > 0 else 0]
        n = len(answer_ids)
        for new_start in range(tok_start, tok_end + 1):
            for new_end in range(tok_end, new_start - 1, -1):
                if new_end - new_start + 1 == n and ctx.ids[new_start:new_end + 1] == answer_ids:
                    return new_start, new_end
        return tok_start, tok_end

    def features(self, split: str, *, training: bool) -> Features:
        scored = self._scored(split)
        questions = self._examples(split, labelled=scored)
        tok, s = self._tok, self._s
        contexts = self._contexts(questions)
        query_ids = tok.encode_batch_ids([q.question for q in questions])
        answer_texts = [q.answers[0][0].strip() if q.label and q.answers else "" for q in questions]
        plain = tok.encode_batch_ids(answer_texts)
        inside = tok.encode_batch_ids([" " + t for t in answer_texts]) if tok.kind == "byte_bpe" else plain
        rows, starts, ends, row_question, windows = [], [], [], [], []
        skipped = collections.Counter()
        for qi, q in enumerate(questions):
            ctx = contexts[q.context]
            target = None  # None: no answer (v2) or unlabelled -> 0/0
            if q.label and q.answers:
                target = self._answer_tokens(q, ctx, (plain[qi], inside[qi]))
                if target is None:
                    if training:
                        skipped["answer not found in context"] += 1
                        continue
                    skipped["answer not found in context (kept for evaluation)"] += 1
            query = query_ids[qi][: s.max_query_length]
            max_doc = self.max_seq_length - len(query) - self._specials_pair
            if max_doc < 1:
                raise UserError(f"task.max_seq_length={self.max_seq_length} leaves no room for the context "
                                f"after a {len(query)}-token question; raise it or lower "
                                f"task.max_query_length")
            offset = len(tok.build_pair(query, [])[0]) - 1  # where the context starts in a row
            for doc_start, length in _doc_spans(len(ctx.ids), max_doc, s.doc_stride):
                rows.append(tok.build_pair(query, ctx.ids[doc_start:doc_start + length]))
                row_question.append(qi)
                windows.append((doc_start, length, offset))
                if target is not None and doc_start <= target[0] and target[1] < doc_start + length:
                    starts.append(target[0] - doc_start + offset)
                    ends.append(target[1] - doc_start + offset)
                else:
                    starts.append(0)
                    ends.append(0)
        if not rows:
            raise UserError(f"{self.name} split {split!r}: none of its {len(questions)} questions has an "
                            f"answer found in its context")
        arrays = self._pad(rows)
        arrays["start_positions"] = np.array(starts, np.int32)
        arrays["end_positions"] = np.array(ends, np.int32)
        meta = _SpanMeta(questions, contexts, np.array(row_question, np.int32), np.array(windows, np.int32),
                         self.max_seq_length)
        return Features(arrays, len(questions), dict(skipped), meta)

    def evaluate(self, split, features, outputs):
        from bert_jax.evaluation import squad

        start_logits = np.asarray(outputs["start_logits"], np.float32)  # [N, S]
        end_logits = np.asarray(outputs["end_logits"], np.float32)
        meta, s = features.meta, self._s
        texts, null_odds, nbest_all = {}, {}, {}
        for qi, rows in meta.rows_by_question().items():
            q = meta.questions[qi]
            ctx = meta.contexts[q.context]
            candidates, null_score, null_logits = [], math.inf, (0.0, 0.0)
            for r, (row_tok, max_context) in zip(rows, meta.columns(rows, len(ctx.ids)), strict=True):
                st, en = start_logits[r], end_logits[r]
                if float(st[0]) + float(en[0]) < null_score:  # the [CLS] score of the least-null window
                    null_score, null_logits = float(st[0]) + float(en[0]), (float(st[0]), float(en[0]))
                for i, j, score in squad.best_spans(st, en, row_tok >= 0, s.n_best_size, s.max_answer_length,
                                                    start_allowed=max_context):
                    candidates.append((score, float(st[i]), float(en[j]), int(row_tok[i]), int(row_tok[j])))
            candidates.sort(key=lambda c: -c[0])
            nbest, seen = [], set()
            for score, s_logit, e_logit, t0, t1 in candidates:
                text = _span_text(self._tok, ctx, t0, t1)
                if text in seen:
                    continue
                seen.add(text)
                nbest.append({"text": text, "score": score, "start_logit": s_logit, "end_logit": e_logit})
                if len(nbest) >= s.n_best_size:
                    break
            best = next((e for e in nbest if e["text"]), None)
            if self.version_2:
                if "" not in seen:
                    nbest.append({"text": "", "score": null_score, "start_logit": null_logits[0],
                                  "end_logit": null_logits[1]})
                    nbest.sort(key=lambda e: -e["score"])
                # Null odds: how far the no-answer score beats the best span (run_squad.py's score_diff).
                null_odds[q.id] = null_score - best["score"] if best else 1e6
            texts[q.id] = best["text"] if best else ""
            probs = _softmax([e["score"] for e in nbest])
            nbest_all[q.id] = [{"text": e["text"], "probability": p, "start_logit": e["start_logit"],
                                "end_logit": e["end_logit"]} for e, p in zip(nbest, probs, strict=True)]
        result = {"predictions": texts, "null_odds": null_odds if self.version_2 else None,
                  "nbest": nbest_all, "threshold": None}
        if not self._scored(split):
            if self.version_2:  # no labels to tune the threshold on: BERT's default, 0
                result["predictions"] = squad.apply_threshold(texts, null_odds, 0.0)
                result["threshold"] = 0.0
            return {}, result
        gold = {q.id: [a for a, _ in q.answers] for q in meta.questions}
        if self.version_2:
            # "exact"/"f1" at threshold 0 (BERT's and HF's default), best_* over all thresholds.
            metrics = squad.evaluate(gold, texts, null_odds, na_prob_thresh=0.0)
            result["threshold"] = metrics["best_f1_thresh"]
            result["predictions"] = squad.apply_threshold(texts, null_odds, result["threshold"])
        else:
            metrics = squad.evaluate(gold, texts)
        return {k: float(v) for k, v in metrics.items()}, result

    def write_predictions(self, split, predictions, output_dir):
        os.makedirs(output_dir, exist_ok=True)
        paths = []
        for key, name in (("predictions", "predictions"), ("nbest", "nbest"), ("null_odds", "null_odds")):
            if predictions[key] is None:
                continue
            path = os.path.join(output_dir, f"{split}_{name}.json")
            _write(path, json.dumps(predictions[key], indent=2, ensure_ascii=False) + "\n")
            paths.append(path)
        return paths


@dataclasses.dataclass
class _SpanMeta:
    """What SQuAD scoring needs of a split's rows: the questions, their contexts, and for each
    row its question and window (kept as coordinates: per-token tables would cost 2 x [N, S])."""

    questions: list[_Question]
    contexts: dict[str, _Context]
    row_question: np.ndarray  # int32 [N]
    windows: np.ndarray  # int32 [N, 3]: first context sub-token, window length, its column in the row
    seq_len: int

    def rows_by_question(self) -> dict[int, list[int]]:
        """Question index -> its rows (questions dropped in training have none)."""
        out = collections.defaultdict(list)
        for r, qi in enumerate(self.row_question.tolist()):
            out[qi].append(r)
        return out

    def columns(self, rows: list[int], n_tokens: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each of one question's rows: the context sub-token at each column (int32 [S], -1
        off the context) and whether the window is that token's max-context one (bool [S])."""
        spans = [(int(self.windows[r, 0]), int(self.windows[r, 1])) for r in rows]
        best = _max_context_span(spans, n_tokens)
        out = []
        for k, r in enumerate(rows):
            doc_start, length, offset = (int(v) for v in self.windows[r])
            tokens = np.full(self.seq_len, -1, np.int32)
            tokens[offset:offset + length] = np.arange(doc_start, doc_start + length)
            max_context = np.zeros(self.seq_len, bool)
            max_context[offset:offset + length] = best[doc_start:doc_start + length] == k
            out.append((tokens, max_context))
        return out


def _squad_words(text: str) -> tuple[list[str], list[int], list[int]]:
    """run_squad.py's whitespace words, char_to_word_offset, and each word's first character."""
    words, char_to_word, starts = [], [], []
    prev_space = True
    for i, c in enumerate(text):
        if c in _SQUAD_WHITESPACE:
            prev_space = True
        else:
            if prev_space:
                words.append(c)
                starts.append(i)
            else:
                words[-1] += c
            prev_space = False
        char_to_word.append(len(words) - 1)
    return words, char_to_word, starts


def _doc_spans(n_tokens: int, max_doc: int, stride: int) -> list[tuple[int, int]]:
    """(start, length) windows over the context's sub-tokens, as run_squad.py slides them."""
    spans, start = [], 0
    while start < n_tokens:
        length = min(n_tokens - start, max_doc)
        spans.append((start, length))
        if start + length == n_tokens:
            break
        start += min(length, stride)
    return spans or [(0, 0)]


def _max_context_span(spans: list[tuple[int, int]], n_tokens: int) -> np.ndarray:
    """For each sub-token, the window where it has the most context (run_squad.py's
    _check_is_max_context: min(left, right) + 0.01 * window length; the first window wins ties)."""
    pos = np.arange(n_tokens)
    scores = np.full((len(spans), n_tokens), -np.inf)
    for k, (start, length) in enumerate(spans):
        inside = (pos >= start) & (pos < start + length)
        score = np.minimum(pos - start, start + length - 1 - pos) + 0.01 * length
        scores[k] = np.where(inside, score, -np.inf)
    return scores.argmax(0) if n_tokens else np.zeros(0, np.int64)


def _span_text(tok: Tokenizer, ctx: _Context, t0: int, t1: int) -> str:
    """The context's text from sub-token t0's first character to t1's last (see _SpanTask)."""
    w0, w1 = int(ctx.tok_to_word[t0]), int(ctx.tok_to_word[t1])
    span0 = _piece_spans(tok, ctx.words[w0], ctx.word_ids[w0], w0 > 0)[t0 - ctx.word_to_tok[w0]]
    span1 = _piece_spans(tok, ctx.words[w1], ctx.word_ids[w1], w1 > 0)[t1 - ctx.word_to_tok[w1]]
    start = ctx.word_starts[w0] + (span0[0] if span0 else 0)
    end = ctx.word_starts[w1] + (span1[1] if span1 else len(ctx.words[w1]))
    return ctx.text[start:end]


def _piece_spans(tok: Tokenizer, word: str, ids: list[int], spaced: bool) -> list[tuple[int, int] | None]:
    """(start, end) character offsets of each sub-token within `word`; None for a sub-token that
    cannot be placed: one with no surface string ([UNK], a byte piece) and those beyond it from
    both ends, or every one when the surfaces do not add up to the word (the tokenizer's
    normalization changed its length)."""
    lengths: list[int | None] = []
    if tok.kind == "byte_bpe":
        for k, i in enumerate(ids):
            piece = bytes(BYTE_DECODER.get(c, 0) for c in tok.id_to_token(i))
            lengths.append(len(piece) - (k == 0 and spaced and piece.startswith(b" ")))
        units = [len(c.encode("utf-8")) for c in word]  # bytes of each character
    else:
        for i in ids:
            token = tok.id_to_token(i)
            if i in tok.special_ids or re.fullmatch(r"<0x[0-9A-F]{2}>", token):
                lengths.append(None)  # [UNK] / <unk> / SentencePiece byte fallback
            else:
                lengths.append(len(token.removeprefix("##" if tok.kind == "wordpiece" else "\u2581")))
        units = [1] * len(word)
    total, known = sum(units), sum(n for n in lengths if n is not None)
    if (known != total) if None not in lengths else (known >= total):
        return [None] * len(ids)
    # Unit offsets from the left up to the first unknown piece, from the right after the last.
    bounds: list[tuple[int, int] | None] = [None] * len(ids)
    pos = 0
    for k, n in enumerate(lengths):
        if n is None:
            break
        bounds[k], pos = (pos, pos + n), pos + n
    pos = total
    for k in range(len(ids) - 1, -1, -1):
        if lengths[k] is None:
            break
        bounds[k], pos = (pos - lengths[k], pos), pos - lengths[k]
    # Unit offsets -> character offsets (a boundary inside a character rounds outwards).
    char_at = np.cumsum([0, *units])  # unit offset where each character starts
    return [None if b is None else (int(np.searchsorted(char_at, b[0], side="right")) - 1,
                                    int(np.searchsorted(char_at, b[1], side="left"))) for b in bounds]


def _softmax(scores: list[float]) -> list[float]:
    if not scores:
        return []
    x = np.exp(np.array(scores, np.float64) - max(scores))
    return (x / x.sum()).tolist()


def _word_ids(tok: Tokenizer, sentences: Sequence[Sequence[str]]) -> list[list[list[int]]]:
    """Sub-token ids of every word of every sentence, each word tokenized on its own (one batch of
    distinct strings). Byte-level BPE: words after a sentence's first carry their leading space."""
    spaced = tok.kind == "byte_bpe"
    keyed = [[(" " + w) if spaced and k else w for k, w in enumerate(words)] for words in sentences]
    distinct = list(dict.fromkeys(w for words in keyed for w in words))
    table = dict(zip(distinct, tok.encode_batch_ids(distinct), strict=True))
    return [[table[w] for w in words] for words in keyed]


# ---------------------------------------------------------------------------------------------
# Token classification (NER)


class _TaggingTask(Task):
    """CoNLL-style tagging: one row per sentence, the word's tag on its first sub-token.

    Words past max_seq_length are cut (counted in skipped["truncated words"]); for scoring they
    are predicted "O", so gold sequences keep their full length and the cut costs recall.
    Words with no sub-tokens at all (e.g. only control characters) are also predicted "O"
    (skipped["words without tokens"]).
    """

    def __init__(self, settings: _Settings, source: _Source, tokenizer: Tokenizer):
        super().__init__(settings, source, tokenizer)
        self.label_names = source.label_names
        self.num_labels = len(self.label_names)
        self.metrics, self.main_metric = ("precision", "recall", "f1", "accuracy"), "f1"

    def features(self, split: str, *, training: bool) -> Features:
        scored = self._scored(split)
        sentences = self._examples(split, labelled=scored)
        index = {name: i for i, name in enumerate(self.label_names)}
        budget = self.max_seq_length - len(self._tok.build_pair([])[0])
        rows, first = [], []
        labels = np.full((len(sentences), self.max_seq_length), _IGNORE, np.int32)
        skipped = collections.Counter()
        word_ids = _word_ids(self._tok, [s.words for s in sentences])
        for r, (sent, pieces_of) in enumerate(zip(sentences, word_ids, strict=True)):
            content, positions = [], np.full(len(sent.words), -1, np.int32)
            for w, pieces in enumerate(pieces_of):
                if len(content) + len(pieces) > budget:
                    skipped["truncated words"] += len(sent.words) - w
                    break
                if not pieces:
                    skipped["words without tokens"] += 1
                    continue
                positions[w] = 1 + len(content)  # after [CLS] / <s>
                if scored:
                    labels[r, positions[w]] = index[sent.label[w]]
                content += pieces
            rows.append(self._tok.build_pair(content))
            first.append(positions)
        arrays = self._pad(rows)
        arrays["labels"] = labels
        return Features(arrays, len(sentences), dict(skipped), {"sentences": sentences, "first": first})

    def evaluate(self, split, features, outputs):
        from bert_jax.evaluation import ner

        pred_ids = np.asarray(outputs["token_classification_logits"]).argmax(-1)  # [N, S]
        sentences = features.meta["sentences"]
        preds = [[self.label_names[pred_ids[r, p]] if p >= 0 else "O" for p in positions]
                 for r, positions in enumerate(features.meta["first"])]
        scored = self._scored(split)
        predictions = [(s.words, s.label if scored else None, p)
                       for s, p in zip(sentences, preds, strict=True)]
        if not scored:
            return {}, predictions
        scores = ner.entity_scores([list(s.label) for s in sentences], preds)
        return {k: float(v) for k, v in scores.items()}, predictions

    def write_predictions(self, split, predictions, output_dir):
        """`<split>_predictions.conll`: "word gold pred" per line ("word pred" for an unlabelled
        split), a blank line between sentences."""
        os.makedirs(output_dir, exist_ok=True)
        blocks = []
        for words, gold, pred in predictions:
            cols = [words, *([gold] if gold is not None else []), pred]
            blocks.append("\n".join(" ".join(parts) for parts in zip(*cols, strict=True)))
        path = os.path.join(output_dir, f"{split}_predictions.conll")
        _write(path, "\n\n".join(blocks) + "\n")
        return [path]
