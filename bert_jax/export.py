"""`bert-jax export`: one of our checkpoints out as Hugging Face files or a serving artifact.

  --format hf          config.json + model.safetensors + tokenizer files, loadable by
                       transformers v5 with no missing or unexpected weights. Pretraining
                       heads go out as the family's *ForPreTraining / *ForMaskedLM class;
                       ELECTRA as discriminator/ (ElectraForPreTraining) and generator/
                       (ElectraForMaskedLM, holding the shared embeddings) side by side.
  --format stablehlo   jax.export'd StableHLO of the encoder (and its heads), see serving.py
  --format savedmodel  a TF SavedModel with a serving signature, see serving.py
Every export writes manifest.json: the SHA-256 of each file, the source step and config.
An HF export is read back through the name table and refused unless every tensor the
transformers class needs is there and equal to the checkpoint's (hf.verify). The output
appears whole or not at all: it is written beside the target and renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile

from bert_jax import storage
from bert_jax.convert import hf
from bert_jax.errors import UserError

FORMATS = ("hf", "stablehlo", "savedmodel")


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(output: str, source: dict) -> dict:
    files = {}
    for root, _, names in os.walk(output):
        for name in sorted(names):
            full = os.path.join(root, name)
            rel = os.path.relpath(full, output)
            if rel != "manifest.json":
                files[rel] = sha256(full)
    manifest = {"files": dict(sorted(files.items())), "source": source}
    storage.write_json(os.path.join(output, "manifest.json"), manifest)
    return manifest


def export(
    checkpoint: str, fmt: str, output: str, overwrite: bool = False, max_length: int | None = None, log=print
) -> dict:
    from bert_jax.training import workdir

    if fmt not in FORMATS:
        raise UserError(f"--format={fmt!r}; choose one of: {', '.join(FORMATS)}")
    output = output.rstrip("/") or output
    if storage.isfile(output):
        raise UserError(f"--output {output} is a file; expected a directory")
    if storage.isdir(output) and storage.listdir(output) and not overwrite:
        raise UserError(f"output directory {output} is not empty; use --overwrite or another --output")
    if max_length is not None and fmt == "hf":
        raise UserError(
            "--max-length applies to the serving formats (stablehlo, savedmodel); an "
            "hf export keeps the model's whole position table"
        )
    ckpt = workdir.open(checkpoint, sources=("ours",))
    enc = ckpt.record.encoder
    max_length = max_length or enc.max_length
    if not 2 <= max_length <= enc.max_length:
        raise UserError(f"--max-length={max_length}; this model takes 2 to {enc.max_length} tokens")
    # Everything is written into a staging directory (beside `output`, or a local one for a
    # cloud `output`), checked, then moved into place: a failed export leaves no half-written
    # output, and --overwrite leaves no stale file from the previous export.
    if storage.is_remote(output):
        staging = tempfile.mkdtemp(prefix="bert_jax-export-")
    else:
        parent = os.path.dirname(os.path.abspath(output))
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.partial-", dir=parent)
    try:
        manifest = _write(staging, fmt, ckpt, max_length)
        if storage.is_remote(output):
            _upload(staging, output)
        else:
            _move_into_place(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"exported step {ckpt.step} of {ckpt.path} as {fmt} -> {output} ({len(manifest['files'])} files)")
    return manifest


def _upload(staging: str, output: str) -> None:
    """Cloud storage has no directory rename: the old export goes first, then every file, and
    manifest.json last, so an output with a manifest is complete (readers check it)."""
    storage.rmtree(output)
    for name in _files_but_manifest(staging):
        storage.copy(os.path.join(staging, name), storage.join(output, name))
    storage.copy(os.path.join(staging, "manifest.json"), storage.join(output, "manifest.json"))


def _files_but_manifest(root: str) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, n), root)
        for d, _, names in os.walk(root)
        for n in names
        if os.path.relpath(os.path.join(d, n), root) != "manifest.json"
    )


def _move_into_place(staging: str, output: str) -> None:
    old = None
    if os.path.exists(output):
        old = tempfile.mkdtemp(
            prefix=f".{os.path.basename(output)}.old-", dir=os.path.dirname(os.path.abspath(output))
        )
        os.rename(output, os.path.join(old, "export"))
    os.rename(staging, output)
    if old is not None:
        shutil.rmtree(old)


def _write(output: str, fmt: str, ckpt, max_length: int) -> dict:
    record = ckpt.record
    if fmt == "hf":
        from bert_jax.objectives import hf_models

        files = {n: p for n, p in ckpt.tokenizer_files.items() if n in hf.TOKENIZER_FILES}
        for subdir, enc, heads, params in hf_models(record, ckpt.params()):
            hf.save(
                enc,
                heads,
                params,
                os.path.join(output, subdir) if subdir else output,
                tokenizer_files=files,
                num_labels=record.num_labels,
                label_names=record.label_names or None,
            )
    else:
        from flax import nnx

        from bert_jax.convert import serving
        from bert_jax.models import model as model_lib

        abstract = model_lib.abstract(record.encoder, record.heads, record.num_labels)
        model = nnx.merge(nnx.graphdef(abstract), ckpt.model_params())
        if fmt == "stablehlo":
            serving.export_stablehlo(model, output, seq_len=max_length, overwrite=True)
        else:
            serving.export_savedmodel(model, output, seq_len=max_length, overwrite=True)
    return write_manifest(
        output,
        {
            "workdir": storage.absolute(ckpt.path),
            "step": ckpt.step,
            "objective": record.objective or "imported",
            "format": fmt,
            "max_length": max_length if fmt != "hf" else None,
            "config": record.config,
        },
    )
