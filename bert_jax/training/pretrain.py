"""train_and_evaluate(config, workdir): the pretraining job, read top to bottom.

distributed start-up -> mesh -> data (prepared on first use) -> model and optimizer
shapes -> shardings -> state created sharded -> restore the latest checkpoint -> loop:
step, log, evaluate, checkpoint; SIGTERM saves at the next step boundary -> summary.
"""

from __future__ import annotations

import time
import types

import jax
import numpy as np

from bert_jax import storage, writer_lock
from bert_jax.data import masking as masking_lib
from bert_jax.data import prepare, records
from bert_jax.data.pretraining import PretrainingStream, StreamConfig
from bert_jax.errors import UserError
from bert_jax.models.config import EncoderConfig, get_preset
from bert_jax.objectives import OBJECTIVES, networks
from bert_jax.training import checkpointing, distributed, metrics, sharding
from bert_jax.training import step as step_lib
from bert_jax.training import workdir as workdir_lib
from bert_jax.training.state import (
    Settings,
    StateSetup,
    graft,
    newest_readable,
    params_target,
    restore_newest_intact,
)


def encoder_config(config, vocab_size: int):
    m = config.model
    overrides = {
        "dtype": m.dtype,
        "remat_policy": m.remat_policy,
        "scan_layers": m.scan_layers,
        "attention_impl": m.attention_impl,
        "vocab_size": m.vocab_size or vocab_size,
    }
    if m.hidden_dropout >= 0:
        overrides["hidden_dropout"] = m.hidden_dropout
    if m.attention_dropout >= 0:
        overrides["attention_dropout"] = m.attention_dropout
    enc = get_preset(m.preset, **overrides)
    if enc.vocab_size < vocab_size:
        raise UserError(
            f"config.model.vocab_size={enc.vocab_size} is smaller than the data's vocabulary ({vocab_size})"
        )
    return enc


def _data(config, workdir: str) -> str:
    """data.dir, or WORKDIR/data prepared (or found prepared with the same settings, vocabulary
    and corpus content) from data.prepare; other settings are refused by name."""
    if config.data.dir:
        return config.data.dir
    data_dir = storage.join(workdir, "data")
    settings = config.data.prepare.to_dict()

    def run():
        try:
            return prepare.prepare(settings, data_dir)
        except prepare.OtherData:
            if not config.data.reprepare:
                raise
            return prepare.prepare(settings, data_dir, overwrite=True)

    distributed.on_lead(run, "prepare-data")
    return data_dir


