"""Span extraction (SQuAD v1.1 / v2.0) as BERT's run_squad.py: whitespace words, sliding windows,
answer-span targets, n-best search over a question's windows, answer text cut from the context,
and the prediction / n-best / null-odds JSON files."""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import re

import numpy as np

from bert_jax import storage
from bert_jax.data.finetuning.examples import _Question, _Source
from bert_jax.data.finetuning.settings import _Settings
from bert_jax.data.finetuning.task import Features, Task, _word_ids, _write
from bert_jax.data.tokenizers import BYTE_DECODER, Tokenizer
from bert_jax.errors import UserError

# BERT's run_squad.py whitespace: these characters only (not e.g. U+00A0).
_SQUAD_WHITESPACE = frozenset(" \t\r\n\u202f")


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
        # v2: the no-answer threshold tuned on the first eval split, applied to predict splits.
        self.null_threshold: float | None = None

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
            out[text] = _Context(
                text,
                words,
                char_to_word,
                starts,
                ids_per_word,
                np.array(tok_to_word, np.int32),
                word_to_tok,
                ids,
            )
        return out

    def _answer_tokens(
        self, q: _Question, ctx: _Context, answer_ids: tuple[list[int], list[int]]
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
        actual = " ".join(ctx.words[start_word : end_word + 1])
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
                if new_end - new_start + 1 == n and ctx.ids[new_start : new_end + 1] == answer_ids:
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
                raise UserError(
                    f"task.max_seq_length={self.max_seq_length} leaves no room for the context "
                    f"after a {len(query)}-token question; raise it or lower "
                    f"task.max_query_length"
                )
            offset = len(tok.build_pair(query, [])[0]) - 1  # where the context starts in a row
            for doc_start, length in _doc_spans(len(ctx.ids), max_doc, s.doc_stride):
                rows.append(tok.build_pair(query, ctx.ids[doc_start : doc_start + length]))
                row_question.append(qi)
                windows.append((doc_start, length, offset))
                if target is not None and doc_start <= target[0] and target[1] < doc_start + length:
                    starts.append(target[0] - doc_start + offset)
                    ends.append(target[1] - doc_start + offset)
                else:
                    starts.append(0)
                    ends.append(0)
        if not rows:
            raise UserError(
                f"{self.name} split {split!r}: none of its {len(questions)} questions has an "
                f"answer found in its context"
            )
        arrays = self._pad(rows)
        arrays["start_positions"] = np.array(starts, np.int32)
        arrays["end_positions"] = np.array(ends, np.int32)
        meta = _SpanMeta(
            questions,
            contexts,
            np.array(row_question, np.int32),
            np.array(windows, np.int32),
            self.max_seq_length,
        )
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
                for i, j, score in squad.best_spans(
                    st, en, row_tok >= 0, s.n_best_size, s.max_answer_length, start_allowed=max_context
                ):
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
                    nbest.append(
                        {
                            "text": "",
                            "score": null_score,
                            "start_logit": null_logits[0],
                            "end_logit": null_logits[1],
                        }
                    )
                    nbest.sort(key=lambda e: -e["score"])
                # Null odds: how far the no-answer score beats the best span (run_squad.py's score_diff).
                null_odds[q.id] = null_score - best["score"] if best else 1e6
            texts[q.id] = best["text"] if best else ""
            probs = _softmax([e["score"] for e in nbest])
            nbest_all[q.id] = [
                {
                    "text": e["text"],
                    "probability": p,
                    "start_logit": e["start_logit"],
                    "end_logit": e["end_logit"],
                }
                for e, p in zip(nbest, probs, strict=True)
            ]
        result = {
            "predictions": texts,
            "null_odds": null_odds if self.version_2 else None,
            "nbest": nbest_all,
            "threshold": None,
        }
        if not self._scored(split):
            if self.version_2:  # the threshold tuned on dev once scored, else BERT's default, 0
                result["threshold"] = 0.0 if self.null_threshold is None else self.null_threshold
                result["predictions"] = squad.apply_threshold(texts, null_odds, result["threshold"])
            return {}, result
        gold = {q.id: [a for a, _ in q.answers] for q in meta.questions}
        if self.version_2:
            # "exact"/"f1" at threshold 0 (BERT's and HF's default), best_* over all thresholds.
            metrics = squad.evaluate(gold, texts, null_odds, na_prob_thresh=0.0)
            result["threshold"] = metrics["best_f1_thresh"]
            if self.eval_splits and split == self.eval_splits[0]:
                self.null_threshold = result["threshold"]
            result["predictions"] = squad.apply_threshold(texts, null_odds, result["threshold"])
        else:
            metrics = squad.evaluate(gold, texts)
        return {k: float(v) for k, v in metrics.items()}, result

    def write_predictions(self, split, predictions, output_dir):
        storage.makedirs(output_dir)
        paths = []
        for key, name in (("predictions", "predictions"), ("nbest", "nbest"), ("null_odds", "null_odds")):
            if predictions[key] is None:
                continue
            path = storage.join(output_dir, f"{split}_{name}.json")
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
            tokens[offset : offset + length] = np.arange(doc_start, doc_start + length)
            max_context = np.zeros(self.seq_len, bool)
            max_context[offset : offset + length] = best[doc_start : doc_start + length] == k
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
    return [
        None
        if b is None
        else (
            int(np.searchsorted(char_at, b[0], side="right")) - 1,
            int(np.searchsorted(char_at, b[1], side="left")),
        )
        for b in bounds
    ]


def _softmax(scores: list[float]) -> list[float]:
    if not scores:
        return []
    x = np.exp(np.array(scores, np.float64) - max(scores))
    return (x / x.sum()).tolist()
