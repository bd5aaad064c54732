"""`bert-jax import`: a Hugging Face or original TF1 checkpoint into one of our workdirs.

The workdir gets a step-0 checkpoint holding only the parameters (tagged kind=imported,
with the architecture, heads and labels) and the tokenizer files in WORKDIR/tokenizer.
`bert-jax pretrain --workdir WORKDIR` continues pretraining from it (fresh optimizer,
heads the import lacks initialised fresh, data prepared with the imported tokenizer),
`encode` and `export` read it, and fine-tuning starts from it.
"""

from __future__ import annotations

import jax.numpy as jnp

from bert_jax import storage
from bert_jax.errors import UserError

SOURCES = ("hf", "tf1")


def import_checkpoint(kind: str, source: str, output: str, overwrite: bool = False, log=print) -> dict:
    from bert_jax.convert import hf
    from bert_jax.training import checkpointing, workdir

    if kind not in SOURCES:
        raise UserError(f"--from={kind!r}; choose one of: {', '.join(SOURCES)}")
    if storage.isdir(storage.join(output, "checkpoints")) and not overwrite:
        raise UserError(f"{output} already holds checkpoints; use --overwrite or another --output")
    if kind == "hf":
        ckpt = hf.load(storage.fetch(source))
    else:
        from bert_jax.convert import tf1

        ckpt = tf1.load_tf1(storage.fetch(source))
    if overwrite:
        for name in ("checkpoints", workdir.TOKENIZER, "data"):  # old data would not fit the new vocabulary
            storage.rmtree(storage.join(output, name))
    workdir.copy_tokenizer(ckpt.tokenizer_files, storage.join(output, workdir.TOKENIZER))
    params = {"params": _to_jax(ckpt.params)}
    record = workdir.Record(
        workdir.IMPORTED,
        ckpt.config,
        heads=tuple(ckpt.heads),
        num_labels=ckpt.num_labels,
        label_names=tuple(ckpt.label_names or ()),
    )
    extra = record.to_json(source=storage.absolute(source), format=kind)
    with checkpointing.Checkpointer(output, save_every=1, async_save=False) as saver:
        saver.save(0, params, extra, force=True)
    log(
        f"imported {kind} checkpoint {source} ({ckpt.config.family}, heads "
        f"{list(ckpt.heads) or 'none'}) -> {output} (step 0; tokenizer: "
        f"{', '.join(sorted(ckpt.tokenizer_files)) or 'none'})"
    )
    return extra


def _to_jax(tree):
    return {k: _to_jax(v) if isinstance(v, dict) else jnp.asarray(v) for k, v in tree.items()}