def _check_config(config, mesh) -> None:
    """What the config alone decides: checked before any data is prepared or read."""
    if config.objective not in OBJECTIVES:
        raise UserError(f"config.objective={config.objective!r}; choose one of: {', '.join(OBJECTIVES)}")
    for field in (
        "steps",
        "global_batch_size",
        "microbatches",
        "log_every",
        "eval_every",
        "checkpoint_every",
        "keep_checkpoints",
        "max_nonfinite_steps",
    ):
        value = config.train[field]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"config.train.{field}={value!r}; expected a positive integer")
    if config.train.eval_batches < 0:
        raise UserError(f"config.train.eval_batches={config.train.eval_batches}; expected >= 0")
    b, m = config.train.global_batch_size, config.train.microbatches
    if b % m:
        raise UserError(
            f"config.train.global_batch_size={b} does not split into config.train.microbatches={m}"
        )
    if (b // m) % sharding.batch_divisor(mesh):
        raise UserError(
            f"config.train.global_batch_size={b} (microbatches of {b // m}) does not divide "
            f"over the {sharding.batch_divisor(mesh)} data x fsdp shards of the mesh "
            f"{dict(mesh.shape)}"
        )
    preset = get_preset(config.model.preset)
    if not config.data.dir and config.data.prepare.max_seq_length > preset.max_length:
        raise UserError(
            f"config.data.prepare.max_seq_length={config.data.prepare.max_seq_length} exceeds "
            f"{config.model.preset}'s {preset.max_length} positions"
        )


def _check(config, meta, mesh) -> None:
    """What needs the prepared data: its objective, rows, vocabulary and row length."""
    objective = OBJECTIVES[config.objective]
    if meta["objective"] not in objective.DATA:
        raise UserError(
            f"config.objective={config.objective!r} cannot train on {meta['objective']!r} "
            f"data (it needs {' or '.join(objective.DATA)}); prepare the data with a "
            f"matching data config"
        )
    if config.data.eval_rows >= meta["num_rows"]:
        raise UserError(
            f"config.data.eval_rows={config.data.eval_rows} leaves no training rows "
            f"(the data has {meta['num_rows']})"
        )


def train_and_evaluate(config, workdir: str, log=print) -> dict:
    """Pretrain into `workdir`, which this run holds alone (writer_lock) while it runs."""
    distributed.initialize(config.distributed)
    with writer_lock.holding(workdir, "pretrain"):
        return _train_and_evaluate(config, workdir, log)


def _train_and_evaluate(config, workdir: str, log=print) -> dict:
    mesh = sharding.make_mesh(dict(config.mesh))
    lead = jax.process_index() == 0
    say = log if lead else (lambda *a, **k: None)
    storage.makedirs(workdir)
    ckpt = checkpointing.Checkpointer(
        workdir, save_every=config.train.checkpoint_every, keep=config.train.keep_checkpoints
    )
    latest, item, found = _latest(ckpt, config, workdir, say)
    arch = found.encoder if found and (found.kind == workdir_lib.IMPORTED or found.from_import) else None
    job = _prepare(config, workdir, mesh, arch)
    writer = metrics.Writer(storage.join(workdir, "tensorboard"), enabled=lead)
    vars(job).update(lead=lead, say=say, ckpt=ckpt, writer=writer)
    job.state, job.start, job.saved = _start_state(job, latest, item, found)
    try:
        history = _loop(job)
    finally:
        job.writer.close()
        ckpt.close()
    if "preempted_at" in history:
        return history
    summary = {
        "steps": history["step"],
        "workdir": workdir,
        "first_eval": history["first_eval"],
        "final_eval": history["last_eval"],
        "train": history["train"],
        "nonfinite_total": history["nonfinite_total"],
    }
    if lead:
        storage.write_json(storage.join(workdir, "summary.json"), summary)
    say(_closing(summary, config))
    return summary


def _latest(ckpt, config, workdir: str, say):
    """(the newest readable step or None, its JSON item, its record). A run that began from `bert-jax import`
    keeps the imported architecture, and its data the imported tokenizer, resumed too."""
    latest, item = newest_readable(ckpt, ckpt.all_steps(), say)
    if latest is None:
        return None, item, None
    found = workdir_lib.read_record(item, f"{workdir} (step {latest})")
    if found.kind == workdir_lib.IMPORTED or found.from_import:
        if not config.data.dir and not config.data.prepare.tokenizer:
            with config.unlocked():
                config.data.prepare.tokenizer = storage.join(storage.absolute(workdir), workdir_lib.TOKENIZER)
    return latest, item, found


def _prepare(config, workdir: str, mesh, arch) -> types.SimpleNamespace:
    """Data (prepared on first use), its streams, the model's shapes and shardings, the steps."""
    _check_config(config, mesh)
    data_dir = _data(config, workdir)
    meta = records.read_metadata(data_dir)
    _check(config, meta, mesh)
    masking = masking_lib.MaskingConfig(**config.masking.to_dict())
    n_train = meta["num_rows"] - config.data.eval_rows
    here = (jax.process_index(), jax.process_count())
    train_stream = PretrainingStream(
        StreamConfig(data_dir, config.train.global_batch_size, config.train.seed, masking, (0, n_train)),
        *here,
    )
    divisor = sharding.batch_divisor(mesh)
    eval_batch = min(config.train.global_batch_size, config.data.eval_rows // divisor * divisor)
    eval_stream = None
    if eval_batch and config.data.eval_rows:
        eval_range = (n_train, meta["num_rows"])
        eval_stream = PretrainingStream(StreamConfig(data_dir, eval_batch, 0, masking, eval_range), *here)
    enc = _model_config(config, meta, data_dir, arch)
    objective = OBJECTIVES[config.objective]
    setup = StateSetup.for_pretraining(config, enc, mesh)
    seq = meta["max_seq_length"]
    return types.SimpleNamespace(
        config=config,
        workdir=workdir,
        mesh=mesh,
        objective=objective,
        setup=setup,
        record=workdir_lib.Record.pretraining(config, enc, from_import=arch is not None),
        train_stream=train_stream,
        eval_stream=eval_stream,
        eval_batch=eval_batch,
        seq=seq,
        flops=flops_per_step(config, enc, seq),
        train_step=train_step(config, setup, mesh),
        eval_step=step_lib.make_eval_step(
            setup.graphdef,
            lambda model, batch: objective.loss_fn(model, batch, None, objective.denominators(batch))[1],
            mesh,
            setup.param_shardings,
        ),
    )


def train_step(config, setup: StateSetup, mesh):
    """The jitted pretraining step of this config (`bert-jax bench` times the same one)."""
    return step_lib.make_train_step(
        setup.graphdef,
        OBJECTIVES[config.objective],
        setup.tx,
        setup.lr,
        config.train.microbatches,
        mesh,
        setup.shardings,
        config.train.max_nonfinite_steps,
    )


def flops_per_step(config, enc: EncoderConfig, seq: int) -> float:
    """Model FLOPs of one step: every network the objective runs, over the global batch."""
    return config.train.global_batch_size * sum(
        metrics.flops_per_sequence(network, seq, config.masking.max_predictions)
        for network in networks(config.objective, enc, Settings.of(config))
    )


def _model_config(config, meta: dict, data_dir: str, arch) -> EncoderConfig:
    """The preset's (or an import's) architecture, checked against the data."""
    enc = encoder_config(config, meta["vocab_size"])
    if arch is not None:
        m = config.model
        enc = arch.replace(
            dtype=m.dtype,
            remat_policy=m.remat_policy,
            scan_layers=m.scan_layers,
            attention_impl=m.attention_impl,
        )
    if meta["vocab_size"] > enc.vocab_size:
        raise UserError(
            f"{data_dir} uses a vocabulary of {meta['vocab_size']} ids; the model has "
            f"{enc.vocab_size} (ids past the table would embed as NaN)"
        )
    if meta["max_seq_length"] > enc.max_length:
        raise UserError(
            f"{data_dir} holds rows of {meta['max_seq_length']} tokens, more than "
            f"the model's {enc.max_length} positions"
        )
    return enc


def _start_state(job, latest: int | None, item: dict, found) -> tuple[dict, int, int | None]:
    """(state, first step, the step saved last): an import grafted onto a fresh state, the
    newest intact checkpoint restored, or a fresh state; created sharded, never whole."""
    setup, config, workdir = job.setup, job.config, job.workdir
    if found is not None and found.kind == workdir_lib.IMPORTED:
        target = params_target(found.encoder, found.heads, found.num_labels, job.mesh)
        loaded, _ = job.ckpt.restore(latest, target)
        fresh = jax.jit(setup.init, out_shardings=setup.shardings)()
        params = graft(fresh["params"], loaded["params"], job.objective.MODEL)
        opt_state = jax.jit(setup.tx.init, out_shardings=setup.shardings["opt_state"])(params)
        state, start = dict(fresh, params=params, opt_state=opt_state), 0
        job.say(f"continuing pretraining from the imported checkpoint in {workdir}")
    elif latest is not None:
        saved, identity = _normalized(item.get("model")), job.record.model()
        if saved != identity:
            raise UserError(
                f"{workdir} holds a checkpoint (step {latest}) of another model: saved "
                f"{_describe(saved)}, configured {_describe(identity)}"
                f"{_differences(saved, identity)}; use another --workdir"
            )
        state, extra, latest = restore_newest_intact(job.ckpt, latest, setup.target(), job.say)
        start = job.train_stream.check_state(extra["data_state"])
        job.say(f"resumed from {workdir} at step {start}")
    else:
        state, start = jax.jit(setup.init, out_shardings=setup.shardings)(), 0
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(setup.abstract_state["params"]))
    job.say(
        f"pretraining {config.model.preset} ({config.objective}, {n_params:,} parameters) on "
        f"{jax.device_count()} device(s), mesh {dict(job.mesh.shape)}, {jax.process_count()} process(es)"
    )
    return state, start, latest


def _evaluate(job, step: int) -> dict[str, float]:
    """The objective's metrics on the held-out rows, logged at `step`."""
    if job.eval_stream is None:
        return {}
    total: dict[str, float] = {}
    batches = min(job.config.train.eval_batches, max(1, job.eval_stream.num_rows // job.eval_batch))
    for k in range(batches):
        batch = sharding.global_batch(job.eval_stream.host_batch(k), job.mesh)
        for key, v in jax.device_get(job.eval_step(job.state["params"], batch)).items():
            total[key] = total.get(key, 0.0) + float(v)
    result = metrics.summarize(total)
    job.writer.scalars(step, result, "eval/")
    return result


def _save(job, step: int, force: bool = False) -> None:
    item = job.record.to_json(data_state=job.train_stream.state(step))
    if job.ckpt.save(step, job.state, item, force=force):
        job.saved = step


def _loop(job) -> dict:
    """Steps from job.start: log, evaluate, checkpoint; SIGTERM saves at the next step boundary."""
    config, say = job.config, job.say
    history = {"first_eval": None, "last_eval": None, "train": [], "nonfinite_total": 0}
    if job.start == 0:
        history["first_eval"] = _evaluate(job, 0)
        say(f"eval at step 0: {_fmt(history['first_eval'])}")
    progress = metrics.Progress(config.train.steps, enabled=job.lead)
    job.peak = config.train.peak_flops or metrics.peak_matmul_flops(config.model.dtype)
    preemption = distributed.Preemption()
    batches = job.train_stream.dataset(job.start, config.train.steps).as_numpy_iterator()
    job.last = (time.perf_counter(), job.start)
    step = job.start
    try:
        for step in range(job.start + 1, config.train.steps + 1):
            job.state, out = job.train_step(job.state, sharding.global_batch(next(batches), job.mesh))
            if step % config.train.log_every == 0 or step == config.train.steps:
                _log(job, step, out, history, progress)
            if step % config.train.eval_every == 0 and step != config.train.steps:
                progress.newline()
                say(f"eval at step {step}: {_fmt(_evaluate(job, step))}")
            if job.ckpt.should_save(step):
                _save(job, step)
            if preemption.agreed(step):
                progress.newline()
                if job.saved != step:
                    _save(job, step, force=True)
                job.ckpt.wait()
                say(f"SIGTERM: saved step {step} to {job.workdir}; rerun the same command to resume")
                return {"preempted_at": step, "train": history["train"]}
        progress.newline()
        history["last_eval"] = _evaluate(job, step)
        if job.saved != step:
            _save(job, step, force=True)
        job.ckpt.wait()
    finally:
        preemption.restore()
    return dict(history, step=step)


def _log(job, step: int, out, history: dict, progress) -> None:
    """The metrics of a log step (the loop's only host sync); non-finite steps checked."""
    config = job.config
    out = jax.device_get(out)
    now = time.perf_counter()
    sec = (now - job.last[0]) / (step - job.last[1])
    job.last = (now, step)
    values = metrics.summarize(out)
    values.update(
        step_time=sec,
        tokens_per_second=config.train.global_batch_size * job.seq / sec,
        mfu=job.flops / sec / job.peak,
    )
    job.writer.scalars(step, values, "train/")
    history["train"].append({"step": step, **values})
    accuracy = f"mlm acc {values.get('mlm_accuracy', 0):.3f}"
    progress.update(step, values["loss"], values["tokens_per_second"], sec, accuracy)
    history["nonfinite_total"] = int(out["nonfinite_total"])
    if int(out["nonfinite_run"]) >= config.train.max_nonfinite_steps:
        progress.newline()
        raise UserError(
            f"{int(out['nonfinite_run'])} consecutive steps had non-finite loss "
            f"or gradients (each skipped) by step {step} "
            f"({int(out['nonfinite_total'])} in all); lower "
            "config.optim.learning_rate or check the data"
        )


def _fmt(values: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in sorted(values.items()))


def _normalized(identity):
    """A saved identity with its encoder record rebuilt by today's EncoderConfig, so fields
    added since it was written take their defaults (and their normalization)."""
    if not isinstance(identity, dict) or not isinstance(identity.get("encoder"), dict):
        return identity
    try:
        encoder = EncoderConfig.from_dict(identity["encoder"]).architecture()
    except (UserError, TypeError):
        return identity
    return {**identity, "encoder": encoder}


def _differences(saved, configured: dict) -> str:
    if not isinstance(saved, dict):
        return ""
    diff = [
        f"{k}: {saved.get(k)!r} -> {configured.get(k)!r}"
        for k in sorted(configured)
        if k != "encoder" and saved.get(k) != configured.get(k)
    ]
    old, new = saved.get("encoder") or {}, configured["encoder"]
    diff += [
        f"encoder.{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(new) if old.get(k) != new.get(k)
    ]
    return f" (differing: {', '.join(diff)})" if diff else ""


def _describe(identity) -> str:
    if not identity:
        return "an unknown model"
    e = identity["encoder"]
    return f"{identity['objective']} {e['family']} L{e['num_layers']} H{e['hidden_size']} V{e['vocab_size']}"


def _closing(summary: dict, config) -> str:
    lines = ["", f"done: {summary['steps']} steps."]
    first, last = summary["first_eval"] or {}, summary["final_eval"] or {}
    for key in ("mlm_accuracy", "nsp_accuracy", "sop_accuracy", "rtd_accuracy"):
        if key in last:
            before = f"{first[key]:.3f} at the first evaluation -> " if key in first else ""
            lines.append(f"  {key}: {before}{last[key]:.3f} now")
    w = summary["workdir"]
    lines += [
        f"  checkpoints: {w}/checkpoints   TensorBoard: tensorboard --logdir {w}/tensorboard",
        "  resume or extend: rerun the same command (add --config.train.steps=N to go further)",
        f"  embed text with it: bert-jax encode --checkpoint {w} --input FILE --output out.npy",
    ]
    return "\n".join(lines)
