"""Fine-tuning and evaluation: `fine_tune(config, workdir)`, `evaluate(...)`.

  start-up and mesh -> the init checkpoint (encoder + tokenizer) -> task features, built
  once -> for each seed: model (the checkpoint's encoder, a fresh head) created sharded, or
  its saved state restored -> epochs of steps on packed or length-bucketed rows
  (data/finetuning/packing.py), evaluated every epoch (or eval_every steps) -> the best checkpoint by
  the task's main metric -> its scores and predictions -> mean / std / median over seeds.

WORKDIR layout:
  tokenizer/                the init checkpoint's tokenizer files
  seed_<k>/checkpoints/     the best checkpoint of seed k (params only; `bert-jax export`
                            and `bert-jax evaluate` read it), seed_<k>/tokenizer/ beside it
  seed_<k>/state/           the full training state (params, optimizer, step) of an
                            unfinished seed: a rerun continues from it
  seed_<k>/predictions/     GLUE TSVs, SQuAD JSON, CoNLL files of the best checkpoint
  seed_<k>/result.json      its metrics: a rerun skips finished seeds
  results.json, results.md  every metric over the seeds, and the best seed
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bert_jax import host_malloc, storage, writer_lock
from bert_jax.data.finetuning import packing
from bert_jax.errors import UserError
from bert_jax.models import model as model_lib
from bert_jax.models.config import EncoderConfig
from bert_jax.training import checkpointing, distributed, metrics, optim, sharding
from bert_jax.training import workdir as workdir_lib
from bert_jax.training.state import restore_newest_intact

SEED_RESULT = "result.json"


# --- the checkpoint to start from ---------------------------------------------------------


@dataclasses.dataclass
class Init:
    config: EncoderConfig
    encoder: dict  # the encoder's parameters (numpy or jax leaves)
    tokenizer_files: dict[str, str]  # file name -> path
    source: str  # what it was, for logs and results


def load_init(path: str) -> Init:
    """The encoder and tokenizer of one of our workdirs (pretraining, `bert-jax import`,
    fine-tuning), a Hugging Face checkpoint directory, or an original TF1 checkpoint."""
    if not path:
        raise UserError("no checkpoint to start from: pass --init CHECKPOINT (or set config.init)")
    ckpt = workdir_lib.open(path)
    return Init(ckpt.record.encoder, ckpt.encoder_params(), ckpt.tokenizer_files, ckpt.source)


def task_encoder_config(config, enc: EncoderConfig) -> EncoderConfig:
    m = config.model
    enc = enc.replace(
        dtype=m.dtype, remat_policy=m.remat_policy, scan_layers=m.scan_layers, attention_impl=m.attention_impl
    )
    if m.hidden_dropout >= 0:
        enc = enc.replace(hidden_dropout=m.hidden_dropout)
    if m.attention_dropout >= 0:
        enc = enc.replace(attention_dropout=m.attention_dropout)
    return enc


# --- losses and steps ------------------------------------------------------------------------


def task_loss(kind: str, out: dict, batch: dict) -> tuple[jax.Array, jax.Array]:
    """(mean loss, weight) over the batch's real examples. `weights` is 0 on padding: per row
    [batch], or per packed example slot [rows, K] (token labels: per row)."""
    w = batch["weights"]
    if kind == "token_classification":
        labels = batch["labels"]  # [batch, seq], -100 where no word starts
        mask = (labels >= 0) & (w[:, None] > 0)
        ce = optax.softmax_cross_entropy_with_integer_labels(
            out["token_classification_logits"], jnp.maximum(labels, 0)
        )
        n = mask.sum()
        return jnp.where(mask, ce, 0.0).sum() / jnp.maximum(n, 1), n
    if kind == "span":
        # Over the row's tokens only: a padding position is never an answer, and a batch cut
        # to a narrower bucket scores the same as a full-width one.
        tokens = batch["attention_mask"] > 0

        def ce(logits, y):
            return optax.softmax_cross_entropy_with_integer_labels(jnp.where(tokens, logits, -1e9), y)

        per_row = 0.5 * (
            ce(out["start_logits"], batch["start_positions"]) + ce(out["end_logits"], batch["end_positions"])
        )
        keep = w > 0
    elif kind == "regression":
        per_row = jnp.square(out["classification_logits"][..., 0] - jnp.nan_to_num(batch["labels"]))
        keep = (w > 0) & ~jnp.isnan(batch["labels"])
    else:
        labels = batch["labels"]
        per_row = optax.softmax_cross_entropy_with_integer_labels(
            out["classification_logits"], jnp.maximum(labels, 0)
        )
        keep = (w > 0) & (labels >= 0)
    n = keep.sum()
    return jnp.where(keep, per_row, 0.0).sum() / jnp.maximum(n, 1), n


def _forward(model, batch, rng=None):
    """Packed batches carry packing_ids and cls_positions; bucketed ones do not."""
    return model(
        batch["input_ids"],
        batch["attention_mask"],
        batch["segment_ids"],
        packing_ids=batch.get("packing_ids"),
        cls_positions=batch.get("cls_positions"),
        rng=rng,
    )


OUTPUTS = {
    "classification": ("classification_logits",),
    "regression": ("classification_logits",),
    "span": ("start_logits", "end_logits"),
    "token_classification": ("token_classification_logits",),
}


def make_task_step(graphdef, kind: str, tx, lr, mesh, state_shardings):
    def loss_fn(params, batch, rng):
        loss, _ = task_loss(kind, _forward(nnx.merge(graphdef, params), batch, rng), batch)
        return loss

    def step(state, batch):
        rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], batch, rng)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        new = dict(
            state,
            params=optax.apply_updates(state["params"], updates),
            opt_state=opt_state,
            step=state["step"] + 1,
        )
        return new, {"loss": loss, "grad_norm": optax.global_norm(grads), "learning_rate": lr(state["step"])}

    return jax.jit(
        step,
        in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
        out_shardings=(state_shardings, sharding.replicated(mesh)),
        donate_argnums=0,
    )


def make_predict_step(graphdef, kind: str, mesh, param_shardings):
    def step(params, batch):
        out = _forward(nnx.merge(graphdef, params), batch)
        return {k: out[k] for k in OUTPUTS[kind]}

    return jax.jit(
        step,
        in_shardings=(param_shardings, sharding.batch_sharding(mesh)),
        out_shardings=sharding.replicated(mesh),
    )


# --- batches -----------------------------------------------------------------------------


def _batch(host: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
    """A global batch from its host arrays (every process holds all of the task's rows and
    builds the same batch), so each device takes its own slice wherever the mesh puts it (a
    batch replicated over a tensor axis that spans processes included)."""
    spec = sharding.batch_sharding(mesh)
    return {
        k: jax.make_array_from_callback(v.shape, spec, lambda idx, v=v: v[idx])
        for k, v in host.items()
        if k not in packing.HOST_ONLY
    }


def predict(eval_step, params, features, batch_size: int, mesh, layout: packing.Layout) -> dict:
    """The eval outputs for every row of `features` (numpy, on every host), one row per example
    in the split's order whatever the batches' layout."""
    arrays = features.arrays
    parts = []
    for host, indices in layout.eval_batches(arrays, batch_size):
        parts.append((host, indices, jax.device_get(eval_step(params, _batch(host, mesh)))))
    return layout.outputs(parts, len(arrays["input_ids"]), arrays["input_ids"].shape[1])


class _Shapes:
    """Counts the distinct batch shapes a jitted step is called with: one compile each."""

    def __init__(self, step):
        self.step, self.seen = step, set()

    def __call__(self, state, batch):
        self.seen.add(tuple(sorted((k, v.shape) for k, v in batch.items())))
        return self.step(state, batch)


# --- the job -------------------------------------------------------------------------------


def _setup(config, init: Init, task, mesh, total_steps: int):
    enc = task_encoder_config(config, init.config)
    seed = config.train.seed

    def build(seed=seed):
        return model_lib.Model(enc, (task.head,), task.num_labels, rngs=nnx.Rngs(jax.random.key(seed)))

    graphdef, abstract = nnx.split(nnx.eval_shape(build))
    pure = nnx.to_pure_dict(abstract)
    decay = config.optim.layerwise_decay
    if not 0.0 < decay <= 1.0:
        raise UserError(f"config.optim.layerwise_decay={decay} must be in (0, 1]")
    scales = optim.layerwise_scales(pure, enc.num_layers, decay, enc.share_layers) if decay != 1.0 else None
    frac = config.train.warmup_fraction
    if not 0.0 <= frac <= 1.0:
        raise UserError(f"config.train.warmup_fraction={frac} must be in [0, 1]")
    optim_cfg = types.SimpleNamespace(**config.optim.to_dict(), warmup_steps=int(round(frac * total_steps)))
    tx, lr = optim.make(optim_cfg, total_steps, scales, stacked_layers=not enc.share_layers)
    param_shardings = sharding.param_shardings(abstract, mesh)
    rep = sharding.replicated(mesh)

    def init_state(encoder, rng):
        params = nnx.to_pure_dict(nnx.state(build(rng)))
        params["encoder"] = encoder
        return {
            "params": params,
            "opt_state": tx.init(params),
            "step": jnp.zeros((), jnp.int32),
            "rng": jax.random.key_data(jax.random.key(rng)),
        }

    abstract_state = jax.eval_shape(init_state, pure["encoder"], jnp.uint32(0))
    state_shardings = {k: rep for k in abstract_state}
    state_shardings["params"] = param_shardings
    state_shardings["opt_state"] = optax.tree_map_params(
        tx, lambda _, s: s, abstract_state["opt_state"], param_shardings, transform_non_params=lambda _: rep
    )
    _check_encoder(init, pure["encoder"])
    target = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, state_shardings
    )
    return types.SimpleNamespace(
        target=target,
        enc=enc,
        graphdef=graphdef,
        tx=tx,
        lr=lr,
        init_state=init_state,
        state_shardings=state_shardings,
        param_shardings=param_shardings,
    )


def _open_state(seed_dir: str, fingerprint: str, save_every: int, lead: bool, seed: int):
    """(the Checkpointer of seed_dir/state, the newest step to resume from or None). A seed
    directory with no state to resume from (an older run's, or one killed before its first
    save) starts over; one of another config is an error."""
    state_dir = storage.join(seed_dir, "state")

    def open_():
        return checkpointing.Checkpointer(state_dir, save_every=save_every, keep=2)

    if storage.isdir(storage.join(state_dir, "checkpoints")):
        ckpt = open_()
        for step in reversed(ckpt.all_steps()):
            try:
                extra = ckpt.read_extra(step)
            except checkpointing.DamagedCheckpoint:
                continue  # restoring sets it aside once an earlier step is intact
            if extra.get("fingerprint") != fingerprint:
                ckpt.close()
                raise UserError(
                    f"{seed_dir} holds an unfinished run of another config (task, init or "
                    "hyperparameters differ); use another --workdir"
                )
            return ckpt, step
        ckpt.close()
    if lead and storage.isdir(seed_dir):
        storage.rmtree(seed_dir)
    _sync(f"clean-{seed}")
    return open_(), None


def _check_encoder(init: Init, expected: dict) -> None:
    got = dict(jax.tree_util.tree_flatten_with_path(init.encoder)[0])
    for path, want in jax.tree_util.tree_flatten_with_path(expected)[0]:
        have = got.get(path)
        if have is None or tuple(have.shape) != tuple(want.shape):
            raise UserError(
                f"{init.source}: encoder parameter {jax.tree_util.keystr(path)} is "
                f"{None if have is None else tuple(have.shape)}, expected {tuple(want.shape)}"
            )


def _global(tree, shardings):
    """Host values (the same on every process) -> global arrays with these shardings."""

    def put(x, s):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])

    return jax.tree.map(put, tree, shardings)


def _layout(config, task, batch: int, mesh) -> packing.Layout:
    """Packed rows for the tasks that pack (config.train.packing), else length buckets."""
    # .get: `bert-jax evaluate` reads configs saved before these fields existed.
    k = config.train.get("pack_max_per_row", 16)
    if k < 1:
        raise UserError(f"config.train.pack_max_per_row={k} must be >= 1")
    pack = config.train.get("packing", True)
    return packing.Layout.for_task(task.kind, pack, k, batch, sharding.batch_divisor(mesh))


def _check_batch(config, mesh) -> tuple[int, int]:
    b = config.train.global_batch_size
    eb = config.train.eval_batch_size or b
    d = sharding.batch_divisor(mesh)
    for name, v in (("global_batch_size", b), ("eval_batch_size", eb)):
        if v < 1 or v % d:
            raise UserError(
                f"config.train.{name}={v} must be a positive multiple of {d} (the data x "
                f"fsdp shards of the mesh {dict(mesh.shape)})"
            )
    if config.train.epochs <= 0:
        raise UserError(f"config.train.epochs={config.train.epochs} must be > 0")
    return b, eb


def _fingerprint(config) -> str:
    """What makes a seed's result: everything but the seed count, mesh, processes, logging."""
    import hashlib

    c = config.to_dict()
    for key in ("seeds", "mesh", "distributed"):
        c.pop(key, None)
    c["train"] = {k: v for k, v in c["train"].items() if k not in ("log_every", "checkpoint_every")}
    return hashlib.sha256(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _better(value: float, best: float) -> bool:
    return not math.isnan(value) and value > best  # a NaN metric (e.g. constant predictions) never wins


def _flat(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    return {
        f"{split}/{k}": float(v)
        for split, m in scores.items()
        for k, v in m.items()
        if isinstance(v, (int, float, np.floating, np.integer))
    }


def fine_tune(config, workdir: str, log=print) -> dict:
    """Fine-tune into `workdir`, which this run holds alone (writer_lock) while it runs."""
    distributed.initialize(config.distributed)
    with writer_lock.holding(workdir, "finetune"):
        return _fine_tune(config, workdir, log)


def _fine_tune(config, workdir: str, log=print) -> dict:
    from bert_jax.data import finetuning
    from bert_jax.data.tokenizers import load_tokenizer
    from bert_jax.evaluation import metrics as eval_metrics

    # --- start-up, mesh, the init checkpoint, the task's data ---------------------------------
    mesh = sharding.make_mesh(dict(config.mesh))
    lead = jax.process_index() == 0
    say = log if lead else (lambda *a, **k: None)
    if config.seeds < 1:
        raise UserError(f"config.seeds={config.seeds} must be >= 1")
    init = load_init(config.init)
    storage.makedirs(workdir)
    tok_dir = storage.join(workdir, workdir_lib.TOKENIZER)
    if lead:
        workdir_lib.copy_tokenizer(init.tokenizer_files, tok_dir)
    _sync("tokenizer")
    tokenizer = load_tokenizer(tok_dir)
    if tokenizer.vocab_size > init.config.vocab_size:
        raise UserError(
            f"{init.source}: the tokenizer has {tokenizer.vocab_size} tokens but the model's "
            f"vocabulary only {init.config.vocab_size}"
        )
    task = finetuning.load_task(config.task, tokenizer)
    t0 = time.perf_counter()
    if not lead:  # process 0 reads first: a TFDS download and prepare happens once
        _sync("task-data")
    train = task.features(task.train_split, training=True)
    evals = {s: task.features(s, training=False) for s in task.eval_splits}
    predicts = {s: task.features(s, training=False) for s in task.predict_splits}
    if lead:
        _sync("task-data")
    n_train = len(train.arrays["input_ids"])
    described = ", ".join(f"{s} ({len(f.arrays['input_ids'])} rows{_skips(f)})" for s, f in evals.items())
    say(
        f"{task.name}: {n_train} training rows from {train.num_examples} examples{_skips(train)}; "
        f"eval {described or 'none'}; features in {time.perf_counter() - t0:.1f}s"
    )
    if not task.eval_splits:
        raise UserError(
            f"{task.name}: no labelled split to evaluate on; set config.task.eval_splits "
            "(or config.task.files.validation)"
        )
    if n_train == 0:
        raise UserError(
            f"{task.name}: no training rows in split {task.train_split!r} "
            f"({train.num_examples} examples{_skips(train)})"
        )
    batch, eval_batch = _check_batch(config, mesh)
    steps_per_epoch = math.ceil(n_train / batch)
    total = max(1, math.ceil(config.train.epochs * steps_per_epoch))
    eval_every = config.train.eval_every or steps_per_epoch
    if config.train.checkpoint_every < 0:
        raise UserError(f"config.train.checkpoint_every={config.train.checkpoint_every} must be >= 0")
    save_every = config.train.checkpoint_every or eval_every
    setup = _setup(config, init, task, mesh, total)
    layout = _layout(config, task, batch, mesh)
    train_step = _Shapes(
        make_task_step(setup.graphdef, task.kind, setup.tx, setup.lr, mesh, setup.state_shardings)
    )
    eval_step = _Shapes(make_predict_step(setup.graphdef, task.kind, mesh, setup.param_shardings))
    # The encoder's arrays are donated to each seed's state (no second copy while training).
    init_fn = jax.jit(setup.init_state, out_shardings=setup.state_shardings, donate_argnums=0)
    say(
        f"fine-tuning {init.source} on {task.name} ({task.kind}, {len(task.label_names) or 1} "
        f"output(s)): {total} steps of {batch} ({config.train.epochs:g} epochs), {config.seeds} seed(s), "
        f"{jax.device_count()} device(s), mesh {dict(mesh.shape)}"
    )

    # --- one run per seed --------------------------------------------------------------------
    main = f"{task.eval_splits[0]}/{task.main_metric}"
    fingerprint = _fingerprint(config)
    runs = []
    for k in range(config.seeds):
        seed = config.train.seed + k
        seed_dir = storage.join(workdir, f"seed_{seed}")
        done = storage.join(seed_dir, SEED_RESULT)
        if storage.isfile(done):
            earlier = storage.read_json(done)
            if earlier.get("fingerprint") != fingerprint:
                raise UserError(
                    f"{seed_dir} holds a finished run of another config (task, init or "
                    "hyperparameters differ); use another --workdir"
                )
            runs.append(earlier)
            say(f"seed {seed}: finished earlier ({main} {earlier['flat'][main]:.4f}); skipped")
            continue
        # The seed's full state (params, optimizer, step; the data position is the step: each
        # epoch's order comes from (seed, epoch)) is saved under seed_<k>/state every
        # train.checkpoint_every steps and on SIGTERM; an interrupted seed continues from it.
        state_ckpt, resumed = _open_state(seed_dir, fingerprint, save_every, lead, seed)
        if lead and resumed is None:
            workdir_lib.copy_tokenizer(init.tokenizer_files, storage.join(seed_dir, workdir_lib.TOKENIZER))
        t_seed = time.perf_counter()
        writer = metrics.Writer(storage.join(seed_dir, "tensorboard"), enabled=lead)
        ckpt = checkpointing.Checkpointer(seed_dir, save_every=1, keep=1, async_save=False)
        best, best_step, history, start = -math.inf, None, [], 0
        best_outputs = None  # the best evaluation's outputs: its predictions need no second pass
        if resumed is None:
            state = init_fn(_global(init.encoder, setup.param_shardings["encoder"]), jnp.uint32(seed))
        else:
            state, extra, start = restore_newest_intact(state_ckpt, resumed, setup.target, say)
            best, best_step, history = extra["best"], extra["best_step"], extra["history"]
            best = -math.inf if best is None else best
            # A best checkpoint newer than the state is redone, identically, by the steps to come.
            for later in [s for s in ckpt.all_steps() if s > start]:
                ckpt.delete(later)
            say(f"seed {seed}: resumed at step {start} of {total} from {seed_dir}/state")
        if k == config.seeds - 1:
            init = dataclasses.replace(init, encoder=None)  # no later seed needs the host copy
        record = workdir_lib.Record(
            workdir_lib.FINETUNED,
            setup.enc,
            heads=(task.head,),
            num_labels=task.num_labels,
            label_names=tuple(task.label_names),
            config=config.to_dict(),
        )

        saved_at = {"step": start}

        def save_state(state, step: int, force: bool = False) -> None:
            saved_at["step"] = step
            state_ckpt.save(
                step,
                state,
                {
                    "fingerprint": fingerprint,
                    "data_state": {"step": step},
                    "best": None if best_step is None else best,
                    "best_step": best_step,
                    "history": history,
                },
                force=force,
            )

        preemption = distributed.Preemption()
        try:
            for step in range(start, total):
                epoch, within = divmod(step, steps_per_epoch)
                order = np.random.default_rng([seed, epoch]).permutation(n_train)
                order = np.concatenate([order, -np.ones(steps_per_epoch * batch - n_train, np.int64)])
                rows = layout.batch(train.arrays, order[within * batch : (within + 1) * batch])
                state, out = train_step(state, _batch(rows, mesh))
                if step == start:
                    jax.block_until_ready(state)
                    host_malloc.trim()  # the compiler's freed memory (see host_malloc.trim)
                if (step + 1) % config.train.log_every == 0 or step + 1 == total:
                    out = {k: float(v) for k, v in jax.device_get(out).items()}
                    if not math.isfinite(out["loss"]):
                        raise UserError(
                            f"seed {seed}: the loss became {out['loss']} at step {step + 1}; "
                            "lower config.optim.learning_rate"
                        )
                    writer.scalars(step + 1, out, "train/")
                    say(
                        f"seed {seed} step {step + 1}/{total}: loss {out['loss']:.4f} "
                        f"lr {out['learning_rate']:.2e}"
                    )
                if (step + 1) % eval_every == 0 or step + 1 == total:
                    outputs = {
                        s: predict(eval_step, state["params"], f, eval_batch, mesh, layout)
                        for s, f in evals.items()
                    }
                    scores = {s: task.evaluate(s, f, outputs[s])[0] for s, f in evals.items()}
                    flat = _flat(scores)
                    writer.scalars(step + 1, flat, "eval/")
                    history.append({"step": step + 1, **flat})
                    better = _better(flat[main], best) or best_step is None
                    say(
                        f"seed {seed} step {step + 1} eval: "
                        + ", ".join(f"{k} {v:.4f}" for k, v in flat.items())
                        + (" (best)" if better else "")
                    )
                    if better:
                        best, best_step, best_outputs = flat[main], step + 1, outputs
                        ckpt.save(
                            step + 1,
                            {"params": state["params"]},
                            record.to_json(
                                task=config.task.to_dict(), seed=seed, metrics=flat, init=init.source
                            ),
                            force=True,
                        )
                if step + 1 < total and state_ckpt.should_save(step + 1):
                    save_state(state, step + 1)
                    state_ckpt.wait()  # its host copy freed before the next step's buffers
                if (step + 1) % eval_every == 0:
                    host_malloc.trim()  # evaluation's and the saves' freed memory
                if step + 1 < total and preemption.agreed(step + 1):
                    if saved_at["step"] != step + 1:
                        save_state(state, step + 1, force=True)
                    state_ckpt.wait()
                    say(
                        f"SIGTERM: saved seed {seed} at step {step + 1} to {seed_dir}/state; "
                        "rerun the same command to resume"
                    )
                    writer.close()
                    ckpt.close()
                    return {"preempted_at": {"seed": seed, "step": step + 1}}
            state_ckpt.wait()
        finally:
            preemption.restore()
            state_ckpt.close()
        writer.close()
        # The best checkpoint's scores and predictions (GLUE test TSVs, SQuAD JSON, ...): its
        # eval outputs are at hand unless that evaluation ran before a resume; predict-only
        # splits (GLUE test) need its parameters back.
        target = {"params": setup.target["params"]}
        del state
        known = best_outputs or {}
        if predicts or set(evals) - set(known):
            params = ckpt.restore(best_step, target)[0]["params"]
        else:
            params = None
        ckpt.close()
        result = _final(
            task,
            eval_step,
            params,
            evals,
            predicts,
            eval_batch,
            mesh,
            layout,
            storage.join(seed_dir, "predictions"),
            lead,
            known,
        )
        del params, best_outputs
        result.update(
            seed=seed,
            best_step=best_step,
            history=history,
            fingerprint=fingerprint,
            seconds=round(time.perf_counter() - t_seed, 1),
        )
        if lead:
            _write_json(done, result)
        runs.append(result)
        say(
            f"seed {seed}: best {main} {result['flat'][main]:.4f} at step {best_step} "
            f"({result['seconds']:.0f}s; batch shapes compiled so far: {len(train_step.seen)} "
            f"training, {len(eval_step.seen)} evaluation)"
        )

    # --- over the seeds -------------------------------------------------------------------------
    summary = eval_metrics.summarize([r["flat"] for r in runs])
    best_run = max(runs, key=lambda r: -math.inf if math.isnan(r["flat"][main]) else r["flat"][main])
    results = {
        "task": task.name,
        "kind": task.kind,
        "init": init.source,
        "main_metric": main,
        "seeds": [r["seed"] for r in runs],
        "summary": summary,
        "per_seed": {str(r["seed"]): r["flat"] for r in runs},
        "best_seed": best_run["seed"],
        "best_checkpoint": f"seed_{best_run['seed']}",  # relative: the workdir may move
        "skipped": {"train": train.skipped, **{s: f.skipped for s, f in evals.items()}},
    }
    table = format_table(results)
    if lead:
        storage.write_json(storage.join(workdir, workdir_lib.RESULTS), results)
        storage.write_atomic(storage.join(workdir, "results.md"), table + "\n")
    say(table)
    return results


def _final(
    task, eval_step, params, evals, predicts, eval_batch, mesh, layout, out_dir, lead, known=None
) -> dict:
    """Scores and prediction files of `params` on every split; `known`: outputs of these
    params already computed, by split."""
    scores, files = {}, []
    for split, feats in {**evals, **predicts}.items():
        if known and split in known:
            outputs = known[split]
        else:
            outputs = predict(eval_step, params, feats, eval_batch, mesh, layout)
        s, preds = task.evaluate(split, feats, outputs)
        if split in evals:
            scores[split] = s
        if lead:
            storage.makedirs(out_dir)
            files += task.write_predictions(split, preds, out_dir)
    return {"scores": scores, "flat": _flat(scores), "predictions": files}


def _skips(features) -> str:
    return "".join(f", {n} {reason}" for reason, n in features.skipped.items() if n)


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _write_json(path: str, value) -> None:
    storage.write_json(path, value)


def format_table(results: dict) -> str:
    """The results over seeds as a Markdown table: one row per metric."""
    seeds = results["seeds"]
    head = (
        f"{results['task']} from {results['init']}: {len(seeds)} seed(s); best checkpoint by "
        f"{results['main_metric']}: seed {results['best_seed']}"
    )
    columns = ["metric", "mean", "std", "median", "min", "max", *(f"seed {s}" for s in seeds)]
    lines = [head, "", "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for name, s in results["summary"].items():
        per = [results["per_seed"][str(seed)].get(name) for seed in seeds]
        lines.append(
            f"| {name} | {s['mean']:.4f} | {s['std']:.4f} | {s['median']:.4f} | {s['min']:.4f} | "
            f"{s['max']:.4f} | " + " | ".join("-" if v is None else f"{v:.4f}" for v in per) + " |"
        )
    return "\n".join(lines)


def _label_order(have, want, checkpoint: str, task: str) -> list[int] | None:
    """Output columns of a checkpoint labelled `have` that give the task's labels `want`
    (case-insensitive: HF MNLI checkpoints say CONTRADICTION where TFDS says contradiction);
    None when the order is already the task's or the checkpoint's names are generic."""
    if not have or all(n.startswith("LABEL_") for n in have) or tuple(have) == tuple(want):
        return None
    lower = [n.lower() for n in have]
    if sorted(lower) != sorted(n.lower() for n in want):
        raise UserError(
            f"{checkpoint}'s outputs are the labels {list(have)}; {task}'s are {list(want)}: "
            "scoring one against the other would be wrong"
        )
    return [lower.index(n.lower()) for n in want]


# --- bert-jax evaluate ---------------------------------------------------------------------------


def evaluate(checkpoint: str, config=None, overrides=(), output: str | None = None, log=print) -> dict:
    """Score a checkpoint with a task head on its task's eval splits and write predictions.

    checkpoint: a fine-tuning WORKDIR (its best seed), WORKDIR/seed_<k>, or a Hugging Face
    directory with a task head (then `config`, a config file spec, names the task). Overrides
    (`task.files.validation=...`, `task.eval_splits=...`) apply to the saved config.
    """
    from bert_jax import config_files
    from bert_jax.data import finetuning

    ckpt = workdir_lib.open(checkpoint, sources=("ours", "hf"))
    checkpoint, record = ckpt.path, ckpt.record
    if record.kind != workdir_lib.FINETUNED and config is None:
        raise UserError(f"{checkpoint} is not a fine-tuned checkpoint; pass --config to name the task")
    heads, num_labels, label_names = record.heads, record.num_labels, record.label_names
    params, saved = ckpt.model_params(), record.config
    if config is not None:
        config = config_files.load(config, overrides)
    elif saved is not None:
        config = config_files.from_dict(saved, overrides)
    else:
        raise UserError(f"{checkpoint}: a Hugging Face checkpoint needs --config to name the task")
    if label_names and config.task.source == "files" and not config.task.labels:
        # The label set the checkpoint was trained with (the train file need not be here).
        config.task.labels = ",".join(label_names)
    distributed.initialize(config.distributed)
    mesh = sharding.make_mesh(dict(config.mesh))
    _, eb = _check_batch(config, mesh)
    task = finetuning.load_task(config.task, ckpt.tokenizer())
    if task.head not in heads:
        raise UserError(
            f"{checkpoint} has heads {list(heads) or 'none'}; {task.name} needs a {task.head} head"
        )
    if task.head != "span" and num_labels != task.num_labels:
        raise UserError(
            f"{checkpoint} has {num_labels} outputs; {task.name} has {task.num_labels} "
            f"labels ({', '.join(task.label_names)})"
        )
    order = _label_order(label_names, task.label_names, checkpoint, task.name)
    enc = task_encoder_config(config, record.encoder) if "model" in config else record.encoder
    model = model_lib.abstract(enc, heads, num_labels)
    graphdef, abstract = nnx.split(model)
    param_shardings = sharding.param_shardings(abstract, mesh)
    params = _global(params, param_shardings)
    eval_step = make_predict_step(graphdef, task.kind, mesh, param_shardings)
    if order is not None:  # the checkpoint's outputs in the task's label order
        key, step = OUTPUTS[task.kind][0], eval_step
        eval_step = lambda p, b: {key: step(p, b)[key][..., order]}  # noqa: E731
    output = output or storage.join(checkpoint, "evaluation")
    lead = jax.process_index() == 0
    splits = {s: task.features(s, training=False) for s in (*task.eval_splits, *task.predict_splits)}
    evals = {s: f for s, f in splits.items() if s in task.eval_splits}
    predicts = {s: f for s, f in splits.items() if s not in task.eval_splits}
    layout = _layout(config, task, eb, mesh)
    result = _final(task, eval_step, params, evals, predicts, eb, mesh, layout, output, lead)
    result["checkpoint"] = ckpt.source
    if lead:
        _write_json(storage.join(output, "metrics.json"), result)
    for k, v in result["flat"].items():
        log(f"{task.name} {k}: {v:.4f}")
    log(f"predictions: {', '.join(result['predictions']) or 'none'}")
    return result
