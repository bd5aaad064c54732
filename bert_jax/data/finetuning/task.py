"""What every fine-tuning task shares: `Features` (a split's model rows), the `Task` interface
with its row padding, per-word tokenization and the prediction-file writer."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from bert_jax import storage
from bert_jax.data.finetuning.examples import _Source
from bert_jax.data.finetuning.settings import KINDS, _Settings
from bert_jax.data.tokenizers import Tokenizer
from bert_jax.errors import UserError

HEADS = {kind: k.head for kind, k in KINDS.items()}  # task kind -> model head


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
            split for split in source.default_predict() if split not in self.eval_splits
        )
        both = sorted(set(self.eval_splits) & set(self.predict_splits))
        if both:
            raise UserError(
                f"task split(s) {', '.join(both)} are in both task.eval_splits and "
                f"task.predict_splits; a split is either scored or only predicted"
            )

    def features(self, split: str, *, training: bool) -> Features:
        raise NotImplementedError

    def evaluate(self, split: str, features: Features, outputs: dict[str, np.ndarray]) -> tuple[dict, Any]:
        raise NotImplementedError

    def write_predictions(self, split: str, predictions: Any, output_dir: str) -> list[str]:
        raise NotImplementedError

    def _examples(self, split: str, *, labelled: bool) -> list:
        """The split's examples; labelled=True demands a label on each (train and eval splits)."""
        if not split:
            raise UserError(
                f"{self.name}: no split given; set task.train_split (or, for source=files, task.files.train)"
            )
        examples = self._source.read(split)
        if labelled:
            missing = next((e for e in examples if e.label is None), None)
            if missing is not None:
                raise UserError(
                    f"{missing.where}: no label, but split {split!r} is used for training or scoring "
                    f"(list unlabelled splits in task.predict_splits)"
                )
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


def _word_ids(tok: Tokenizer, sentences: Sequence[Sequence[str]]) -> list[list[list[int]]]:
    """Sub-token ids of every word of every sentence, each word tokenized on its own (one batch of
    distinct strings). Byte-level BPE: words after a sentence's first carry their leading space."""
    spaced = tok.kind == "byte_bpe"
    keyed = [[(" " + w) if spaced and k else w for k, w in enumerate(words)] for words in sentences]
    distinct = list(dict.fromkeys(w for words in keyed for w in words))
    table = dict(zip(distinct, tok.encode_batch_ids(distinct), strict=True))
    return [[table[w] for w in words] for words in keyed]


def _write(path: str, text: str) -> None:
    storage.write_atomic(path, text)
