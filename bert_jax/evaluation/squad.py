"""SQuAD scoring by the official v1.1 / v2.0 evaluation scripts' rules, and BERT's n-best
answer-span search over one window.

`evaluate` reproduces evaluate-v2.0.py (which equals evaluate-v1.1.py when every question is
answerable and no gold answer normalizes to nothing), including its no-answer threshold and
its best-threshold search, on in-memory dicts instead of JSON files.
"""

from __future__ import annotations

import collections
import re
import string

import numpy as np

from bert_jax.errors import UserError

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (the official script)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def _tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def exact_match(gold: str, pred: str) -> int:
    """1 if the normalized answers are equal, else 0 (official `compute_exact`)."""
    return int(normalize_answer(gold) == normalize_answer(pred))


def f1(gold: str, pred: str) -> float:
    """Token-overlap F1 of the normalized answers (official v2.0 `compute_f1`): when either
    side has no tokens, 1 if both have none, else 0."""
    gold_toks, pred_toks = _tokens(gold), _tokens(pred)
    if not gold_toks or not pred_toks:
        return float(gold_toks == pred_toks)
    num_same = sum((collections.Counter(gold_toks) & collections.Counter(pred_toks)).values())
    if num_same == 0:
        return 0.0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def apply_threshold(
    predictions: dict[str, str], na_probs: dict[str, float], threshold: float
) -> dict[str, str]:
    """The predictions with "" (no answer) wherever na_probs[id] > threshold."""
    missing = [qid for qid in predictions if qid not in na_probs]
    if missing:
        raise UserError(f"na_probs has no entry for question id {missing[0]!r} ({len(missing)} missing)")
    return {qid: "" if na_probs[qid] > threshold else pred for qid, pred in predictions.items()}


def _best_thresh(predictions, scores, na_probs, has_ans, total) -> tuple[float, float]:
    """evaluate-v2.0.py's find_best_thresh: start with every question answered "no answer"
    (score = number of unanswerable questions), then raise the threshold through the sorted
    na_probs, each step letting one more question keep its span answer."""
    cur = best = sum(1 for qid in scores if not has_ans[qid])
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_ans[qid]:
            cur += scores[qid]
        elif predictions[qid]:
            cur -= 1
        if cur > best:
            best, best_thresh = cur, na_probs[qid]
    return 100.0 * best / total, best_thresh


def _eval_dict(exact: dict, f1s: dict, qids: list[str], prefix: str = "") -> dict[str, float]:
    """Scores over qids on a 0-100 scale; a qid missing from the scores counts as 0."""
    total = len(qids)
    return {
        prefix + "exact": 100.0 * sum(exact.get(k, 0) for k in qids) / total,
        prefix + "f1": 100.0 * sum(f1s.get(k, 0) for k in qids) / total,
        prefix + "total": total,
    }


