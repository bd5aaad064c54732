"""`bert-jax prepare-data`: corpus -> tokenized examples -> (packed) rows -> ArrayRecord shards.

Streaming with bounded memory: documents are read lazily and cut into chunks of
`docs_per_chunk`; worker processes tokenize a chunk and build its examples; at most
`2 * workers` chunks are in flight. Each chunk draws its randomness from (seed, chunk
index), so the output is the same bytes whatever the number of workers.

Objectives (the example builders follow google-research/bert, albert and electra):
  nsp             [CLS] A [SEP] B [SEP]; B is the true continuation or, with probability
                  0.5, a random stretch of another document of the same chunk (label 1).
  sop             as nsp but B always follows A; with probability 0.5 they are swapped
                  (label 1), as ALBERT's sentence-order prediction.
  full_sentences  RoBERTa: contiguous sentences up to the row, crossing document
                  boundaries (a separator marks them), one segment, no label.
  electra         one segment, or two contiguous segments half of the time, no label.
Short rows: with `short_seq_prob` an example targets a random shorter length, as BERT.
Packing (`pack=True`) fills rows with several short examples, each keeping its own
[CLS] ... [SEP]; the stream then attends within each and restarts positions.

Output: rows-NNNNN.array_record shards and metadata.json (written last: a directory
without it is an interrupted run), with counts of examples, tokens, what was skipped and
why, the vocabulary fingerprint and the config fingerprint.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator

import numpy as np

from bert_jax import storage, writer_lock
from bert_jax.data import corpora, records
from bert_jax.data.records import METADATA
from bert_jax.errors import UserError

OBJECTIVES = ("nsp", "sop", "full_sentences", "electra")
LABELLED = ("nsp", "sop")
TOKENIZER_DIR = "tokenizer"
NOT_SKIPS = ("documents", "sentences_split_over_rows")  # counted, but nothing was lost


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a worker needs to turn a chunk of documents into examples."""

    objective: str
    max_seq_length: int
    short_seq_prob: float
    seed: int
    tokenizer_path: str
    vocab_fingerprint: str  # keys the per-process tokenizer cache: a changed file reloads


# --- example builders (one chunk of documents, one RNG) ------------------------------------
def _truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: random.Random) -> None:
    """Trim the longer segment, from the front or the back at random, as BERT does."""
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        del longer[0 if rng.random() < 0.5 else -1]


def _pair_examples(
    docs: list[list[list[int]]], s: Settings, tok, rng: random.Random, stats: collections.Counter
) -> Iterator[tuple[list[int], list[int], int]]:
    max_tokens = s.max_seq_length - 3
    for d, doc in enumerate(docs):
        if s.objective in LABELLED and len(doc) < 2:
            stats["documents_with_one_sentence"] += 1
            continue
        target = max_tokens if rng.random() >= s.short_seq_prob else rng.randint(2, max_tokens)
        chunk: list[list[int]] = []
        length, i = 0, 0
        while i < len(doc):
            chunk.append(doc[i])
            length += len(doc[i])
            if i == len(doc) - 1 or length >= target:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                a = [t for seg in chunk[:a_end] for t in seg]
                b = [t for seg in chunk[a_end:] for t in seg]
                label = -1
                if s.objective == "nsp":
                    label = 0
                    if not b or rng.random() < 0.5:
                        others = [j for j in range(len(docs)) if j != d and docs[j]]
                        if not others:
                            stats["nsp_pairs_without_another_document"] += 1
                            chunk, length, i = [], 0, i + 1
                            continue
                        other = docs[rng.choice(others)]
                        b = []
                        for seg in other[rng.randint(0, len(other) - 1) :]:
                            b += seg
                            if len(b) >= target - len(a):
                                break
                        i -= len(chunk) - a_end  # the unused segments start the next example
                        label = 1
                elif s.objective == "sop":
                    if not b:
                        stats["sop_chunks_with_one_segment"] += 1
                        chunk, length, i = [], 0, i + 1
                        continue
                    label = 0
                    if rng.random() < 0.5:
                        a, b, label = b, a, 1
                elif rng.random() < 0.5 or not b:  # electra: one segment half of the time
                    a, b = a + b, []
                if b:
                    _truncate_pair(a, b, max_tokens, rng)
                else:
                    del a[max_tokens + 1 :]
                if a:
                    ids, segments = tok.build_pair(a, b or None)
                    yield ids, segments, label
                chunk, length = [], 0
            i += 1
        stats["documents"] += 1


