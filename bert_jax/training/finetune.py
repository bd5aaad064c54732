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
from flax import nnx

from bert_jax import host_malloc, storage, writer_lock
from bert_jax.data.finetuning import packing
from bert_jax.errors import UserError
from bert_jax.models import model as model_lib
from bert_jax.models.config import EncoderConfig
from bert_jax.objectives import tasks
from bert_jax.training import checkpointing, distributed, metrics, optim, sharding
from bert_jax.training import step as step_lib
from bert_jax.training import workdir as workdir_lib
from bert_jax.training.state import StateSetup, restore_newest_intact

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


# --- batches -----------------------------------------------------------------------------


def _batch(host: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
    """The device batch of a step: every process holds all of the task's rows and builds the
    same host batch (sharding.global_batch_from_whole)."""
    return sharding.global_batch_from_whole(
        {k: v for k, v in host.items() if k not in packing.HOST_ONLY}, mesh
    )


def predict(eval_step, params, features, batch_size: int, mesh, layout: packing.Layout) -> dict:
    """The eval outputs for every row of `features` (numpy, on every host), one row per example
    in the split's order whatever the batches' layout."""
    arrays = features.arrays
    parts = []
    for host, indices in layout.eval_batches(arrays, batch_size):
        parts.append((host, indices, jax.device_get(eval_step(params, _batch(host, mesh)))))
    return layout.outputs(parts, len(arrays["input_ids"]), arrays["input_ids"].shape[1])


# --- the job -------------------------------------------------------------------------------


def _setup(config, init: Init, task, mesh, total_steps: int) -> StateSetup:
    """The state of a seed: the init checkpoint's encoder (checked against the task model's
    shapes), a fresh head, the optimizer with warmup and layer-wise decay."""
    enc = task_encoder_config(config, init.config)

    def build(seed):
        return model_lib.Model(enc, (task.head,), task.num_labels, rngs=nnx.Rngs(jax.random.key(seed)))

    pure = nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: build(config.train.seed))))
    _check_encoder(init, pure["encoder"])
    decay = config.optim.layerwise_decay
    if not 0.0 < decay <= 1.0:
        raise UserError(f"config.optim.layerwise_decay={decay} must be in (0, 1]")
    scales = optim.layerwise_scales(pure, enc.num_layers, decay, enc.share_layers) if decay != 1.0 else None
    frac = config.train.warmup_fraction
    if not 0.0 <= frac <= 1.0:
        raise UserError(f"config.train.warmup_fraction={frac} must be in [0, 1]")
    optim_cfg = types.SimpleNamespace(**config.optim.to_dict(), warmup_steps=int(round(frac * total_steps)))
    tx, lr = optim.make(optim_cfg, total_steps, scales, stacked_layers=not enc.share_layers)
    return StateSetup(enc, build, tx, lr, mesh, config.train.seed)


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


def batch_layout(config, task, batch: int, mesh) -> packing.Layout:
    """Packed rows for the tasks that pack (config.train.packing), else length buckets."""
    # .get: `bert-jax evaluate` reads configs saved before these fields existed.
    k = config.train.get("pack_max_per_row", 16)
    if k < 1:
        raise UserError(f"config.train.pack_max_per_row={k} must be >= 1")
    pack = config.train.get("packing", True)
    return packing.Layout.for_task(task.kind, pack, k, batch, sharding.batch_divisor(mesh))


def batch_sizes(config, mesh) -> tuple[int, int]:
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
    job = _prepare(config, workdir, log)
    runs = []
    for k in range(config.seeds):
        result = _run_seed(job, k)
        if "preempted_at" in result:
            return result
        runs.append(result)
    return _summarize(job, runs)


