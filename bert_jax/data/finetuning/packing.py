"""Packed fine-tuning rows (issue #13 item 1): several short examples share one model row.

`pack(arrays, max_per_row, seed, epoch)` turns a split's padded rows (`Features.arrays`, one
example a row) into packed rows of the same length S:
  input_ids, segment_ids      [R, S]  the examples' tokens, one after another
  attention_mask              [R, S]  1 on tokens
  packing_ids                 [R, S]  1..k: the example a token belongs to (0 = padding); the
                                      encoder lets a token attend only within its example and
                                      restarts positions at each example (its own offset rule)
  cls_positions               [R, K]  where each example's [CLS] sits (0 on empty slots)
  example_index               [R, K]  which source row fills the slot (-1 = empty)
  and the labels moved with their examples: sequence labels [R, K]; token labels [R, S];
  span start/end positions [R, K], offset by the example's start in the row (0 = its [CLS]
  stays the example's own [CLS]).

Which examples share a row is decided by best fit over the examples in a permutation drawn
from (seed, epoch): a run is reproducible, and a resumed run rebuilds the same rows.
"""

from __future__ import annotations

import numpy as np

SEQUENCE_LABELS = ("labels",)  # [N] -> [R, K] (classification, regression)
SPAN_LABELS = ("start_positions", "end_positions")


def assign(lengths: np.ndarray, seq_len: int, max_per_row: int, order: np.ndarray) -> list[list[int]]:
    """Rows of example indices: best fit over the examples in `order` (each goes to the open
    row with the least room that still takes it, or a new row), each row's lengths summing to
    at most seq_len and holding at most max_per_row examples. O(N * seq_len): rows are kept in
    buckets by their free room."""
    rows: list[list[int]] = []
    room: list[int] = []
    by_room: list[list[int]] = [[] for _ in range(seq_len + 1)]  # free room -> open rows (a stack)
    for i in order:
        n = int(lengths[i])
        if n > seq_len:
            raise ValueError(f"example {i} has {n} tokens, more than the row length {seq_len}")
        r = next((by_room[free].pop() for free in range(n, seq_len + 1) if by_room[free]), None)
        if r is None:
            r = len(rows)
            rows.append([])
            room.append(seq_len)
        rows[r].append(int(i))
        room[r] -= n
        if len(rows[r]) < max_per_row and room[r] > 0:
            by_room[room[r]].append(r)
    return rows


def pack(arrays: dict[str, np.ndarray], max_per_row: int, seed: int, epoch: int) -> dict[str, np.ndarray]:
    """Packed rows of `arrays` (see the module docstring); examples in a (seed, epoch) order."""
    ids = arrays["input_ids"]
    n, seq_len = ids.shape
    lengths = arrays["attention_mask"].sum(axis=1).astype(np.int64)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    rows = assign(lengths, seq_len, max_per_row, order)
    r, k = len(rows), max_per_row
    out = {
        name: np.zeros((r, seq_len), np.int32)
        for name in ("input_ids", "segment_ids", "attention_mask", "packing_ids")
    }
    out["cls_positions"] = np.zeros((r, k), np.int32)
    out["example_index"] = -np.ones((r, k), np.int32)
    token_labels = "labels" in arrays and arrays["labels"].ndim == 2
    if token_labels:
        out["labels"] = np.full((r, seq_len), -100, arrays["labels"].dtype)
    elif "labels" in arrays:
        fill = np.nan if arrays["labels"].dtype.kind == "f" else -1
        out["labels"] = np.full((r, k), fill, arrays["labels"].dtype)
    for name in SPAN_LABELS:
        if name in arrays:
            out[name] = np.zeros((r, k), np.int32)
    for row, members in enumerate(rows):
        at = 0
        for slot, i in enumerate(members):
            m = int(lengths[i])
            span = slice(at, at + m)
            out["input_ids"][row, span] = ids[i, :m]
            out["segment_ids"][row, span] = arrays["segment_ids"][i, :m]
            out["attention_mask"][row, span] = 1
            out["packing_ids"][row, span] = slot + 1
            out["cls_positions"][row, slot] = at
            out["example_index"][row, slot] = i
            if token_labels:
                out["labels"][row, span] = arrays["labels"][i, :m]
            elif "labels" in arrays:
                out["labels"][row, slot] = arrays["labels"][i]
            for name in SPAN_LABELS:
                if name in arrays:
                    out[name][row, slot] = at + int(arrays[name][i])
            at += m
    return out


def unpack(outputs: np.ndarray, example_index: np.ndarray, n: int) -> np.ndarray:
    """Per-slot outputs [R, K, ...] -> per-example [n, ...] in source-row order."""
    flat_index = example_index.reshape(-1)
    flat = outputs.reshape((-1,) + outputs.shape[2:])
    keep = flat_index >= 0
    result = np.zeros((n,) + outputs.shape[2:], outputs.dtype)
    result[flat_index[keep]] = flat[keep]
    if np.bincount(flat_index[keep], minlength=n).min() != 1:
        raise ValueError("every example must fill exactly one slot")
    return result