def _full_sentence_examples(
    docs, s: Settings, tok, rng: random.Random, stats: collections.Counter
) -> Iterator[tuple[list[int], list[int], int]]:
    """Whole sentences, contiguous across documents, a separator at each document boundary.
    A row never ends with a separator; a sentence longer than a row is split over rows."""
    max_tokens = s.max_seq_length - 2
    row: list[int] = []
    for doc in docs:
        stats["documents"] += 1
        boundary = bool(row)
        for sentence in doc:
            need = len(sentence) + boundary
            if row and len(row) + need > max_tokens:
                yield *tok.build_pair(row), -1
                row, boundary = [], False
            if boundary:
                row.append(tok.sep_id)  # RoBERTa marks the document boundary with </s>
                boundary = False
            row += sentence
            while len(row) > max_tokens:
                stats["sentences_split_over_rows"] += 1
                yield *tok.build_pair(row[:max_tokens]), -1
                row = row[max_tokens:]
    if row:
        yield *tok.build_pair(row), -1


_TOKENIZERS: dict[tuple[str, str], object] = {}  # per process: (path, fingerprint) -> tokenizer


def _tokenizer(s: Settings):
    key = (s.tokenizer_path, s.vocab_fingerprint)
    if key not in _TOKENIZERS:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from bert_jax.data.tokenizers import load_tokenizer

        _TOKENIZERS.clear()
        _TOKENIZERS[key] = load_tokenizer(s.tokenizer_path)
    return _TOKENIZERS[key]


def process_chunk(job: tuple[int, list[corpora.Document], Settings]):
    """Tokenize one chunk of documents and build its examples: (examples, stats, tokens)."""
    index, docs, s = job
    tok = _tokenizer(s)
    stats: collections.Counter = collections.Counter()
    flat = [sentence for doc in docs for sentence in doc]
    ids = tok.encode_batch_ids(flat)
    tokenized, k = [], 0
    for doc in docs:
        sentences = [x for x in ids[k : k + len(doc)] if x]
        k += len(doc)
        tokenized.append(sentences)
    rng = random.Random(int.from_bytes(hashlib.sha256(f"{s.seed}/{index}".encode()).digest()[:8]))
    build = _full_sentence_examples if s.objective == "full_sentences" else _pair_examples
    examples = list(build(tokenized, s, tok, rng, stats))
    return examples, stats, sum(len(x) for x in ids)


def _chunks(docs: Iterable[corpora.Document], size: int, s: Settings):
    batch: list[corpora.Document] = []
    index = 0
    for doc in docs:
        batch.append(doc)
        if len(batch) == size:
            yield index, batch, s
            index, batch = index + 1, []
    if batch:
        yield index, batch, s


