"""Token classification (NER, CoNLL-style): a word's label on its first sub-token, entity-level
scores, and CoNLL prediction files."""

from __future__ import annotations

import collections

import numpy as np

from bert_jax import storage
from bert_jax.data.finetuning.examples import _Source
from bert_jax.data.finetuning.settings import _Settings
from bert_jax.data.finetuning.task import Features, Task, _word_ids, _write
from bert_jax.data.tokenizers import Tokenizer

_IGNORE = -100  # token_classification label on non-first sub-tokens, specials and padding


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
        preds = [
            [self.label_names[pred_ids[r, p]] if p >= 0 else "O" for p in positions]
            for r, positions in enumerate(features.meta["first"])
        ]
        scored = self._scored(split)
        predictions = [
            (s.words, s.label if scored else None, p) for s, p in zip(sentences, preds, strict=True)
        ]
        if not scored:
            return {}, predictions
        scores = ner.entity_scores([list(s.label) for s in sentences], preds)
        return {k: float(v) for k, v in scores.items()}, predictions

    def write_predictions(self, split, predictions, output_dir):
        """`<split>_predictions.conll`: "word gold pred" per line ("word pred" for an unlabelled
        split), a blank line between sentences."""
        storage.makedirs(output_dir)
        blocks = []
        for words, gold, pred in predictions:
            cols = [words, *([gold] if gold is not None else []), pred]
            blocks.append("\n".join(" ".join(parts) for parts in zip(*cols, strict=True)))
        path = storage.join(output_dir, f"{split}_predictions.conll")
        _write(path, "\n\n".join(blocks) + "\n")
        return [path]
