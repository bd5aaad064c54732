"""What XLA:CPU compile time a training step is made of (issue #19: CI time is mostly compiles).

Builds `Model(<preset>, classification)` and compiles, with and without dropout, three
programs over the same batch: the forward pass, forward + backward (`jax.grad`), and a whole
step (grad, global-norm clipping, AdamW, apply). Each is lowered once and compiled once; the
figure is the compile alone (`lowered.compile()`), in seconds. No persistent cache is used.

    .venv/bin/python benchmarks/compile_breakdown.py [--preset bert-tiny] [--devices 1]

Session 8 (bert-tiny, 1 device, batch 8 x 32): forward 4.1 s with dropout vs 0.9 s without,
grad 7.5 vs 4.7 s, whole step 9.8 vs 7.7 s: dropout's threefry bits cost 2-3 s a compile.
The same run alongside a CI run (2 cores shared): 7.4 vs 1.7, 14.1 vs 8.5, 20.2 vs 13.0 s.
Session 9, after one threefry draw per block (layers.keep_masks): forward 2.1 vs 1.0 s, grad
5.6 vs 4.7 s, step 8.2 vs 7.2 s (benchmarks/RESULTS.md has both runs and run times).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="bert-tiny")
    parser.add_argument("--devices", type=int, default=1, help="fake CPU devices (XLA_FLAGS)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=32)
    parser.add_argument("--xla-flags", default="", help="more XLA_FLAGS")
    parser.add_argument("--runs", type=int, default=20, help="timed calls (run_ms)")
    args = parser.parse_args()
    flags = f"--xla_force_host_platform_device_count={args.devices} {args.xla_flags}"
    os.environ["XLA_FLAGS"] = flags.strip()
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)

    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from bert_jax.models import model as M
    from bert_jax.models.config import get_preset

    ids = jnp.ones((args.batch, args.seq), jnp.int32)
    mask = jnp.ones((args.batch, args.seq), jnp.int32)
    segments = jnp.zeros((args.batch, args.seq), jnp.int32)
    rows = []
    for rate in (0.1, 0.0):
        config = dataclasses.replace(get_preset(args.preset), hidden_dropout=rate, attention_dropout=rate)
        graphdef, params = nnx.split(M.Model(config, ("classification",), 4, rngs=nnx.Rngs(0)), nnx.Param)
        tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3, weight_decay=0.01))
        opt_state = tx.init(params)
        key = jax.random.key(0)

        def loss(p, key, rate=rate, graphdef=graphdef):
            out = nnx.merge(graphdef, p)(ids, mask, segments, rng=key if rate else None)
            return out["classification_logits"].sum()

        def step(p, s, key, tx=tx, loss=loss):
            updates, s = tx.update(jax.grad(loss)(p, key), s, p)
            return optax.apply_updates(p, updates), s

        programs = {
            "forward": (loss, (params, key)),
            "grad": (jax.grad(loss), (params, key)),
            "step": (step, (params, opt_state, key)),
        }
        for name, (fn, fn_args) in programs.items():
            lowered = jax.jit(fn).lower(*fn_args)
            start = time.perf_counter()
            compiled = lowered.compile()
            seconds = round(time.perf_counter() - start, 2)
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                jax.block_until_ready(compiled(*fn_args))
                times.append(time.perf_counter() - start)
            run_ms = round(1000 * sorted(times)[len(times) // 2], 2) if times else None
            rows.append({"program": name, "dropout": rate, "compile_s": seconds, "run_ms": run_ms})
            print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
