"""The online pretraining stream: prepared rows -> this host's slice of step k's batch, masked.

The global batch at step k is a pure function of (data, seed, global batch size, k):
global position g = k * B + r (r < B) is row `permute(g mod N)` of epoch g // N, where
`permute` is a keyed pseudo-random bijection of the N rows (a Feistel network with cycle
walking), reshuffled every epoch. Each host reads only its contiguous slice of the B
rows, by random access into the ArrayRecord shards, so:
  - starting at step k costs the same as starting at step 0 (no skipping ahead);
  - any number of hosts sees the same global batches (B must divide among them);
  - the state to save is just the step (plus fingerprints that catch a changed setup).
Masks are dynamic: drawn per row from a key hashed from (seed, epoch, row index), so
each epoch masks differently and a row's mask does not depend on its batch or host.

Each batch is a dict of numpy arrays ([b, S] or [b, P], b = B / hosts):
  input_ids (masked), segment_ids, position_ids (restart per packed sequence),
  packing_ids (1..n per sequence, 0 = padding), attention_mask, masked_positions,
  masked_ids, masked_weights, row_index; and sentence_label for nsp / sop data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import threading

import numpy as np

from bert_jax import storage
from bert_jax.data import masking as masking_lib
from bert_jax.data import records
from bert_jax.data.prepare import LABELLED
from bert_jax.data.records import read_metadata
from bert_jax.errors import UserError

WORD_START_FILE = "word_start.npy"


def permute(index: np.ndarray, n: int, key: int) -> np.ndarray:
    """A keyed pseudo-random bijection of [0, n), applied to `index` (values in [0, n))."""
    bits = max(2, int(n - 1).bit_length())
    bits += bits % 2
    half = np.uint64(bits // 2)
    low = np.uint64((1 << (bits // 2)) - 1)
    keys = masking_lib.mix64(np.arange(1, 5, dtype=np.uint64) + np.uint64(key & 0xFFFFFFFFFFFFFFFF))

    def feistel(x):
        left, right = x >> half, x & low
        for k in keys:
            left, right = right, left ^ (masking_lib.mix64(right ^ k) & low)
        return (left << half) | right

    out = np.asarray(index, np.uint64).copy()
    todo = np.ones(out.shape, bool)
    while todo.any():  # cycle walking: re-apply until inside [0, n); at most a few rounds
        out[todo] = feistel(out[todo])
        todo = out >= np.uint64(n)
    return out.astype(np.int64)


def _epoch_key(seed: int, epoch: int) -> int:
    return int.from_bytes(hashlib.sha256(f"order/{seed}/{epoch}".encode()).digest()[:8], "little")


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    data_dir: str
    global_batch_size: int
    seed: int = 0
    masking: masking_lib.MaskingConfig = masking_lib.MaskingConfig()
    # Read only rows [start, stop) of the data (None: all); how evaluation holds rows out.
    rows: tuple[int, int] | None = None


class PretrainingStream:
    def __init__(self, config: StreamConfig, process_index: int = 0, process_count: int = 1):
        self.config = config
        self.meta = read_metadata(config.data_dir)
        b = config.global_batch_size
        if b < 1 or b % process_count:
            raise UserError(
                f"global batch size {b} does not split evenly over {process_count} "
                "processes; choose a multiple of the process count"
            )
        if not 0 <= process_index < process_count:
            raise UserError(f"process_index={process_index} is outside [0, {process_count})")
        self.process_index, self.process_count = process_index, process_count
        self.host_batch_size = b // process_count
        total = self.meta["num_rows"]
        self.first_row, stop = config.rows if config.rows is not None else (0, total)
        if not 0 <= self.first_row < stop <= total:
            raise UserError(
                f"rows {config.rows} are not a non-empty range within the {total} rows of {config.data_dir}"
            )
        self.num_rows = stop - self.first_row
        self.seq_len = self.meta["max_seq_length"]
        self.dtype = np.dtype(self.meta["id_dtype"])
        self.offsets = np.cumsum([0] + [s["rows"] for s in self.meta["shards"]])
        specials = self.meta["special_ids"]
        vocab = self.meta["vocab_size"]
        self.special = np.zeros(vocab, bool)
        self.special[specials["all"]] = True
        self.pad_id, self.mask_id, self.vocab_size = specials["pad"], specials["mask"], vocab
        path = storage.join(config.data_dir, WORD_START_FILE)
        self.word_start = (
            np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False)
            if storage.isfile(path)
            else None
        )
        if config.masking.strategy != "token" and self.word_start is None:
            raise UserError(
                f"masking.strategy={config.masking.strategy!r} needs word boundaries, "
                f"but {config.data_dir} has no {WORD_START_FILE}; prepare the data again"
            )
        self.labelled = self.meta["objective"] in LABELLED
        self._local = threading.local()

    # --- state ------------------------------------------------------------------------------
    def state(self, step: int) -> dict:
        """All a checkpoint must hold to resume this stream at `step`."""
        return {
            "step": int(step),
            "seed": self.config.seed,
            "global_batch_size": self.config.global_batch_size,
            "rows": [self.first_row, self.first_row + self.num_rows],
            "data_fingerprint": self.meta["config_fingerprint"],
        }

    def check_state(self, state: dict) -> int:
        """The step to resume at; a clear error if the data or batch setup changed."""
        for key in ("seed", "global_batch_size", "rows", "data_fingerprint"):
            mine = self.state(0)[key]
            if state.get(key) != mine:
                raise UserError(
                    f"cannot resume the data stream: saved {key}={state.get(key)!r} but "
                    f"the current setup has {mine!r}; the batches would differ"
                )
        return int(state["step"])

    # --- batches ------------------------------------------------------------------------------
    def host_rows(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(row index, epoch) of each row of this host's slice of step's global batch."""
        b = self.host_batch_size
        g = np.int64(step) * self.config.global_batch_size + self.process_index * b + np.arange(b)
        epochs, pos = np.divmod(g, self.num_rows)
        rows = np.empty(b, np.int64)
        for epoch in np.unique(epochs):  # a batch spans at most two epochs
            sel = epochs == epoch
            rows[sel] = permute(pos[sel], self.num_rows, _epoch_key(self.config.seed, int(epoch)))
        return rows + self.first_row, epochs

    def _readers(self):
        readers = getattr(self._local, "readers", None)
        if readers is None:  # one set of readers per thread: tf.data may call us in parallel
            from array_record.python.array_record_module import ArrayRecordReader

            # ArrayRecord reads gs:// itself (its own Cloud Storage client).
            readers = [
                ArrayRecordReader(storage.join(self.config.data_dir, s["file"]), "readahead_buffer_size:0")
                for s in self.meta["shards"]
            ]
            broken = [s["file"] for s, r in zip(self.meta["shards"], readers, strict=True) if not r.ok()]
            if broken:
                raise UserError(f"{self.config.data_dir}: cannot read shard(s) {', '.join(broken)}")
            self._local.readers = readers
        return readers

    def read(self, rows: np.ndarray) -> list[bytes]:
        shard = np.searchsorted(self.offsets, rows, side="right") - 1
        out: list[bytes] = [b""] * len(rows)
        readers = self._readers()
        for s in np.unique(shard):
            sel = np.nonzero(shard == s)[0]
            got = readers[s].read((rows[sel] - self.offsets[s]).tolist())
            for i, rec in zip(sel, got, strict=True):
                out[i] = rec
        return out

    def host_batch(self, step: int) -> dict[str, np.ndarray]:
        rows, epochs = self.host_rows(step)
        batch = records.decode_rows(self.read(rows), self.seq_len, self.dtype, self.pad_id)
        label = batch.pop("label")
        keys = np.empty(len(rows), np.uint64)
        for epoch in np.unique(epochs):
            sel = epochs == epoch
            keys[sel] = masking_lib.example_key(self.config.seed, int(epoch), rows[sel])
        masked = masking_lib.mask_batch(
            batch["input_ids"],
            self.special,
            self.word_start,
            keys,
            self.config.masking,
            self.mask_id,
            self.vocab_size,
            random_ids_exclude=self.special,
        )
        batch.update(masked)
        batch["row_index"] = rows
        if self.labelled:
            batch["sentence_label"] = label
        return batch

    def iterate(self, start_step: int = 0):
        """Plain Python iterator over host batches from `start_step` (no prefetching)."""
        step = start_step
        while True:
            yield self.host_batch(step)
            step += 1

    def dataset(
        self, start_step: int = 0, stop_step: int | None = None, parallel: int = 2, prefetch: int = 2
    ):
        """The tf.data pipeline of host batches for steps [start_step, stop_step) (None: without
        end), prefetched in the background. A run that knows its last step passes it, so the
        pipeline makes no batch the run will not take."""
        from bert_jax import tf_setup

        tf_setup.start()  # TensorFlow feeds input only; JAX owns the accelerators
        import tensorflow as tf

        example = self.host_batch(start_step)
        names = sorted(example)
        dtypes = [tf.as_dtype(example[n].dtype) for n in names]

        def fn(step):
            batch = self.host_batch(int(step))
            return [batch[n] for n in names]

        def to_dict(*arrays):
            out = {}
            for n, a in zip(names, arrays, strict=True):
                a.set_shape(example[n].shape)
                out[n] = a
            return out

        stop = np.iinfo(np.int64).max if stop_step is None else stop_step
        ds = tf.data.Dataset.range(start_step, stop)
        ds = ds.map(
            lambda s: tf.numpy_function(fn, [s], dtypes, stateful=False),
            num_parallel_calls=parallel,
            deterministic=True,
        )
        options = tf.data.Options()
        # Parallelism and prefetch are fixed, so nothing is tuned. With autotuning on, deleting
        # the iterator at the end of a run waited 14-21 s for tf.data's tuning thread in about
        # half of the 2-process runs (9 of 15; both processes; 0 of 6 runs with it off).
        options.autotune.enabled = False
        return ds.map(to_dict).prefetch(prefetch).with_options(options)