def _prepare(config, workdir: str, log) -> types.SimpleNamespace:
    """Start-up, mesh, the init checkpoint, the task's features, the state's setup, the steps."""
    mesh = sharding.make_mesh(dict(config.mesh))
    lead = jax.process_index() == 0
    say = log if lead else (lambda *a, **k: None)
    if config.seeds < 1:
        raise UserError(f"config.seeds={config.seeds} must be >= 1")
    init = load_init(config.init)
    task = _task(config, init, workdir, lead)
    train, evals, predicts = _features(task, lead, say)
    n_train = len(train.arrays["input_ids"])
    batch, eval_batch = batch_sizes(config, mesh)
    steps_per_epoch = math.ceil(n_train / batch)
    total = max(1, math.ceil(config.train.epochs * steps_per_epoch))
    eval_every = config.train.eval_every or steps_per_epoch
    if config.train.checkpoint_every < 0:
        raise UserError(f"config.train.checkpoint_every={config.train.checkpoint_every} must be >= 0")
    setup = _setup(config, init, task, mesh, total)
    objective = tasks.for_kind(task.kind)
    max_nonfinite = config.train.max_nonfinite_steps
    train_step = step_lib.make_train_step(
        setup.graphdef, objective, setup.tx, setup.lr, 1, mesh, setup.shardings, max_nonfinite
    )
    eval_step = step_lib.make_eval_step(setup.graphdef, objective.predict, mesh, setup.param_shardings)
    say(
        f"fine-tuning {init.source} on {task.name} ({task.kind}, {len(task.label_names) or 1} "
        f"output(s)): {total} steps of {batch} ({config.train.epochs:g} epochs), {config.seeds} seed(s), "
        f"{jax.device_count()} device(s), mesh {dict(mesh.shape)}"
    )
    return types.SimpleNamespace(
        config=config,
        workdir=workdir,
        mesh=mesh,
        lead=lead,
        say=say,
        init=init,
        task=task,
        train=train,
        evals=evals,
        predicts=predicts,
        n_train=n_train,
        batch=batch,
        eval_batch=eval_batch,
        steps_per_epoch=steps_per_epoch,
        total=total,
        eval_every=eval_every,
        save_every=config.train.checkpoint_every or eval_every,
        setup=setup,
        layout=batch_layout(config, task, batch, mesh),
        train_step=step_lib.Shapes(train_step),
        eval_step=step_lib.Shapes(eval_step),
        # The encoder's arrays are donated to each seed's state (no second copy while training).
        init_fn=jax.jit(setup.init, out_shardings=setup.shardings, donate_argnums=1),
        max_nonfinite=max_nonfinite,
        main=f"{task.eval_splits[0]}/{task.main_metric}",
        fingerprint=_fingerprint(config),
    )


def _task(config, init: Init, workdir: str, lead: bool):
    """The task, with the init checkpoint's tokenizer (copied into WORKDIR/tokenizer)."""
    from bert_jax.data import finetuning
    from bert_jax.data.tokenizers import load_tokenizer

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
    return finetuning.load_task(config.task, tokenizer)


def _features(task, lead: bool, say):
    """(train, evals, predicts): the task's rows, built once for every seed."""
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
    return train, evals, predicts


def _run_seed(job, k: int) -> dict:
    """One seed: started fresh or resumed from its saved state, trained, its best checkpoint
    scored. Returns its result, or {"preempted_at": ...} after a SIGTERM save."""
    seed = job.config.train.seed + k
    seed_dir = storage.join(job.workdir, f"seed_{seed}")
    done = storage.join(seed_dir, SEED_RESULT)
    if storage.isfile(done):
        earlier = storage.read_json(done)
        if earlier.get("fingerprint") != job.fingerprint:
            raise UserError(
                f"{seed_dir} holds a finished run of another config (task, init or "
                "hyperparameters differ); use another --workdir"
            )
        job.say(f"seed {seed}: finished earlier ({job.main} {earlier['flat'][job.main]:.4f}); skipped")
        return earlier
    t_seed = time.perf_counter()
    run = _start_seed(job, seed, seed_dir)
    if k == job.config.seeds - 1:
        job.init = dataclasses.replace(job.init, encoder=None)  # no later seed needs the host copy
    try:
        preempted = _train_seed(job, run)
    finally:
        run.state_ckpt.close()
        run.writer.close()
    if preempted:
        run.ckpt.close()
        return {"preempted_at": {"seed": seed, "step": preempted}}
    result = _score_best(job, run)
    result.update(
        seed=seed,
        best_step=run.best_step,
        history=run.history,
        fingerprint=job.fingerprint,
        seconds=round(time.perf_counter() - t_seed, 1),
    )
    if job.lead:
        _write_json(done, result)
    job.say(
        f"seed {seed}: best {job.main} {result['flat'][job.main]:.4f} at step {run.best_step} "
        f"({result['seconds']:.0f}s; batch shapes compiled so far: {len(job.train_step.seen)} "
        f"training, {len(job.eval_step.seen)} evaluation)"
    )
    return result


