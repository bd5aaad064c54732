"""Classification and regression: one row per sentence or pair (pairs truncated longest-first,
as BERT did), GLUE's metrics, and prediction TSVs (the GLUE leaderboard's files for test splits)."""

from __future__ import annotations

import numpy as np

from bert_jax import storage
from bert_jax.data.finetuning.examples import _Source
from bert_jax.data.finetuning.settings import _Settings
from bert_jax.data.finetuning.task import Features, Task, _write
from bert_jax.data.finetuning.tfds_source import _GLUE
from bert_jax.data.tokenizers import Tokenizer
from bert_jax.errors import UserError

# The leaderboard's file for each test split, and the tasks it wants label names from.
_GLUE_FILES = {
    "cola": {"test": "CoLA.tsv"},
    "sst2": {"test": "SST-2.tsv"},
    "mrpc": {"test": "MRPC.tsv"},
    "qqp": {"test": "QQP.tsv"},
    "stsb": {"test": "STS-B.tsv"},
    "mnli": {"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"},
    "qnli": {"test": "QNLI.tsv"},
    "rte": {"test": "RTE.tsv"},
    "wnli": {"test": "WNLI.tsv"},
    "ax": {"test": "AX.tsv"},
}
_GLUE_NAMED = ("mnli", "qnli", "rte", "ax")


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
        return Features(
            arrays,
            len(rows),
            {"truncated": truncated},
            {"ids": [r.id for r in rows], "labels": [r.label for r in rows] if scored else None},
        )

    def evaluate(self, split, features, outputs):
        from bert_jax.evaluation import metrics

        logits = np.asarray(outputs["classification_logits"], np.float32)  # [N, C]
        if self.kind == "regression":
            preds = logits[:, 0].astype(np.float64)
        else:
            preds = logits.argmax(-1)
        predictions = {
            "ids": features.meta["ids"],
            "predictions": preds.tolist(),
            "labels": features.meta["labels"],
        }
        if not self._scored(split):
            return {}, predictions
        labels = features.arrays["labels"]
        return metrics.score(self.metrics, labels, preds), predictions

    def write_predictions(self, split, predictions, output_dir):
        storage.makedirs(output_dir)
        glue = self._source.glue
        preds, labels = predictions["predictions"], predictions["labels"]
        if self.kind == "regression":
            # Every float32 digit (9 significant), so the scores can be recomputed from the
            # file; the GLUE leaderboard's test file gets its 3 decimals below.
            fmt = lambda v: f"{v:.9g}"  # noqa: E731
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
            path = storage.join(output_dir, leaderboard)
        else:
            head = ["index" if glue else "id", "prediction"] + ([] if label_text is None else ["label"])
            lines = ["\t".join(head)]
            for i, row_id in enumerate(predictions["ids"]):
                lines.append(
                    "\t".join(
                        [_tsv_cell(row_id), _tsv_cell(pred_text[i])]
                        + ([] if label_text is None else [_tsv_cell(label_text[i])])
                    )
                )
            path = storage.join(output_dir, f"{split}_predictions.tsv")
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
