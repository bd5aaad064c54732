"""The task config (`config.task`): its fields, their defaults, and the checks that turn it into
`_Settings` (`_Settings.parse`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from bert_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Kind:
    """What a task kind is, beyond its rows (data/finetuning/__init__.py names the task class
    that builds them) and its loss (bert_jax/objectives/tasks.py)."""

    head: str  # the model head that scores it (models/heads.py)
    packs: bool  # several short examples share a row (data/finetuning/packing.py)


# Every task kind: a new kind is a row here, its task class in __init__.py and its loss.
KINDS = {
    "classification": Kind("classification", packs=True),
    "regression": Kind("classification", packs=True),  # the classification head's single output
    "span": Kind("span", packs=False),  # SQuAD windows are long: bucketed, not packed
    "token_classification": Kind("token_classification", packs=True),
}

# The task config's fields and their defaults, defined here only: config_files.task_config builds
# the fine-tuning configs' task section from them (with the task's source, name and kind), and a
# plain dict given to load_task may leave any of them out.
DEFAULTS = {
    # tfds (GLUE, SQuAD, CoNLL-2003 through tensorflow-datasets) or files (your own).
    "source": "tfds",
    # tfds: glue/<cola|sst2|mrpc|qqp|stsb|mnli|qnli|rte|wnli|ax>, squad/v1.1, squad/v2.0,
    # conll2003. files: a name of your choosing (shown in results).
    "name": "glue/cola",
    # classification, regression, span (extractive QA) or token_classification;
    # implied by the TFDS name, required for files.
    "kind": "",
    # TFDS data_dir ("" = TFDS's default, ~/tensorflow_datasets).
    "tfds_data_dir": "",
    # Splits: "" = the task's defaults (train; GLUE validation / test, MNLI matched and
    # mismatched; SQuAD validation; CoNLL validation,test). Comma-separated lists.
    "train_split": "",
    "eval_splits": "",
    # Unlabelled splits that only get predictions (GLUE test -> leaderboard TSVs).
    "predict_splits": "",
    # source=files: one path per split ("" = none). .csv/.tsv/.jsonl (classification,
    # regression), SQuAD .json/.jsonl (span), CoNLL .conll/.txt (token_classification).
    "files": {"train": "", "validation": "", "test": ""},
    # Input columns: "" = "text" if present, else "sentence1,sentence2".
    "text_columns": "",
    "label_column": "label",
    # Row id for prediction files: "" = "id" / "idx" if present, else the row number.
    "id_column": "",
    # The label set in order, comma-separated; "" = from the data (TFDS label names; files:
    # sorted labels of the train split; CoNLL tags with "O" first).
    "labels": "",
    # Tokens per row, [CLS]/[SEP] included.
    "max_seq_length": 128,
    # SQuAD: window stride over long contexts, question tokens kept, spans searched.
    "doc_stride": 128,
    "max_query_length": 64,
    "n_best_size": 20,
    "max_answer_length": 30,
    # Keep only the first N examples of each split (0 = all): smoke runs.
    "max_examples": 0,
}


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
            source=source,
            name=text("name"),
            kind=kind,
            tfds_data_dir=text("tfds_data_dir"),
            train_split=text("train_split"),
            eval_splits=names("eval_splits"),
            predict_splits=names("predict_splits"),
            files={k: v.strip() for k, v in files.items() if v.strip()},
            text_columns=names("text_columns"),
            label_column=text("label_column"),
            id_column=text("id_column"),
            labels=names("labels"),
            max_seq_length=integer("max_seq_length", 3),
            doc_stride=integer("doc_stride", 1),
            max_query_length=integer("max_query_length", 1),
            n_best_size=integer("n_best_size", 1),
            max_answer_length=integer("max_answer_length", 1),
            max_examples=integer("max_examples", 0),
        )
        if len(settings.text_columns) > 2:
            raise UserError(
                f"task.text_columns={','.join(settings.text_columns)!r}: at most two text "
                f"columns (a sentence or a pair)"
            )
        if len(set(settings.labels)) != len(settings.labels):
            raise UserError(f"task.labels={','.join(settings.labels)!r} lists a label twice")
        return settings
