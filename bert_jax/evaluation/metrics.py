"""Classification and regression scores for fine-tuning, by name, and their summary over seeds.

Each metric takes two equal-length 1-D sequences (labels first) and returns a Python float
computed as scikit-learn 1.9 / SciPy 1.17 compute it: same formulas, same zero-division
conventions, so GLUE figures compare with published ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bert_jax.errors import UserError


def _pair(labels, predictions, what: str = "labels and predictions") -> tuple[np.ndarray, np.ndarray]:
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.ndim != 1 or predictions.ndim != 1:
        raise UserError(f"{what} must be 1-D sequences; got shapes {labels.shape} and {predictions.shape}")
    if len(labels) != len(predictions):
        raise UserError(f"{what} must have the same length; got {len(labels)} and {len(predictions)}")
    if len(labels) == 0:
        raise UserError(f"{what} are empty; there is nothing to score")
    return labels, predictions


def accuracy(labels, predictions) -> float:
    """Fraction of predictions equal to their label."""
    labels, predictions = _pair(labels, predictions)
    return float(np.mean(labels == predictions))


def _class_f1(labels: np.ndarray, predictions: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Per-class F1 = 2 tp / (true + predicted), 0.0 where a class is neither true nor predicted."""
    tp = np.array([np.sum((labels == c) & (predictions == c)) for c in classes], np.float64)
    denom = np.array([np.sum(labels == c) + np.sum(predictions == c) for c in classes], np.float64)
    return np.where(denom > 0, 2.0 * tp / np.where(denom > 0, denom, 1.0), 0.0)


def f1(labels, predictions, positive=1) -> float:
    """Binary F1 of the `positive` class (sklearn `f1_score`; 0.0 when the class is never
    true nor predicted). Other classes count as negative, so it also works on multiclass labels."""
    labels, predictions = _pair(labels, predictions)
    present = np.union1d(labels, predictions).tolist()
    if len(present) >= 2 and positive not in present:  # sklearn's check: most likely a wrong `positive`
        seen = ", ".join(map(repr, present))
        raise UserError(f"positive={positive!r} is not among the labels seen ({seen})")
    return float(_class_f1(labels, predictions, np.array([positive]))[0])


def macro_f1(labels, predictions) -> float:
    """Unweighted mean of per-class F1 over the classes in labels or predictions
    (sklearn `f1_score(average="macro")`)."""
    labels, predictions = _pair(labels, predictions)
    classes = np.union1d(labels, predictions)
    return float(np.mean(_class_f1(labels, predictions, classes)))


def matthews_corrcoef(labels, predictions) -> float:
    """Matthews correlation, the multiclass (R_K) form sklearn uses; 0.0 when undefined
    (labels or predictions all one class)."""
    labels, predictions = _pair(labels, predictions)
    classes, codes = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    k = len(classes)
    confusion = np.zeros((k, k), np.float64)  # [true class, predicted class]
    np.add.at(confusion, (codes[: len(labels)], codes[len(labels) :]), 1.0)
    t_sum, p_sum = confusion.sum(axis=1), confusion.sum(axis=0)
    n_correct, n = np.trace(confusion), p_sum.sum()
    cov_tp = n_correct * n - np.dot(t_sum, p_sum)
    cov_pp_tt = (n**2 - np.dot(p_sum, p_sum)) * (n**2 - np.dot(t_sum, t_sum))
    if cov_pp_tt == 0:
        return 0.0
    return float(cov_tp / np.sqrt(cov_pp_tt))


def _xy(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = _pair(x, y, "x and y")
    if len(x) < 2:
        raise UserError(f"a correlation needs at least 2 points; got {len(x)}")
    return x.astype(np.float64), y.astype(np.float64)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    xm, ym = x - x.mean(), y - y.mean()
    # Scale by the largest deviation before the norm, as SciPy does, so huge values cannot overflow.
    xm, ym = xm / np.max(np.abs(xm)), ym / np.max(np.abs(ym))
    r = np.dot(xm / np.linalg.norm(xm), ym / np.linalg.norm(ym))
    return float(np.clip(r, -1.0, 1.0))


def pearson(x, y) -> float:
    """Pearson correlation (scipy.stats.pearsonr's statistic). A constant input has no
    correlation: returns float('nan'), as SciPy does; NaN in the input gives NaN."""
    return _pearson(*_xy(x, y))


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their ranks (scipy.stats.rankdata 'average')."""
    order = np.argsort(a, kind="stable")
    sorted_a = a[order]
    starts = np.flatnonzero(np.r_[True, sorted_a[1:] != sorted_a[:-1]])  # first index of each tie group
    ends = np.r_[starts[1:], len(a)]
    mean_rank = (starts + 1 + ends) / 2.0  # mean of the ranks starts+1 .. ends
    ranks = np.empty(len(a), np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def spearman(x, y) -> float:
    """Spearman rank correlation (scipy.stats.spearmanr's statistic): Pearson on average
    ranks. A constant input returns float('nan'), as SciPy does; NaN in the input gives NaN."""
    x, y = _xy(x, y)
    if np.isnan(x).any() or np.isnan(y).any():
        return float("nan")
    return _pearson(_average_ranks(x), _average_ranks(y))


METRICS = {
    "accuracy": accuracy,
    "f1": f1,
    "macro_f1": macro_f1,
    "mcc": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def score(names: Sequence[str], labels, predictions) -> dict[str, float]:
    """{name: METRICS[name](labels, predictions)} for each name, in the order given."""
    if isinstance(names, str):
        names = [names]
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise UserError(f"unknown metric {unknown[0]!r}; choose from: {', '.join(METRICS)}")
    labels, predictions = _pair(labels, predictions)
    return {n: METRICS[n](labels, predictions) for n in names}


def summarize(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per metric over several fine-tuning runs (seeds): mean, sample std (ddof=1; 0.0 for one
    run), median, min, max and n. A metric missing from some runs is summarized over the runs
    that have it, and n says how many."""
    if not runs:
        raise UserError("summarize needs at least one run; got none")
    names = list(dict.fromkeys(k for run in runs for k in run))  # first-seen order
    out = {}
    for name in names:
        v = np.array([run[name] for run in runs if name in run], np.float64)
        out[name] = {
            "mean": float(np.mean(v)),
            "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
            "median": float(np.median(v)),
            "min": float(np.min(v)),
            "max": float(np.max(v)),
            "n": len(v),
        }
    return out