def evaluate(
    gold: dict[str, list[str]],
    predictions: dict[str, str],
    na_probs: dict[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, float]:
    """Score predictions against gold answers as evaluate-v2.0.py does.

    gold: question id -> gold answer texts; an empty list marks an unanswerable question (its
      only correct answer is ""). Gold texts that normalize to nothing are dropped, as the
      official script drops them.
    predictions: question id -> predicted text ("" = no answer). An id missing here scores 0
      (counted in "missing"); an id not in gold is an error.
    na_probs: optional question id -> probability of no answer. With it, a prediction whose
      na_prob > na_prob_thresh becomes "", and "best_exact", "best_f1" and their thresholds
      report the best threshold, found as the official script finds it.

    Returns "exact", "f1" (0-100), "total", "missing", and "HasAns_*" / "NoAns_*" over the
    answerable / unanswerable questions where there are any. With no missing predictions
    every figure equals the official script's; with all questions answerable "exact" and "f1"
    equal evaluate-v1.1.py's "exact_match" and "f1".
    """
    if not gold:
        raise UserError("gold has no questions; there is nothing to evaluate")
    for qid, answers in gold.items():
        if isinstance(answers, str) or not all(isinstance(a, str) for a in answers):
            raise UserError(
                f"gold[{qid!r}] is {answers!r}; expected a list of answer texts "
                "([] for an unanswerable question)"
            )
    for qid, pred in predictions.items():
        if not isinstance(pred, str):
            raise UserError(f"predictions[{qid!r}] is {pred!r}; expected the answer text ('' for no answer)")
    unknown = [qid for qid in predictions if qid not in gold]
    if unknown:
        raise UserError(
            f"prediction for question id {unknown[0]!r}, which is not in gold ({len(unknown)} such ids)"
        )
    if na_probs is not None:
        extra = [qid for qid in na_probs if qid not in gold]
        if extra:
            raise UserError(f"na_probs has question id {extra[0]!r}, which is not in gold")
        absent = [qid for qid in predictions if qid not in na_probs]
        if absent:
            raise UserError(
                f"na_probs has no entry for question id {absent[0]!r} ({len(absent)} predictions without one)"
            )
    # Without na_probs the official script takes them all as 0.0.
    predicted_na = {qid: (0.0 if na_probs is None else na_probs[qid]) > na_prob_thresh for qid in predictions}

    has_ans = {qid: bool(answers) for qid, answers in gold.items()}
    exact_raw, f1_raw, exact_th, f1_th = {}, {}, {}, {}
    for qid, answers in gold.items():  # gold order, so float sums add up as the script's do
        if qid not in predictions:
            continue
        golds = [a for a in answers if normalize_answer(a)] or [""]
        pred = predictions[qid]
        exact_raw[qid] = max(exact_match(a, pred) for a in golds)
        f1_raw[qid] = max(f1(a, pred) for a in golds)
        if predicted_na[qid]:  # thresholded to no answer: right exactly when there is none
            exact_th[qid] = f1_th[qid] = float(not has_ans[qid])
        else:
            exact_th[qid], f1_th[qid] = exact_raw[qid], f1_raw[qid]

    qids = list(gold)
    out = _eval_dict(exact_th, f1_th, qids)
    out["missing"] = len(gold) - len(exact_raw)
    has_ans_qids = [k for k in qids if has_ans[k]]
    no_ans_qids = [k for k in qids if not has_ans[k]]
    if has_ans_qids:
        out.update(_eval_dict(exact_th, f1_th, has_ans_qids, "HasAns_"))
    if no_ans_qids:
        out.update(_eval_dict(exact_th, f1_th, no_ans_qids, "NoAns_"))
    if na_probs is not None:
        out["best_exact"], out["best_exact_thresh"] = _best_thresh(
            predictions, exact_raw, na_probs, has_ans, len(gold)
        )
        out["best_f1"], out["best_f1_thresh"] = _best_thresh(
            predictions, f1_raw, na_probs, has_ans, len(gold)
        )
    return out


def best_spans(
    start_logits,
    end_logits,
    allowed,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    start_allowed=None,
) -> list[tuple[int, int, float]]:
    """BERT run_squad.py's n-best answer spans in one window.

    start_logits, end_logits: [S] floats. allowed: [S] bools, the tokens an answer may start
    and end on (the context). start_allowed: optional [S] bools further restricting starts
    (BERT's token_is_max_context, so a span is scored in the window where it has most context).

    Takes the n_best_size highest-logit starts and ends (ties: lower index first), keeps the
    pairs with both ends allowed, end >= start and at most max_answer_length tokens, and
    returns up to n_best_size (start, end, start_logit + end_logit), best first; equal scores
    go lower start, then lower end, first.
    """
    start_logits = np.asarray(start_logits, np.float64)
    end_logits = np.asarray(end_logits, np.float64)
    allowed = np.asarray(allowed)
    if start_logits.ndim != 1:
        raise UserError(f"start_logits must be 1-D [seq]; got shape {start_logits.shape}")
    s = len(start_logits)
    for name, a in (("end_logits", end_logits), ("allowed", allowed)):
        if a.shape != (s,):
            raise UserError(f"{name} must have shape ({s},) like start_logits; got {a.shape}")
    if allowed.dtype != bool:
        raise UserError(f"allowed must be a bool array; got dtype {allowed.dtype}")
    if start_allowed is not None:
        start_allowed = np.asarray(start_allowed)
        if start_allowed.shape != (s,) or start_allowed.dtype != bool:
            raise UserError(
                f"start_allowed must be a bool array of shape ({s},) like start_logits; "
                f"got {start_allowed.dtype} {start_allowed.shape}"
            )
    for name, v in (("n_best_size", n_best_size), ("max_answer_length", max_answer_length)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise UserError(f"{name} must be a positive integer; got {v!r}")
    if np.isnan(start_logits).any() or np.isnan(end_logits).any():
        raise UserError("start_logits and end_logits must not contain NaN")

    # A stable sort on the negated logits keeps equal logits in index order, as Python's
    # sorted(..., reverse=True) does in run_squad.py's _get_best_indexes.
    starts = np.argsort(-start_logits, kind="stable")[:n_best_size]
    ends = np.argsort(-end_logits, kind="stable")[:n_best_size]
    st, en = np.meshgrid(starts, ends, indexing="ij")  # [n_starts, n_ends]
    st, en = st.ravel(), en.ravel()
    ok = allowed[st] & allowed[en] & (en >= st) & (en - st + 1 <= max_answer_length)
    if start_allowed is not None:
        ok &= start_allowed[st]
    st, en = st[ok], en[ok]
    scores = start_logits[st] + end_logits[en]
    order = np.lexsort((en, st, -scores))[:n_best_size]
    return [(int(st[i]), int(en[i]), float(scores[i])) for i in order]
