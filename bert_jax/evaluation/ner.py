"""Entity-level NER scores as seqeval 1.2.2's default mode (the conlleval rules) computes them.

Tags are "<prefix>-<TYPE>" with prefix B, I, E, S or O (IOB1, IOB2, IOE, IOBES all read
the same way). A chunk ends and starts where conlleval says; malformed sequences ("I-X"
after "B-Y", an "I-X" without a "B-X") are read as seqeval reads them, not rejected.
"""

from __future__ import annotations

from collections.abc import Sequence

from bert_jax.errors import UserError


def _end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag not in ("O", ".") and prev_type != type_


def _start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in ("O", ".") and prev_type != type_


def _chunks(tags: list[str]) -> list[tuple[str, int, int]]:
    prev_tag, prev_type, begin, chunks = "O", "", 0, []
    for i, chunk in enumerate([*tags, "O"]):  # the trailing "O" closes a chunk left open at the end
        if not isinstance(chunk, str) or not chunk:
            raise UserError(f"tag {i} is {chunk!r}; tags are non-empty strings like 'B-PER' or 'O'")
        # seqeval's parse: the first character is the prefix, the type follows the first '-'
        # ("_" when there is none, so a bare "B" is a chunk of type "_").
        tag, type_ = chunk[0], chunk[1:].split("-", maxsplit=1)[-1] or "_"
        if _end_of_chunk(prev_tag, tag, prev_type, type_):
            chunks.append((prev_type, begin, i - 1))
        if _start_of_chunk(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def get_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The entity chunks of one tag sequence as (type, start, end inclusive), in order
    (seqeval.metrics.sequence_labeling.get_entities)."""
    if isinstance(tags, str):
        raise UserError(f"get_entities takes a sequence of tags, not the string {tags!r}")
    return _chunks(list(tags))


def _prf(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
    # The same operations, in the same order, as seqeval's, so the floats match bit for bit.
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    denom = precision + recall
    return precision, recall, (2 * precision * recall / denom if denom else 0.0)


def entity_scores(true: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro "precision", "recall", "f1" over entity chunks (an entity counts when type, start
    and end all match; 0.0 where undefined), token "accuracy", and "f1_<TYPE>" for every type
    in either side: seqeval's precision_score / recall_score / f1_score / accuracy_score and
    classification_report's per-type f1-score.

    Sentences are joined with an "O" between them before chunking, exactly as seqeval does, so
    with well-formed prefixes no chunk crosses a sentence.
    """
    if len(true) != len(pred):
        raise UserError(
            f"true and pred must have the same number of sentences; got {len(true)} and {len(pred)}"
        )
    joined_true, joined_pred = [], []
    for i, (t, p) in enumerate(zip(true, pred, strict=True)):
        if isinstance(t, str) or isinstance(p, str):
            raise UserError(f"sentence {i} is a string; true and pred are lists of tag lists")
        if len(t) != len(p):
            raise UserError(f"sentence {i} has {len(t)} true tags but {len(p)} predicted tags")
        joined_true += [*t, "O"]
        joined_pred += [*p, "O"]
    n_tokens = len(joined_true) - len(true)
    if n_tokens == 0:
        raise UserError("true and pred hold no tags; there is nothing to score")
    correct = sum(t == p for t, p in zip(joined_true, joined_pred, strict=True)) - len(true)

    true_chunks, pred_chunks = set(_chunks(joined_true)), set(_chunks(joined_pred))
    tp = len(true_chunks & pred_chunks)
    precision, recall, f1 = _prf(tp, len(pred_chunks), len(true_chunks))
    out = {"precision": precision, "recall": recall, "f1": f1, "accuracy": correct / n_tokens}
    for type_ in sorted({c[0] for c in true_chunks | pred_chunks}):
        t = {c for c in true_chunks if c[0] == type_}
        p = {c for c in pred_chunks if c[0] == type_}
        out[f"f1_{type_}"] = _prf(len(t & p), len(p), len(t))[2]
    return out
