"""A window of encode's lines -> batches of model rows that spend tokens on text.

Lines are sorted by length (longest first). Lines of at most `pack_width` tokens are packed
best-fit into rows of that width, up to `MAX_PER_ROW` a row; each keeps its own attention and
positions (`packing_ids`), as fine-tuning's packed rows do, so its outputs equal its unpacked
ones. Longer lines get a row each, in the smallest bucket width (multiples of `pack_width`, and
`max_length`) that holds them. A batch is `batch_size` rows, or `batch_tokens // width` rows,
rounded to a multiple of the local devices; the last batch of a width has its rows rounded up to
a power of two (times the devices), so a run compiles a few shapes per width at most.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from bert_jax.data.finetuning.packing import pack

MAX_PER_ROW = 16  # lines a packed row holds at most
PACK_WIDTH = 128  # packed rows' width (at most the run's max length)
SHORT_WIDTH = 32  # the narrower packed rows, for lines of at most this many tokens


@dataclasses.dataclass(frozen=True)
class Batching:
    """How a window's lines become batches of rows (see the module docstring)."""

    max_length: int
    pack_width: int
    batch_size: int  # rows a batch, when batch_tokens is 0
    batch_tokens: int  # tokens a batch (rows = batch_tokens // width), or 0
    divisor: int  # the rows of a batch are a multiple of this (the local devices)

    @property
    def packed_widths(self) -> tuple[int, ...]:
        """Widths of packed rows: SHORT_WIDTH for the shortest lines (their attention then
        spans 32 tokens, not 128), then pack_width."""
        return tuple(sorted({min(SHORT_WIDTH, self.pack_width), self.pack_width}))

    @property
    def widths(self) -> tuple[int, ...]:
        """Row widths: the packed widths, then buckets for longer lines."""
        longer = range(2 * self.pack_width, self.max_length, self.pack_width)
        return tuple(sorted({*self.packed_widths, *longer, self.max_length}))

    def rows(self, width: int) -> int:
        """Rows of a full batch of this width: batch_tokens // width, or batch_size rows of
        pack_width's tokens (more rows when they are narrower)."""
        if self.batch_tokens:
            rows = self.batch_tokens // width
        else:
            rows = self.batch_size * max(1, self.pack_width // width)
        return self.divisor * max(1, math.ceil(rows / self.divisor))

    def last_rows(self, n: int, width: int) -> int:
        """Rows of a batch holding the last n rows of a width: a power of two times the divisor,
        at most the full batch."""
        units = math.ceil(n / self.divisor)
        return min(self.rows(width), self.divisor * (1 << max(0, units - 1).bit_length()))

    def batches(self, ids: np.ndarray, lengths: np.ndarray):
        """Yield (rows, width) for every line of the window [n, max_length]: `rows` is
        `pack`'s layout (input_ids, attention_mask, packing_ids, cls_positions, example_index
        [R, K], -1 on empty slots) with R a batch's rows."""
        order = np.argsort(-lengths, kind="stable")  # longest first: best-fit decreasing
        low = 0
        for width in self.widths:
            chosen = order[(lengths[order] > low) & (lengths[order] <= width)]
            low = width
            if not len(chosen):
                continue
            arrays = {
                "input_ids": ids[:, :width],
                "segment_ids": np.zeros((len(ids), width), np.int32),
                "attention_mask": (np.arange(width)[None, :] < lengths[:, None]).astype(np.int32),
            }
            per_row = MAX_PER_ROW if width in self.packed_widths else 1
            packed = pack(arrays, chosen, per_row)
            packed = {k: v for k, v in packed.items() if k != "segment_ids"}
            full = self.rows(width)
            total = len(packed["input_ids"])
            for start in range(0, total, full):
                size = full if total - start >= full else self.last_rows(total - start, width)
                part = {k: v[start : start + size] for k, v in packed.items()}
                missing = size - len(part["input_ids"])
                if missing:  # empty rows: no tokens, no lines
                    part = {
                        k: np.concatenate(
                            [v, np.full((missing,) + v.shape[1:], -1 if k == "example_index" else 0, v.dtype)]
                        )
                        for k, v in part.items()
                    }
                yield part, width
