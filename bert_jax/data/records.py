"""The on-disk format of prepared pretraining data: rows, batch decoding, and the directory's
metadata.json (`METADATA`, `read_metadata`).

A row is one model input: one example, or several short ones packed together. Rows are
stored one per ArrayRecord record (random access by index is what makes resuming at step k
cost one read), little-endian:

    uint16 length L | uint8 sequences K | int8 label (-1: none)
    ids: L x uint16 (or int32 when the vocabulary has over 65,535 ids)
    segment ids: L x uint8
    sequence lengths: K x uint16 (they sum to L)
"""

from __future__ import annotations

import struct

import numpy as np

from bert_jax import storage
from bert_jax.errors import UserError

HEADER = struct.Struct("<HBb")
FORMAT_VERSION = 1
METADATA = "metadata.json"  # beside the shards: settings, tokenizer, counts; written last


def id_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.int32)


def encode_row(
    ids: np.ndarray, segments: np.ndarray, lengths: list[int], label: int, dtype: np.dtype
) -> bytes:
    return (
        HEADER.pack(len(ids), len(lengths), label)
        + np.asarray(ids, dtype).tobytes()
        + np.asarray(segments, np.uint8).tobytes()
        + np.asarray(lengths, "<u2").tobytes()
    )


def decode_rows(records: list[bytes], seq_len: int, dtype: np.dtype, pad_id: int) -> dict[str, np.ndarray]:
    """Rows into padded arrays [batch, seq_len]; packing ids are 1..K per sequence, 0 for padding."""
    b = len(records)
    ids = np.full((b, seq_len), pad_id, np.int32)
    segments = np.zeros((b, seq_len), np.int32)
    packing = np.zeros((b, seq_len), np.int32)
    positions = np.zeros((b, seq_len), np.int32)
    labels = np.zeros((b,), np.int32)
    width = dtype.itemsize
    for i, rec in enumerate(records):
        n, k, labels[i] = HEADER.unpack_from(rec)
        start = HEADER.size
        ids[i, :n] = np.frombuffer(rec, dtype, n, start)
        segments[i, :n] = np.frombuffer(rec, np.uint8, n, start + n * width)
        if k == 1:
            packing[i, :n] = 1
            positions[i, :n] = np.arange(n)
        else:
            lengths = np.frombuffer(rec, "<u2", k, start + n * width + n).astype(np.int64)
            packing[i, :n] = np.repeat(np.arange(1, k + 1), lengths)
            starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
            positions[i, :n] = np.arange(n) - starts
    return {
        "input_ids": ids,
        "segment_ids": segments,
        "packing_ids": packing,
        "position_ids": positions,
        "attention_mask": (packing > 0).astype(np.int32),
        "label": labels,
    }


def read_metadata(data_dir: str) -> dict:
    """The metadata of a prepared data directory, checked: format version, every shard present."""
    path = storage.join(data_dir, METADATA)
    if not storage.isdir(data_dir):
        raise UserError(f"data directory {data_dir} does not exist; run bert-jax prepare-data first")
    if not storage.isfile(path):
        raise UserError(
            f"{data_dir} holds no {METADATA}: not prepared data, or an interrupted prepare-data run"
        )
    meta = storage.read_json(path)
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{path}: format_version {meta.get('format_version')}, this bert_jax reads "
            f"{FORMAT_VERSION}; prepare the data again"
        )
    present = set(storage.listdir(data_dir))
    missing = [s["file"] for s in meta["shards"] if s["file"] not in present]
    if missing:
        raise UserError(f"{data_dir}: shard file(s) listed in {METADATA} are missing: {', '.join(missing)}")
    return meta
