"""`bert-jax encode`: text in, hidden states or pooled sentence vectors out (.npy), streamed.

    input records (bert_jax/encoding/sources.py: text lines, a JSONL field, a CSV/TSV column,
    a TFDS feature; bad ones refused, or skipped and reported)
      -> windows of `window` records; with several processes, window k is process k % N's
      -> [CLS] prefix+text [SEP] with the checkpoint's tokenizer
      -> length-sorted, packed / bucketed batches (bert_jax/encoding/batches.py), sharded over
         this process's devices
      -> the encoder and the pooling, on device:
           none  -> [lines, max_length, hidden], zeros past each line's last token
           cls   -> [lines, hidden], the [CLS] token's last hidden state
           mean  -> [lines, hidden], the mean over the line's tokens (sentence-transformers')
      -> the window's rows back in input order, written as they come (bert_jax/encoding/
         outputs.py): one .npy that lands whole, or .npy shards with a manifest that a rerun
         resumes from.

Memory is bounded by a window and a batch, whatever the input's size.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bert_jax import storage
from bert_jax.encoding import outputs, sources
from bert_jax.encoding.batches import PACK_WIDTH, Batching
from bert_jax.errors import UserError
from bert_jax.training import sharding

POOLINGS = ("cls", "mean", "none")
DTYPES = ("float32", "bfloat16")
CPU_BATCH_ROWS, ACCELERATOR_BATCH_ROWS = 8, 32  # the default --batch-size
WINDOW = 8192  # records sorted, batched and written together (one shard)
NONE_WINDOW_BYTES = 256 << 20  # pooling none: a window's output at most this (one shard)


def load_checkpoint(path: str):
    """(model, tokenizer) from a checkpoint directory: a Hugging Face checkpoint, or one of
    our workdirs (its latest checkpoint; ELECTRA: the discriminator)."""
    from bert_jax.models import model as model_lib
    from bert_jax.training import workdir

    ckpt = workdir.open(path, sources=("ours", "hf"))
    abstract = model_lib.abstract(ckpt.record.encoder)
    model = nnx.merge(nnx.graphdef(abstract), {"encoder": ckpt.encoder_params()})
    return model, ckpt.tokenizer()


def _with_dtype(model, dtype: str):
    """The same weights computing in `dtype` (parameters stay float32)."""
    from bert_jax.models import model as model_lib

    if dtype == model.config.dtype:
        return model
    config = dataclasses.replace(model.config, dtype=dtype)
    abstract = model_lib.abstract(config, model.heads, model.num_labels)
    return nnx.merge(nnx.graphdef(abstract), nnx.state(model))


def _forward_fn(graphdef, pooling: str, normalize: bool):
    def forward(params, ids, mask, packing_ids, cls_positions):
        model = nnx.merge(graphdef, params)
        out = model(ids, mask, packing_ids=packing_ids, cls_positions=cls_positions)
        hidden = out["hidden"].astype(jnp.float32)
        if pooling == "none":
            return hidden * mask[..., None].astype(jnp.float32)
        if pooling == "cls":
            vectors = out["cls"].astype(jnp.float32)  # [R, K, H]
        else:  # the mean over each line's tokens
            k = cls_positions.shape[1]
            member = (packing_ids[:, :, None] == jnp.arange(1, k + 1)[None, None, :]).astype(jnp.float32)
            sums = jnp.einsum("rsk,rsh->rkh", member, hidden, precision=jax.lax.Precision.HIGHEST)
            vectors = sums / jnp.maximum(member.sum(1), 1.0)[..., None]
        if normalize:
            vectors = vectors / jnp.maximum(jnp.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
        return vectors

    return forward


def encode(
    checkpoint: str,
    input_path: str,
    output_path: str,
    pooling: str = "mean",
    max_length: int | None = None,
    batch_size: int = 0,
    normalize: bool = False,
    log=print,
    *,
    batch_tokens: int = 0,
    prefix: str = "",
    dtype: str = "float32",
    field: str = "",
    on_bad_line: str = "error",
    window: int = 0,
    progress: bool = True,
    num_devices: int = 0,
) -> dict:
    """Encode every record of `input_path` into `output_path` (a .npy file, or a directory of
    shards); returns a summary (lines, rows, skipped, tokens, seconds, shapes compiled).
    `num_devices`: use the first that many of this process's devices (0: all of them)."""
    if pooling not in POOLINGS:
        raise UserError(f"--pooling={pooling!r}; choose one of: {', '.join(POOLINGS)}")
    if normalize and pooling == "none":
        raise UserError("--normalize applies to pooled vectors; use --pooling cls or mean")
    if batch_size < 0:
        raise UserError(f"--batch-size={batch_size}; expected a positive integer")
    if batch_tokens < 0:
        raise UserError(f"--batch-tokens={batch_tokens}; expected a positive number of tokens")
    if dtype not in DTYPES:
        raise UserError(f"--dtype={dtype!r}; choose one of: {', '.join(DTYPES)}")
    if window < 0:
        raise UserError(f"--window={window}; expected a positive number of lines")
    inp = sources.Input(input_path, field, on_bad_line)
    inp.check()
    sharded_output = not output_path.endswith(".npy")
    processes, process = jax.process_count(), jax.process_index()
    if processes > 1 and not sharded_output:
        raise UserError(
            f"--output={output_path}: with {processes} processes each writes its own shards; "
            "give a directory, not a .npy file"
        )
    out_dir = output_path if sharded_output else storage.parent(output_path)
    if not sharded_output and not storage.is_remote(out_dir) and not storage.isdir(out_dir):
        raise UserError(f"output directory {out_dir} does not exist")

    model, tokenizer = load_checkpoint(checkpoint)
    if tokenizer.vocab_size > model.config.vocab_size:
        # An id past the embedding table would embed as NaN (jnp.take fills), not fail.
        raise UserError(
            f"{checkpoint}: its tokenizer has {tokenizer.vocab_size} tokens but the model "
            f"only {model.config.vocab_size} embeddings; the vocabulary does not belong "
            "to this model"
        )
    limit = model.config.max_length
    max_length = max_length or min(limit, 512)
    if not 2 <= max_length <= limit:
        raise UserError(f"--max-length={max_length}; this checkpoint takes 2 to {limit} tokens")
    if batch_tokens and batch_tokens < max_length:
        raise UserError(
            f"--batch-tokens={batch_tokens}; a batch must hold at least one row of --max-length "
            f"({max_length}) tokens"
        )
    hidden_size = model.config.hidden_size
    row_shape = (max_length, hidden_size) if pooling == "none" else (hidden_size,)
    if not window:
        per_line = 4 * max_length * hidden_size if pooling == "none" else 1
        window = WINDOW if pooling != "none" else max(1, min(WINDOW, NONE_WINDOW_BYTES // per_line))

    settings = {
        "checkpoint": checkpoint,
        "input": input_path,
        "field": field,
        "pooling": pooling,
        "normalize": normalize,
        "max_length": max_length,
        "prefix": prefix,
        "dtype": dtype,
        "window": window,
        "processes": processes,
    }
    sink = outputs.Shards(output_path, settings, process, processes) if sharded_output else None
    devices = jax.local_devices()
    if not 0 <= num_devices <= len(devices):
        raise UserError(f"num_devices={num_devices}; this process has {len(devices)} device(s)")
    devices = devices[: num_devices or len(devices)]
    if not batch_size:
        # On a CPU, small batches run as fast (their buffers stay in cache) in less memory
        # (benchmarks/RESULTS.md, "Encoding a corpus"); accelerators want more rows.
        batch_size = CPU_BATCH_ROWS if devices[0].platform == "cpu" else ACCELERATOR_BATCH_ROWS
    run = _Runner(model, tokenizer, pooling, normalize, dtype, max_length, batch_size, batch_tokens, devices)
    del model  # the runner holds the parameters on its devices; the host copy can go
    total = inp.count() if progress else None
    meter = _Progress(total, enabled=progress)
    sink = sink or outputs.Npy(output_path, row_shape)
    summary = {"lines": 0, "rows": 0, "skipped": 0, "tokens": 0, "truncated": 0}
    started = time.perf_counter()
    try:
        for index, chunk in enumerate(_windows(inp.records(), window)):
            if index % processes != process or sink.finished(index):
                meter.skip(len(chunk))
                continue
            good = [r for r in chunk if r.text is not None]
            skipped = [[r.number, r.problem] for r in chunk if r.text is None]
            for number, problem in skipped:
                print(f"warning: skipped {inp.where(number)}: {problem}", file=sys.stderr)
            texts = [prefix + r.text for r in good]
            values, tokens, truncated = run(texts) if texts else (np.zeros((0, *row_shape), np.float32), 0, 0)
            if not np.isfinite(values).all():
                bad = np.nonzero(~np.isfinite(values).reshape(len(values), -1).all(1))[0]
                raise UserError(
                    f"non-finite embeddings for {len(bad)} line(s) "
                    f"(first: {inp.where(good[bad[0]].number)}); "
                    f"nothing of window {index} was written to {output_path}"
                )
            meta = {"first_line": chunk[0].number, "last_line": chunk[-1].number, "skipped": skipped}
            sink.write(index, values, meta)
            summary["lines"] += len(chunk)
            summary["rows"] += len(values)
            summary["skipped"] += len(skipped)
            summary["tokens"] += tokens
            summary["truncated"] += truncated
            meter.update(len(chunk))
    except BaseException:
        sink.abort()
        raise
    sink.close()
    meter.done()
    seconds = time.perf_counter() - started
    summary.update(seconds=round(seconds, 3), shapes=len(run.shapes), devices=len(run.devices))
    if summary["truncated"]:
        print(
            f"warning: {summary['truncated']} of {summary['rows']} lines were longer than {max_length} "
            "tokens and were truncated",
            file=sys.stderr,
        )
    notes = [f"{summary['tokens']} tokens"]
    if summary["skipped"]:
        notes.append(f"{summary['skipped']} bad line(s) skipped")
    if getattr(sink, "resumed", 0):
        notes.append(f"{sink.resumed} shard(s) from an earlier run kept")
    rate = 1 / max(seconds, 1e-9)
    log(
        f"encoded {summary['rows']} lines ({', '.join(notes)}) with {checkpoint} -> {output_path} "
        f"[{', '.join(map(str, (summary['rows'], *row_shape)))}] ({pooling} pooling"
        f"{', L2-normalized' if normalize else ''}); {summary['rows'] * rate:.0f} lines/s, "
        f"{summary['tokens'] * rate:.0f} tokens/s on {len(run.devices)} device(s), "
        f"{len(run.shapes)} batch shape(s) compiled"
    )
    return summary


def _windows(records, size: int):
    """Lists of `size` records (the last may be shorter)."""
    it = iter(records)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


class _Runner:
    """texts -> (outputs [n, ...] in their order, tokens, truncated): tokenize, batch, run, place."""

    def __init__(
        self, model, tokenizer, pooling, normalize, dtype, max_length, batch_size, batch_tokens, devices
    ):
        model = _with_dtype(model, dtype)
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.devices = devices
        mesh = sharding.make_mesh({"data": -1}, self.devices)  # this process's devices only
        self.rows_sharding = sharding.batch_sharding(mesh)
        graphdef, params = nnx.split(model)
        self.params = jax.device_put(params, sharding.replicated(mesh))
        self.forward = jax.jit(_forward_fn(graphdef, pooling, normalize))
        pack_width = min(PACK_WIDTH, max_length)
        self.batching = Batching(max_length, pack_width, batch_size, batch_tokens, len(self.devices))
        self.row_shape = (
            (max_length, model.config.hidden_size) if pooling == "none" else (model.config.hidden_size,)
        )
        self.shapes: set[tuple[int, int]] = set()

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, int, int]:
        ids, mask, truncated = self.tokenizer.encode_batch(texts, self.max_length)
        lengths = mask.sum(1)
        out = np.zeros((len(texts), *self.row_shape), np.float32)
        pending = []  # the device runs a batch ahead while the host places the previous one
        for rows, width in self.batching.batches(ids, lengths):
            self.shapes.add((len(rows["input_ids"]), width))
            args = [
                jax.device_put(rows[k], self.rows_sharding)
                for k in ("input_ids", "attention_mask", "packing_ids", "cls_positions")
            ]
            pending.append((rows, self.forward(self.params, *args)))
            if len(pending) > 1:
                _place(out, *pending.pop(0), self.pooling)
        for rows, values in pending:
            _place(out, rows, values, self.pooling)
        return out, int(lengths.sum()), truncated


class _Progress:
    """lines done, lines/s and ETA on stderr: redrawn in place on a terminal, a line every 30 s
    otherwise."""

    def __init__(self, total: int | None, enabled: bool = True):
        self.total, self.enabled = total, enabled
        self.done_lines = self.skipped = 0
        self.start = self.last = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def skip(self, n: int) -> None:
        self.skipped += n  # another process's window, or one a previous run finished

    def update(self, n: int) -> None:
        self.done_lines += n
        now = time.perf_counter()
        if self.enabled and (self.tty or now - self.last >= 30):
            self.last = now
            print(self._line(now), end="\r" if self.tty else "\n", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr)

    def _line(self, now: float) -> str:
        rate = self.done_lines / max(now - self.start, 1e-9)
        text = f"encode: {self.done_lines + self.skipped:,}"
        if self.total:
            remaining = max(0, self.total - self.done_lines - self.skipped)
            eta = remaining / rate if rate else 0
            text += f"/{self.total:,} lines ({rate:,.0f} lines/s, ETA {int(eta) // 60}:{int(eta) % 60:02d})"
        else:
            text += f" lines ({rate:,.0f} lines/s)"
        return text


def _place(out: np.ndarray, rows: dict[str, np.ndarray], vectors: jax.Array, pooling: str) -> None:
    """Put a batch's outputs at their lines' places in the window's output `out`."""
    values = np.asarray(vectors)
    index = rows["example_index"]
    if pooling != "none":
        keep = index >= 0
        out[index[keep]] = values[keep]
        return
    for row, slot in zip(*np.nonzero(index >= 0), strict=True):
        at = int(rows["cls_positions"][row, slot])
        m = int((rows["packing_ids"][row] == slot + 1).sum())
        out[index[row, slot], :m] = values[row, at : at + m]
