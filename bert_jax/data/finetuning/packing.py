"""Fine-tuning batches that spend tokens on text (issue #13 items 1-2).

A step takes the same examples as an unpadded run would (`batch` of them, in the (seed, epoch)
order), but lays them out in fewer model rows:

- **packed** (classification, regression, token classification): the step's examples are
  packed best-fit into rows of the task's length S. Each keeps its own attention and
  positions (`packing_ids`), its own [CLS] (`cls_positions`) and its labels. The number of
  rows is rounded up to a multiple of `quantum`, so a run compiles a few row counts only.
- **bucketed** (span QA, or packing off): one row per example, cut to the smallest of a few
  widths (S/4, S/2, 3S/4, S) that holds the step's longest example.

Every layout carries `weights` (1 for a real example, 0 for padding) and the model outputs of
any layout map back to one row per example (`outputs`), as the tasks' scoring expects.

Packed arrays, for R rows of length S and at most K examples a row:
  input_ids, segment_ids      [R, S]  the examples' tokens, one after another
  attention_mask              [R, S]  1 on tokens
  packing_ids                 [R, S]  1..k: the example a token belongs to (0 = padding); the
                                      encoder lets a token attend only within its example and
                                      restarts positions at each example (its own offset rule)
  cls_positions               [R, K]  where each example's [CLS] sits (0 on empty slots)
  example_index               [R, K]  which source row fills the slot (-1 = empty; host only)
  labels                      [R, K] for sequence labels, [R, S] for token labels
  start/end_positions         [R, K]  span targets offset by the example's start in the row
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from bert_jax.data.finetuning.settings import KINDS

SPAN_LABELS = ("start_positions", "end_positions")
HOST_ONLY = ("example_index",)  # layout for mapping outputs back; never sent to a device


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


def pack(
    arrays: dict[str, np.ndarray], indices: np.ndarray, max_per_row: int, quantum: int = 1
) -> dict[str, np.ndarray]:
    """The examples `indices` (in this order; -1 entries are skipped) packed into rows (see the
    module docstring), padded with empty rows to a multiple of `quantum` rows."""
    ids = arrays["input_ids"]
    seq_len = ids.shape[1]
    lengths = _lengths(arrays)
    order = np.asarray(indices)
    members_of = assign(lengths, seq_len, max_per_row, order[order >= 0])
    r, k = quantum * max(1, math.ceil(len(members_of) / quantum)), max_per_row
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
    for row, members in enumerate(members_of):
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


def bucket_widths(seq_len: int) -> tuple[int, ...]:
    """The row widths of bucketed batches: about S/4, S/2, 3S/4 (multiples of 8) and S."""
    widths = {min(seq_len, 8 * math.ceil(seq_len * q / 32)) for q in (1, 2, 3)} | {seq_len}
    return tuple(sorted(widths))


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a task's examples become model rows: packed (`max_per_row` examples at most, row
    counts rounded up to multiples of `quantum`) or bucketed (one row per example)."""

    packed: bool
    max_per_row: int = 1
    quantum: int = 1

    @classmethod
    def for_task(cls, kind: str, packing: bool, max_per_row: int, batch: int, divisor: int) -> Layout:
        if not packing or not KINDS[kind].packs:
            return cls(packed=False)
        # Row counts in steps of about batch/16 rows (and of the mesh's batch shards): a step's
        # packed rows vary a little, and each distinct count is one more compile.
        quantum = divisor * max(1, round(batch / (16 * divisor)))
        return cls(packed=True, max_per_row=max_per_row, quantum=quantum)

    def batch(self, arrays: dict[str, np.ndarray], indices: np.ndarray) -> dict[str, np.ndarray]:
        """The model rows of examples `indices` (-1 = none), as numpy arrays with `weights`:
        bucketed, a row per entry of `indices`; packed, as few rows as hold them."""
        indices = np.asarray(indices)
        if self.packed:
            out = pack(arrays, indices, self.max_per_row, self.quantum)
            if "labels" in arrays and arrays["labels"].ndim == 2:  # token labels: a weight per row
                out["weights"] = (out["packing_ids"] > 0).any(axis=1).astype(np.float32)
            else:  # a weight per example slot
                out["weights"] = (out["example_index"] >= 0).astype(np.float32)
            return out
        seq_len = arrays["input_ids"].shape[1]
        real = indices[indices >= 0]
        longest = int(_lengths(arrays)[real].max()) if len(real) else 1
        width = next(w for w in bucket_widths(seq_len) if w >= longest)
        take = np.maximum(indices, 0)
        out = {k: (v[take][:, :width] if v.ndim == 2 else v[take]) for k, v in arrays.items()}
        out["weights"] = (indices >= 0).astype(np.float32)
        return out

    def eval_batches(self, arrays: dict[str, np.ndarray], size: int):
        """(batch, indices) covering every example once, `size` rows a batch. Packed: all the
        examples packed at once (longest first) and cut into batches of `size` rows, one shape.
        Bucketed: examples by length, so a batch's width fits its rows."""
        n = len(arrays["input_ids"])
        by_length = np.argsort(-_lengths(arrays), kind="stable")
        if self.packed:
            rows = pack(arrays, by_length, self.max_per_row, quantum=size)
            for start in range(0, len(rows["input_ids"]), size):
                yield {k: v[start : start + size] for k, v in rows.items()}, None
            return
        padded = np.full(size * max(1, math.ceil(n / size)), -1, np.int64)
        padded[:n] = by_length
        for start in range(0, len(padded), size):
            indices = padded[start : start + size]
            yield self.batch(arrays, indices), indices

    def outputs(
        self,
        parts: list[tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]],
        n: int,
        seq_len: int,
    ) -> dict[str, np.ndarray]:
        """Per-batch (batch, indices, outputs) -> one output row per example, in source order:
        sequence outputs [n, ...], token outputs [n, seq_len, ...] (zeros, or for span logits
        -1e9, past a row's width)."""
        result: dict[str, np.ndarray] = {}
        for batch, indices, out in parts:
            for name, value in out.items():
                token_level = name != "classification_logits"
                if name not in result:
                    shape = (
                        (n, seq_len) + value.shape[2:]
                        if token_level
                        else (n,) + value.shape[(2 if self.packed else 1) :]
                    )
                    result[name] = np.full(
                        shape, -1e9 if name in ("start_logits", "end_logits") else 0, value.dtype
                    )
                target = result[name]
                if not self.packed:
                    keep = indices >= 0
                    if token_level:
                        target[indices[keep], : value.shape[1]] = value[keep]
                    else:
                        target[indices[keep]] = value[keep]
                    continue
                index = batch["example_index"]
                if not token_level:
                    keep = index >= 0
                    target[index[keep]] = value[keep]
                    continue
                lengths = batch["packing_ids"]
                for row, slot in zip(*np.nonzero(index >= 0), strict=True):
                    at = int(batch["cls_positions"][row, slot])
                    m = int((lengths[row] == slot + 1).sum())
                    target[index[row, slot], :m] = value[row, at : at + m]
        return result


def _lengths(arrays: dict[str, np.ndarray]) -> np.ndarray:
    return arrays["attention_mask"].sum(axis=1).astype(np.int64)
