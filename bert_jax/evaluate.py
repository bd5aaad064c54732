"""`bert-jax evaluate`: a checkpoint with a task head scored on its task, predictions written.

checkpoint (a fine-tuning WORKDIR, WORKDIR/seed_<k>, or a Hugging Face directory)
  -> its record (training/workdir.py), the task from its saved config or --config
  -> the head's outputs in the task's label order, on packed or length-bucketed rows
  -> scores (bert_jax/evaluation) and prediction files in OUTPUT (default CHECKPOINT/evaluation)
"""

from __future__ import annotations

import jax
from flax import nnx

from bert_jax import storage
from bert_jax.errors import UserError
from bert_jax.models import model as model_lib
from bert_jax.objectives import tasks
from bert_jax.training import distributed, finetune, sharding, workdir
from bert_jax.training import step as step_lib


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


def evaluate(checkpoint: str, config=None, overrides=(), output: str | None = None, log=print) -> dict:
    """Score a checkpoint with a task head on its task's eval splits and write predictions.

    checkpoint: a fine-tuning WORKDIR (its best seed), WORKDIR/seed_<k>, or a Hugging Face
    directory with a task head (then `config`, a config file spec, names the task). Overrides
    (`task.files.validation=...`, `task.eval_splits=...`) apply to the saved config.
    """
    from bert_jax import config_files
    from bert_jax.data import finetuning

    ckpt = workdir.open(checkpoint, sources=("ours", "hf"))
    checkpoint, record = ckpt.path, ckpt.record
    if ckpt.step is not None and record.kind != workdir.FINETUNED and config is None:
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
    _, eb = finetune.batch_sizes(config, mesh)
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
    enc = finetune.task_encoder_config(config, record.encoder) if "model" in config else record.encoder
    model = model_lib.abstract(enc, heads, num_labels)
    graphdef, abstract = nnx.split(model)
    param_shardings = sharding.param_shardings(abstract, mesh)
    params = sharding.put_global(params, param_shardings)
    eval_step = step_lib.make_eval_step(graphdef, tasks.for_kind(task.kind).predict, mesh, param_shardings)
    if order is not None:  # the checkpoint's outputs in the task's label order
        key, step = tasks.OUTPUTS[task.kind][0], eval_step
        eval_step = lambda p, b: {key: step(p, b)[key][..., order]}  # noqa: E731
    output = output or storage.join(checkpoint, "evaluation")
    lead = jax.process_index() == 0
    splits = {s: task.features(s, training=False) for s in (*task.eval_splits, *task.predict_splits)}
    evals = {s: f for s, f in splits.items() if s in task.eval_splits}
    predicts = {s: f for s, f in splits.items() if s not in task.eval_splits}
    layout = finetune.batch_layout(config, task, eb, mesh)
    result = finetune.score_splits(task, eval_step, params, evals, predicts, eb, mesh, layout, output, lead)
    result["checkpoint"] = ckpt.source
    if lead:
        storage.write_json(storage.join(output, "metrics.json"), result)
    for k, v in result["flat"].items():
        log(f"{task.name} {k}: {v:.4f}")
    log(f"predictions: {', '.join(result['predictions']) or 'none'}")
    return result