def _start_seed(job, seed: int, seed_dir: str) -> types.SimpleNamespace:
    """A seed's state, fresh or restored. The full state (params, optimizer, step; the data
    position is the step: each epoch's order comes from (seed, epoch)) is saved under
    seed_<k>/state every train.checkpoint_every steps and on SIGTERM; an interrupted seed
    continues from it. seed_<k>/checkpoints holds its best parameters."""
    state_ckpt, resumed = _open_state(seed_dir, job.fingerprint, job.save_every, job.lead, seed)
    if job.lead and resumed is None:
        workdir_lib.copy_tokenizer(job.init.tokenizer_files, storage.join(seed_dir, workdir_lib.TOKENIZER))
    run = types.SimpleNamespace(
        seed=seed,
        seed_dir=seed_dir,
        fingerprint=job.fingerprint,
        state_ckpt=state_ckpt,
        ckpt=checkpointing.Checkpointer(seed_dir, save_every=1, keep=1, async_save=False),
        writer=metrics.Writer(storage.join(seed_dir, "tensorboard"), enabled=job.lead),
        best=-math.inf,
        best_step=None,
        best_outputs=None,  # the best evaluation's outputs: its predictions need no second pass
        history=[],
        start=0,
        record=workdir_lib.Record(
            workdir_lib.FINETUNED,
            job.setup.enc,
            heads=(job.task.head,),
            num_labels=job.task.num_labels,
            label_names=tuple(job.task.label_names),
            config=job.config.to_dict(),
        ),
    )
    if resumed is None:
        encoder = sharding.put_global(job.init.encoder, job.setup.param_shardings["encoder"])
        run.state = job.init_fn(jnp.uint32(seed), encoder)
        del encoder
    else:
        run.state, extra, run.start = restore_newest_intact(state_ckpt, resumed, job.setup.target(), job.say)
        run.best, run.best_step, run.history = extra["best"], extra["best_step"], extra["history"]
        run.best = -math.inf if run.best is None else run.best
        # A best checkpoint newer than the state is redone, identically, by the steps to come.
        for later in [s for s in run.ckpt.all_steps() if s > run.start]:
            run.ckpt.delete(later)
        job.say(f"seed {seed}: resumed at step {run.start} of {job.total} from {seed_dir}/state")
    run.saved_at = run.start
    return run


def _save_state(run, step: int, force: bool = False) -> None:
    run.saved_at = step
    run.state_ckpt.save(
        step,
        run.state,
        {
            "fingerprint": run.fingerprint,
            "data_state": {"step": step},
            "best": None if run.best_step is None else run.best,
            "best_step": run.best_step,
            "history": run.history,
        },
        force=force,
    )


def _train_seed(job, run) -> int | None:
    """The seed's steps from run.start; the step a SIGTERM stopped it at, or None."""
    preemption = distributed.Preemption()
    try:
        for step in range(run.start, job.total):
            epoch, within = divmod(step, job.steps_per_epoch)
            order = np.random.default_rng([run.seed, epoch]).permutation(job.n_train)
            order = np.concatenate([order, -np.ones(job.steps_per_epoch * job.batch - job.n_train, np.int64)])
            rows = job.layout.batch(job.train.arrays, order[within * job.batch : (within + 1) * job.batch])
            run.state, out = job.train_step(run.state, _batch(rows, job.mesh))
            if step == run.start:
                jax.block_until_ready(run.state)
                host_malloc.trim()  # the compiler's freed memory (see host_malloc.trim)
            if (step + 1) % job.config.train.log_every == 0 or step + 1 == job.total:
                _log_step(job, run, step + 1, out)
            if (step + 1) % job.eval_every == 0 or step + 1 == job.total:
                _evaluate_step(job, run, step + 1)
            if step + 1 < job.total and run.state_ckpt.should_save(step + 1):
                _save_state(run, step + 1)
                run.state_ckpt.wait()  # its host copy freed before the next step's buffers
            if (step + 1) % job.eval_every == 0:
                host_malloc.trim()  # evaluation's and the saves' freed memory
            if step + 1 < job.total and preemption.agreed(step + 1):
                if run.saved_at != step + 1:
                    _save_state(run, step + 1, force=True)
                run.state_ckpt.wait()
                job.say(
                    f"SIGTERM: saved seed {run.seed} at step {step + 1} to {run.seed_dir}/state; "
                    "rerun the same command to resume"
                )
                return step + 1
        run.state_ckpt.wait()
    finally:
        preemption.restore()
    return None