def _ordered_map(fn, jobs, workers: int) -> Iterator:
    """map(fn, jobs) in order, with at most 2 * workers jobs in flight (bounded memory)."""
    if workers <= 1:
        yield from map(fn, jobs)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold TF/JAX
    with ctx.Pool(workers) as pool:
        pending: collections.deque = collections.deque()
        for job in jobs:
            pending.append(pool.apply_async(fn, (job,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


class Packer:
    """First-fit packing of examples into rows of max_len tokens, over a few open rows."""

    def __init__(self, max_len: int, open_rows: int = 8):
        self.max_len, self.open_rows = max_len, open_rows
        self.rows: list[tuple[list[int], list[int], list[int]]] = []

    def add(self, ids: list[int], segments: list[int]) -> Iterator[tuple]:
        for row in self.rows:
            if len(row[0]) + len(ids) <= self.max_len:
                row[0].extend(ids), row[1].extend(segments), row[2].append(len(ids))
                break
        else:
            self.rows.append((list(ids), list(segments), [len(ids)]))
        full = [r for r in self.rows if self.max_len - len(r[0]) < 8]
        if len(self.rows) > self.open_rows:
            full.append(self.rows[0])
        for r in full:
            self.rows.remove(r)
            yield r

    def flush(self) -> Iterator[tuple]:
        yield from self.rows
        self.rows = []


# --- the job ----------------------------------------------------------------------------
def fingerprint(config: dict, vocab_fingerprint: str) -> str:
    """Of everything the rows depend on: the settings, the vocabulary, and the corpus content
    (files by size and mtime, see corpora.identity)."""
    relevant = {k: v for k, v in config.items() if k not in ("num_workers",)}
    blob = json.dumps(
        [records.FORMAT_VERSION, relevant, vocab_fingerprint, corpora.identity(config["corpus"])],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class OtherData(UserError):
    """The output directory holds data prepared from other settings, vocabulary or corpus."""


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Setting paths whose values differ between two prepare configs, e.g. 'max_seq_length'."""
    out = []
    for key in sorted(set(old) | set(new)):
        if key == "num_workers":
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def _check_output(output: str, overwrite: bool, fp: str, config: dict | None = None) -> dict | None:
    """The existing metadata if `output` already holds exactly this data; refuse other data."""
    meta_path = storage.join(output, METADATA)
    if storage.isfile(meta_path):
        meta = storage.read_json(meta_path)
        if meta.get("config_fingerprint") == fp and not overwrite:
            return meta
        if not overwrite:
            changed = differences(meta.get("config") or {}, config or {})
            what = (
                f"other settings ({'; '.join(changed)})"
                if changed
                else "the same settings but another vocabulary or corpus content (a file changed)"
            )
            raise OtherData(
                f"{output} holds data prepared from {what}; prepare again with "
                "--overwrite (pretrain: --config.data.reprepare=True) or use another "
                "directory"
            )
    elif storage.isdir(output) and set(storage.listdir(output)) - {writer_lock.LOCK_FILE} and not overwrite:
        raise UserError(
            f"{output} is not empty and holds no {METADATA} (another directory, or an "
            "interrupted run); use --overwrite to replace it or choose another --output"
        )
    if overwrite and storage.isdir(output):
        # The metadata goes first: data without it is never taken for prepared data.
        ours = storage.glob(storage.join(output, "rows-*.array_record*"))
        for path in [meta_path, storage.join(output, "word_start.npy")] + ours:
            storage.remove(path)
        storage.rmtree(storage.join(output, TOKENIZER_DIR))
    return None


def validate(config: dict) -> None:
    def bad(field, expected):
        raise UserError(f"config.{field}={config.get(field)!r} is invalid: expected {expected}")

    if config["objective"] not in OBJECTIVES:
        bad("objective", "one of " + ", ".join(OBJECTIVES))
    if not 8 <= config["max_seq_length"] <= 65535:
        bad("max_seq_length", "an integer in [8, 65535]")
    if not 0.0 <= config["short_seq_prob"] <= 1.0:
        bad("short_seq_prob", "a probability in [0, 1]")
    if config["pack"] and config["objective"] in LABELLED:
        raise UserError(
            f"config.pack=True with objective={config['objective']!r}: a packed row holds "
            "several sentence pairs, but the NSP/SOP head reads one [CLS] per row; "
            "pack with objective full_sentences or electra"
        )
    if config["docs_per_chunk"] < 2:
        bad("docs_per_chunk", "at least 2 (NSP draws random segments from other documents)")
    if config["rows_per_shard"] < 1:
        bad("rows_per_shard", "a positive integer")


def _train_vocabulary(config: dict, directory: str, log) -> str:
    """Train the configured vocabulary on the corpus itself (one sentence per line)."""
    from bert_jax.data.train_tokenizer import train_tokenizer

    t = config["train_tokenizer"]
    with tempfile.TemporaryDirectory(prefix="bert_jax-vocab-") as tmp:
        text = os.path.join(tmp, "corpus.txt")
        with open(text, "w", encoding="utf-8") as f:
            for doc in corpora.documents(config["corpus"], collections.Counter()):
                f.write("\n".join(s.replace("\n", " ") for s in doc) + "\n")
        summary = train_tokenizer(
            [text], t["model_type"], t["vocab_size"], directory, lowercase=t["lowercase"], overwrite=True
        )
    log(
        f"prepare-data: trained a {t['model_type']} vocabulary of {summary['vocab_size']} on the "
        f"corpus -> {directory}"
    )
    return directory


def prepare(config: dict, output: str, overwrite: bool = False, progress: bool = True, log=print) -> dict:
    """Run prepare-data for a config dict (see configs/data/*.py); returns the metadata.
    One run at a time per output directory (its writer.lock): two runs never interleave shards."""
    config = dict(config)
    validate(config)
    with writer_lock.WriterLock(output, "prepare-data"):
        return _prepare(config, output, overwrite, progress, log)


def _prepare(config: dict, output: str, overwrite: bool, progress: bool, log) -> dict:
    from bert_jax.data.tokenizers import load_tokenizer

    tok_path = config["tokenizer"]
    if tok_path:
        tok = load_tokenizer(tok_path)
        fp = fingerprint(config, tok.vocab_fingerprint())
    else:  # a vocabulary trained on the corpus: a pure function of the config
        fp = fingerprint(config, "trained")
    existing = _check_output(output, overwrite, fp, config)
    if existing is not None:
        log(f"{output} already holds this data ({existing['num_rows']} rows); nothing to do")
        return existing
    storage.makedirs(output)
    if not tok_path:
        tok_path = _train_vocabulary(config, storage.join(output, TOKENIZER_DIR), log)
        tok = load_tokenizer(tok_path)

    settings = Settings(
        config["objective"],
        config["max_seq_length"],
        config["short_seq_prob"],
        config["seed"],
        tok_path,
        tok.vocab_fingerprint(),
    )
    workers = config.get("num_workers") or os.cpu_count() or 1
    stats: collections.Counter = collections.Counter()
    docs = corpora.documents(config["corpus"], stats)
    jobs = _chunks(docs, config["docs_per_chunk"], settings)
    dtype = records.id_dtype(tok.vocab_size)
    packer = Packer(config["max_seq_length"]) if config["pack"] else None

    from array_record.python.array_record_module import ArrayRecordWriter

    shards: list[dict] = []
    writer, shard_rows = None, 0
    totals = collections.Counter()
    start = time.time()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            unit="tok", unit_scale=True, desc="prepare-data", file=sys.stderr, disable=not sys.stderr.isatty()
        )

    # ArrayRecord writes local files only: each shard is written in a local staging directory
    # (the output itself when it is local) and renamed or uploaded whole under its final name.
    staging = output if not storage.is_remote(output) else tempfile.mkdtemp(prefix="bert_jax-rows-")

    def write(ids, segments, lengths, label):
        nonlocal writer, shard_rows
        if writer is None:
            name = f"rows-{len(shards):05d}.array_record"
            writer = ArrayRecordWriter(os.path.join(staging, name + ".tmp"), "group_size:1")
            shards.append({"file": name, "rows": 0})
        writer.write(records.encode_row(ids, segments, lengths, label, dtype))
        shards[-1]["rows"] += 1
        totals["rows"] += 1
        totals["row_tokens"] += len(ids)
        shard_rows += 1
        if shard_rows == config["rows_per_shard"]:
            close()

    def close():
        nonlocal writer, shard_rows
        if writer is not None:
            writer.close()
            local = os.path.join(staging, shards[-1]["file"])
            if storage.is_remote(output):
                storage.copy(local + ".tmp", storage.join(output, shards[-1]["file"]))
                os.remove(local + ".tmp")
            else:
                os.replace(local + ".tmp", local)
            writer, shard_rows = None, 0

    for examples, chunk_stats, n_tokens in _ordered_map(process_chunk, jobs, workers):
        stats.update(chunk_stats)
        totals["corpus_tokens"] += n_tokens
        totals["examples"] += len(examples)
        if bar is not None:
            bar.update(n_tokens)
        for ids, segments, label in examples:
            if packer is None:
                write(ids, segments, [len(ids)], label)
            else:
                for row in packer.add(ids, segments):
                    write(row[0], row[1], row[2], -1)
    if packer is not None:
        for row in packer.flush():
            write(row[0], row[1], row[2], -1)
    close()
    if staging != output:
        shutil.rmtree(staging, ignore_errors=True)
    if bar is not None:
        bar.close()
    seconds = time.time() - start
    if totals["rows"] == 0:
        raise UserError(
            f"the corpus gave no examples (documents: {stats['documents']}, skipped: "
            f"{dict((k, v) for k, v in stats.items() if k not in NOT_SKIPS)}); "
            "check config.corpus"
        )

    meta = {
        "format_version": records.FORMAT_VERSION,
        "config": config,
        "config_fingerprint": fp,
        "tokenizer": storage.absolute(tok_path),
        "vocab_fingerprint": tok.vocab_fingerprint(),
        "vocab_size": tok.vocab_size,
        "id_dtype": dtype.name,
        "special_ids": {
            "cls": tok.cls_id,
            "sep": tok.sep_id,
            "pad": tok.pad_id,
            "mask": tok.mask_id,
            "unk": tok.unk_id,
            "all": sorted(int(i) for i in tok.special_ids),
        },
        "max_seq_length": config["max_seq_length"],
        "objective": config["objective"],
        "packed": bool(config["pack"]),
        "num_rows": totals["rows"],
        "num_examples": totals["examples"],
        "num_tokens": totals["row_tokens"],
        "corpus_tokens": totals["corpus_tokens"],
        "shards": shards,
        "skipped": {k: v for k, v in sorted(stats.items()) if k not in NOT_SKIPS},
        "sentences_split_over_rows": stats["sentences_split_over_rows"],
        "documents": stats["documents"],
        "seconds": round(seconds, 2),
        "workers": workers,
        "tokens_per_second": round(totals["corpus_tokens"] / max(seconds, 1e-9)),
    }
    # Word boundaries travel with the data: whole-word and span masking read them.
    table = io.BytesIO()
    np.save(table, tok.word_start_table().astype(bool), allow_pickle=False)
    storage.write_atomic(storage.join(output, "word_start.npy"), table.getvalue())
    storage.write_json(storage.join(output, METADATA), meta)  # last: it marks the data complete
    log(
        f"prepare-data: {meta['num_rows']} rows ({meta['num_examples']} examples, "
        f"{meta['num_tokens']} tokens) in {len(shards)} shard(s) -> {output} "
        f"[{seconds:.1f}s, {meta['tokens_per_second']:,} corpus tokens/s, {workers} worker(s)]"
    )
    if meta["skipped"]:
        log(f"prepare-data: skipped {meta['skipped']}")
    return meta
