"""`bert-jax bench`: the train step alone on synthetic batches (`run`), and the whole
pretraining loop against it (`run_loop`); one JSON line per case.

Builds the same state and jitted step as pretraining (same shardings, donation and
objective), feeds random ids with `masking.max_predictions` masked positions per row, and
reports: preset, sequence length, batch, dtype, compile seconds (lower + compile), median
ms/step after warm-up, tokens/s, model FLOPs per step (training.metrics' formula), MFU
against a matmul ceiling in the compute dtype measured in the same run on the same devices,
peak host memory (max RSS) and, on accelerators, peak device memory. Compare against the
peers in one run on one machine (ratios).

`run_loop` (`--mode loop`) then runs the real pretraining job on the same config: prepared
data through the tf.data stream and host-side masking, metrics fetched at log steps, async
Orbax checkpoints every `train.checkpoint_every` steps, and reports the loop's tokens/s from
the end of the first log interval (compilation) to the last step, checkpoint stalls included,
as a ratio to the synthetic step's.
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.errors import UserError
from bert_jax.models.config import get_preset
from bert_jax.objectives import OBJECTIVES
from bert_jax.training import metrics, sharding
from bert_jax.training.pretrain import encoder_config, flops_per_step, train_step
from bert_jax.training.state import StateSetup


def synthetic_batch(
    rng: np.random.Generator, batch: int, seq: int, predictions: int, vocab: int, heads: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """Random rows with `predictions` masked slots each (as many distinct positions as the
    row has after [CLS]; any slots beyond that are padding with weight 0, as in the stream)."""
    ids = rng.integers(5, vocab, (batch, seq)).astype(np.int32)
    n = min(predictions, seq - 1)
    positions = np.zeros((batch, predictions), np.int32)
    positions[:, :n] = np.sort(
        np.stack([rng.choice(np.arange(1, seq), n, replace=False) for _ in range(batch)]), axis=1
    )
    weights = np.zeros((batch, predictions), np.float32)
    weights[:, :n] = 1.0
    out = {
        "input_ids": ids,
        "segment_ids": np.zeros_like(ids),
        "packing_ids": np.ones_like(ids),
        "position_ids": np.broadcast_to(np.arange(seq, dtype=np.int32), ids.shape).copy(),
        "attention_mask": np.ones_like(ids),
        "masked_positions": positions,
        "masked_ids": np.take_along_axis(ids, positions, 1),
        "masked_weights": weights,
        "row_index": np.arange(batch, dtype=np.int64),
    }
    if {"nsp", "sop"} & set(heads):  # a sentence-pair head
        out["sentence_label"] = rng.integers(0, 2, batch).astype(np.int32)
    return out


def peak_device_mb() -> float | None:
    """Peak bytes in use on the first local accelerator since start (None on CPU)."""
    stats = jax.local_devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
    return round(stats["peak_bytes_in_use"] / 2**20, 1) if stats and "peak_bytes_in_use" in stats else None


def run(config, steps: int = 10, warmup: int = 2, log=print, profile_dir: str | None = None) -> dict:
    mesh = sharding.make_mesh(dict(config.mesh))
    seq = config.data.prepare.max_seq_length
    batch_size = config.train.global_batch_size
    m = config.model
    # The model pretraining builds (dropout, dtype, attention kernel), at the preset's
    # vocabulary unless config.model.vocab_size names one.
    enc = encoder_config(config, m.vocab_size or get_preset(m.preset).vocab_size)
    objective = OBJECTIVES[config.objective]
    setup = StateSetup.for_pretraining(config, enc, mesh)
    state = jax.jit(setup.init, out_shardings=setup.shardings)()
    step_fn = train_step(config, setup, mesh)
    rng = np.random.default_rng(0)
    predictions = config.masking.max_predictions
    batches = [
        sharding.global_batch(
            synthetic_batch(rng, batch_size, seq, predictions, enc.vocab_size, objective.HEADS), mesh
        )
        for _ in range(2)
    ]
    start = time.perf_counter()
    compiled = step_fn.lower(state, batches[0]).compile()
    compile_s = time.perf_counter() - start
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        state, out = compiled(state, batches[i % 2])
        jax.block_until_ready(out["loss"])
        if i >= warmup:
            times.append(time.perf_counter() - t)
    ms = statistics.median(times) * 1e3
    flops = flops_per_step(config, enc, seq)
    ceiling = metrics.peak_matmul_flops(m.dtype)
    result = {
        "preset": m.preset,
        "objective": config.objective,
        "seq_len": seq,
        "batch": batch_size,
        "dtype": m.dtype,
        "remat": m.remat_policy,
        "scan": m.scan_layers,
        "attention": enc.attention_impl,
        "attention_dropout": enc.attention_dropout,
        "device": jax.devices()[0].device_kind,
        "devices": jax.device_count(),
        "compile_s": round(compile_s, 2),
        "ms_per_step": round(ms, 2),
        "tokens_per_s": round(batch_size * seq / (ms / 1e3), 1),
        "model_flops_per_step": flops,
        "achieved_flops": round(flops / (ms / 1e3)),
        "matmul_ceiling_flops": round(ceiling),
        "mfu": round(flops / (ms / 1e3) / ceiling, 4),
        "peak_host_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_device_mb": peak_device_mb(),
        "loss": float(jnp.asarray(out["loss"])),
    }
    log(json.dumps(result))
    if profile_dir:  # 3 more steps under the profiler: TensorBoard's profile plugin / Perfetto
        with jax.profiler.trace(profile_dir, create_perfetto_trace=True):
            for i in range(3):
                state, out = compiled(state, batches[i % 2])
            jax.block_until_ready(out["loss"])
    return result


def run_loop(config, steps: int = 300, workdir: str | None = None, log=print) -> dict:
    """The synthetic step, then the whole loop for `steps` steps; their tokens/s and ratio."""
    from bert_jax.data.records import read_metadata
    from bert_jax.training import pretrain

    if steps <= config.train.log_every:
        raise UserError(f"--steps={steps} must exceed config.train.log_every={config.train.log_every}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = workdir or tmp
        data_dir = pretrain._data(config, workdir)  # prepared first, outside the timing
        with config.unlocked():
            config.data.dir = data_dir
            # The same model in both modes: the data's vocabulary unless one is configured.
            config.model.vocab_size = config.model.vocab_size or read_metadata(data_dir)["vocab_size"]
            config.train.steps = steps
            config.optim.warmup_steps = min(config.optim.warmup_steps, steps)
            config.train.eval_every = steps + 1  # no evaluation inside the timed loop
        synthetic = run(config, steps=10, log=log)
        # Each timed run starts from nothing in a directory of its own: --workdir keeps the
        # prepared data, and a rerun on it neither resumes nor collides with an earlier run.
        os.makedirs(os.path.join(workdir, "loop-runs"), exist_ok=True)
        run_dir = tempfile.mkdtemp(
            prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=os.path.join(workdir, "loop-runs")
        )
        t = time.perf_counter()
        summary = pretrain.train_and_evaluate(config, run_dir, log=lambda *a, **k: None)
        wall = time.perf_counter() - t
    logged = summary["train"]
    timed_steps = logged[-1]["step"] - logged[0]["step"]
    seconds = sum(e["step_time"] * (e["step"] - p["step"]) for p, e in itertools.pairwise(logged))
    tokens = config.train.global_batch_size * config.data.prepare.max_seq_length
    result = {
        "mode": "loop",
        "preset": config.model.preset,
        "steps": steps,
        "timed_steps": timed_steps,
        "checkpoint_every": config.train.checkpoint_every,
        "log_every": config.train.log_every,
        "ms_per_step": round(seconds / timed_steps * 1e3, 2),
        "tokens_per_s": round(tokens * timed_steps / seconds, 1),
        "synthetic_tokens_per_s": synthetic["tokens_per_s"],
        "loop_vs_synthetic": round(tokens * timed_steps / seconds / synthetic["tokens_per_s"], 4),
        "wall_s": round(wall, 1),
        "pid": os.getpid(),
        "peak_host_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    log(json.dumps(result))
    return result