def _log_step(job, run, step: int, out) -> None:
    out = {k: float(v) for k, v in jax.device_get(out).items()}
    if out["nonfinite_run"] >= job.max_nonfinite:
        raise UserError(
            f"seed {run.seed}: {int(out['nonfinite_run'])} consecutive steps had a non-finite "
            f"loss or gradients (skipped) up to step {step}; lower config.optim.learning_rate"
        )
    run.writer.scalars(step, out, "train/")
    job.say(f"seed {run.seed} step {step}/{job.total}: loss {out['loss']:.4f} lr {out['learning_rate']:.2e}")


def _evaluate_step(job, run, step: int) -> None:
    """Score the eval splits; a new best is saved as the seed's checkpoint."""
    outputs = {
        s: predict(job.eval_step, run.state["params"], f, job.eval_batch, job.mesh, job.layout)
        for s, f in job.evals.items()
    }
    flat = _flat({s: job.task.evaluate(s, f, outputs[s])[0] for s, f in job.evals.items()})
    run.writer.scalars(step, flat, "eval/")
    run.history.append({"step": step, **flat})
    better = _better(flat[job.main], run.best) or run.best_step is None
    job.say(
        f"seed {run.seed} step {step} eval: "
        + ", ".join(f"{k} {v:.4f}" for k, v in flat.items())
        + (" (best)" if better else "")
    )
    if better:
        run.best, run.best_step, run.best_outputs = flat[job.main], step, outputs
        item = run.record.to_json(
            task=job.config.task.to_dict(), seed=run.seed, metrics=flat, init=job.init.source
        )
        run.ckpt.save(step, {"params": run.state["params"]}, item, force=True)


def _score_best(job, run) -> dict:
    """The best checkpoint's scores and predictions (GLUE test TSVs, SQuAD JSON, ...): its eval
    outputs are at hand unless that evaluation ran before a resume; predict-only splits (GLUE
    test) need its parameters back."""
    target = {"params": job.setup.target()["params"]}
    del run.state
    known = run.best_outputs or {}
    run.best_outputs = None
    params = None
    if job.predicts or set(job.evals) - set(known):
        params = run.ckpt.restore(run.best_step, target)[0]["params"]
    run.ckpt.close()
    out_dir = storage.join(run.seed_dir, "predictions")
    return score_splits(
        job.task,
        job.eval_step,
        params,
        job.evals,
        job.predicts,
        job.eval_batch,
        job.mesh,
        job.layout,
        out_dir,
        job.lead,
        known,
    )


def _summarize(job, runs: list[dict]) -> dict:
    """Every metric over the seeds, and the best seed: results.json and results.md."""
    from bert_jax.evaluation import metrics as eval_metrics

    main, task = job.main, job.task
    best_run = max(runs, key=lambda r: -math.inf if math.isnan(r["flat"][main]) else r["flat"][main])
    results = {
        "task": task.name,
        "kind": task.kind,
        "init": job.init.source,
        "main_metric": main,
        "seeds": [r["seed"] for r in runs],
        "summary": eval_metrics.summarize([r["flat"] for r in runs]),
        "per_seed": {str(r["seed"]): r["flat"] for r in runs},
        "best_seed": best_run["seed"],
        "best_checkpoint": f"seed_{best_run['seed']}",  # relative: the workdir may move
        "skipped": {"train": job.train.skipped, **{s: f.skipped for s, f in job.evals.items()}},
    }
    table = format_table(results)
    if job.lead:
        storage.write_json(storage.join(job.workdir, workdir_lib.RESULTS), results)
        storage.write_atomic(storage.join(job.workdir, "results.md"), table + "\n")
    job.say(table)
    return results


def score_splits(
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
