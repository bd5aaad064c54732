"""Metrics out of the train loop: TensorBoard events, a one-line progress bar, throughput
and MFU. Only process 0 writes; values arrive as host floats at log steps only.

Model FLOPs per sequence (training: forward + backward = 3 x forward's 2 FLOPs/MAC):
    6 * S * N_enc  +  12 * L * S^2 * H  +  6 * P * (H^2 + H * V)
N_enc: encoder parameters without the embedding tables (matmul weights: what each token
multiplies through), S: sequence length, L/H: layers/hidden, P: masked positions the MLM
head runs at (S when logits are computed everywhere), V: vocabulary. The middle term is
attention's QK^T and AV matmuls, the last the MLM head (transform + decoder).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import storage
from bert_jax.models.config import EncoderConfig


def encoder_matmul_params(config: EncoderConfig) -> int:
    h, f, e = config.hidden_size, config.intermediate_size, config.embed_dim
    per_layer = 4 * h * h + 2 * h * f
    proj = e * h if config.embedding_projection else 0
    return per_layer * config.num_layers + proj


def flops_per_sequence(config: EncoderConfig, seq_len: int, predictions: int) -> float:
    h, v = config.hidden_size, config.vocab_size
    return (
        6 * seq_len * encoder_matmul_params(config)
        + 12 * config.num_layers * seq_len**2 * h
        + 6 * predictions * (h * h + h * v)
    )


def matmul_ceiling(n: int = 1024, repeats: int = 5, dtype: str = "float32", chain: int = 1) -> float:
    """FLOP/s of n x n `dtype` matmuls on the default device: the MFU denominator.

    Random operands (zeros or ones can run faster than real data on GPUs); `chain` products
    in one call (a fori_loop) so dispatch is not timed on fast devices; the best of `repeats`
    after one warm-up call.
    """
    k1, k2 = jax.random.split(jax.random.key(0))
    a = jax.random.normal(k1, (n, n), jnp.float32).astype(dtype)
    b = (jax.random.normal(k2, (n, n), jnp.float32) / n**0.5).astype(dtype)  # keeps |a| ~ 1
    f = jax.jit(lambda a, b: jax.lax.fori_loop(0, chain, lambda _, a: a @ b, a))
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 * chain / best


def peak_matmul_flops(dtype: str = "float32") -> float:
    """Best matmul FLOP/s in the compute dtype over sizes that fill the device (1024-2048 on
    CPU, 4096-8192 on GPU/TPU), times the device count: the MFU denominator."""
    cpu = jax.default_backend() == "cpu"
    sizes, chain = ((1024, 2048), 1) if cpu else ((4096, 8192), 10)
    return max(matmul_ceiling(n, repeats=5, dtype=dtype, chain=chain) for n in sizes) * jax.device_count()


class Writer:
    """TensorBoard scalars (process 0 only): an event file written with tensorboard's record
    writer and protos, so logging needs no TensorFlow (a fine-tuning run on files never
    imports it). A cloud `logdir` is written locally and its event file uploaded at each flush
    (storage.py owns cloud paths)."""

    def __init__(self, logdir: str, enabled: bool = True):
        self.enabled = enabled
        self._file = None
        self._logdir, self._local = logdir, logdir
        if enabled:
            from tensorboard.compat.proto import event_pb2
            from tensorboard.summary.writer.record_writer import RecordWriter

            if storage.is_remote(logdir):
                self._local = tempfile.mkdtemp(prefix="bert_jax-tensorboard-")
            else:
                os.makedirs(logdir, exist_ok=True)
            name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
            self._file = open(os.path.join(self._local, name), "wb")  # closed in close()
            self._records = RecordWriter(self._file)
            self._event = event_pb2.Event
            self._write(self._event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event) -> None:
        self._records.write(event.SerializeToString())

    def _upload(self) -> None:
        if self._local != self._logdir:
            for name in os.listdir(self._local):
                storage.copy(os.path.join(self._local, name), storage.join(self._logdir, name))

    def scalars(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        if not self.enabled:
            return
        from tensorboard.compat.proto import summary_pb2

        summary = summary_pb2.Summary(
            value=[
                summary_pb2.Summary.Value(tag=prefix + k, simple_value=float(v)) for k, v in values.items()
            ]
        )
        self._write(self._event(wall_time=time.time(), step=int(step), summary=summary))
        self._file.flush()
        self._upload()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._upload()
            if self._local != self._logdir:
                shutil.rmtree(self._local, ignore_errors=True)
            self._file = None


def summarize(sums: dict[str, np.ndarray]) -> dict[str, float]:
    """Metric sums from the objectives -> means and accuracies."""
    out = {}
    for key in ("mlm", "nsp", "sop", "rtd"):
        count = float(sums.get(f"{key}_count", 0))
        if count:
            out[f"{key}_loss"] = float(sums[f"{key}_loss"]) / count
            out[f"{key}_accuracy"] = float(sums[f"{key}_correct"]) / count
    for key in ("loss", "grad_norm", "learning_rate", "nonfinite_total"):
        if key in sums:
            out[key] = float(sums[key])
    return out


class Progress:
    """One line, rewritten in place on a terminal: step, loss, tokens/s, ETA."""

    def __init__(self, total_steps: int, enabled: bool = True):
        self.total, self.enabled = total_steps, enabled
        self.tty = sys.stderr.isatty()

    def update(
        self, step: int, loss: float, tokens_per_s: float, seconds_per_step: float, extra: str = ""
    ) -> None:
        if not self.enabled:
            return
        eta = max(0.0, (self.total - step) * seconds_per_step)
        line = (
            f"step {step}/{self.total}  loss {loss:.4f}  {tokens_per_s:,.0f} tok/s  "
            f"ETA {int(eta // 60)}m{int(eta % 60):02d}s{('  ' + extra) if extra else ''}"
        )
        if self.tty:
            print("\r" + line.ljust(100), end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def newline(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr)
