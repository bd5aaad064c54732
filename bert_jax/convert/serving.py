"""Serving exports of a `Model`: StableHLO through `jax.export`, and a TF SavedModel through jax2tf.

Both take what a tokenizer gives, three int32 tensors [batch, seq_len] named `input_ids`,
`attention_mask` and `token_type_ids`, and return the model's outputs by name (`hidden`,
`pooled`, `<head>_logits`; `outputs=` picks some). Inference only: no dropout, no gradient.
The batch dimension is symbolic unless `batch=` fixes it; seq_len is fixed because the
position table and every caller's padding are.

StableHLO directory (`export_stablehlo`, read back by `load_stablehlo`):
  model.stablehlo         `jax.export` serialization of (params, ids, mask, types) -> outputs
  params.npz              the parameters, one array per path, in the module's argument order
  serving_signature.json  inputs, outputs, shapes (null = any batch), dtypes, platforms

Parameters travel beside the module rather than baked into it as constants: a serialized
module is a flatbuffer capped at 2 GiB (bert-large in fp32 is 1.3 GiB), and without the
weights the module is tens of KB, so the weights can be swapped without re-exporting.

SavedModel directory (`export_savedmodel`): a standard SavedModel whose `serving_default`
signature takes the three inputs as int32 [None, seq_len]; the parameters are non-trainable
tf.Variables fed to the jax2tf-converted (natively serialized StableHLO) function, plus the
same serving_signature.json. Load it with `tf.saved_model.load(dir)`.

Modules are lowered for the platform this process runs on unless `platforms=` names others
(e.g. ("cpu", "cuda") to export on a laptop and serve on a GPU).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bert_jax.errors import UserError
from bert_jax.models import model as model_lib

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
MODULE_FILE = "model.stablehlo"
PARAMS_FILE = "params.npz"
SIGNATURE_FILE = "serving_signature.json"
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
FORMAT_STABLEHLO = "bert_jax.stablehlo/1"
FORMAT_SAVEDMODEL = "bert_jax.savedmodel/1"


# --- what both exports share ---------------------------------------------------------------
class _Servable:
    """The model as a pure function of (param leaves, ids, mask, types), and its leaves."""

    def __init__(self, model, seq_len: int, outputs: Sequence[str] | None):
        if not isinstance(model, model_lib.Model):
            raise UserError(f"expected a bert_jax Model to export, got {type(model).__name__}")
        config = model.config
        if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1:
            raise UserError(f"seq_len={seq_len!r} is invalid: expected a positive integer")
        if seq_len > config.max_length:
            raise UserError(
                f"seq_len={seq_len} is longer than the model's position table allows "
                f"(max_position_embeddings={config.max_position_embeddings} -> at most "
                f"{config.max_length} tokens)"
            )
        # Params become arguments; anything else (none today) is baked in as a constant.
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
        self.names = [
            jax.tree_util.keystr(path, simple=True, separator="/").removesuffix("/value")
            for path, _ in with_paths
        ]
        self.leaves = [np.asarray(leaf) for _, leaf in with_paths]
        self.param_specs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in self.leaves]

        def run(leaves, input_ids, attention_mask, token_type_ids):
            net = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves), rest)
            return net(input_ids, attention_mask, token_type_ids)  # rng=None: deterministic

        ids = jax.ShapeDtypeStruct((1, seq_len), jnp.int32)
        available = sorted(jax.eval_shape(run, self.param_specs, ids, ids, ids))
        if outputs is None:  # "cls" (what the heads read) is hidden[:, 0]: asked for by name only
            outputs = [name for name in available if name != "cls"]
        elif isinstance(outputs, str) or not outputs:
            raise UserError(
                f"outputs={outputs!r} is invalid: expected a non-empty list of names "
                f"from: {', '.join(available)}"
            )
        unknown = [name for name in outputs if name not in available]
        if unknown:
            raise UserError(
                f"unknown output(s) {unknown}; this model ({config.family}, heads "
                f"{list(model.heads)}) has: {', '.join(available)}"
            )
        self.outputs = tuple(dict.fromkeys(outputs))
        self.config = config
        self.heads = tuple(model.heads)
        self.num_labels = model.num_labels
        self.seq_len = seq_len

        def fn(leaves, input_ids, attention_mask, token_type_ids):
            out = run(leaves, input_ids, attention_mask, token_type_ids)
            return {name: out[name] for name in self.outputs}

        self.fn = fn

    def export(self, batch: int | None, platforms: Sequence[str] | None) -> jax.export.Exported:
        batch_dim = jax.export.symbolic_shape("batch")[0] if batch is None else batch
        ids = jax.ShapeDtypeStruct((batch_dim, self.seq_len), jnp.int32)
        return jax.export.export(jax.jit(self.fn), platforms=platforms)(self.param_specs, ids, ids, ids)

    def signature(self, exported: jax.export.Exported, fmt: str, batch: int | None) -> dict:
        def dims(shape):  # symbolic dims (the batch) become null, as in a TF TensorSpec
            return [d if isinstance(d, int) else None for d in shape]

        out_avals = jax.tree.unflatten(exported.out_tree, exported.out_avals)
        return {
            "format": fmt,
            "inputs": [{"name": n, "dtype": "int32", "shape": [batch, self.seq_len]} for n in INPUT_NAMES],
            "outputs": [
                {"name": n, "dtype": str(out_avals[n].dtype), "shape": dims(out_avals[n].shape)}
                for n in self.outputs
            ],
            "batch": batch,
            "seq_len": self.seq_len,
            "platforms": list(exported.platforms),
            "jax_version": jax.__version__,
            "calling_convention_version": exported.calling_convention_version,
            "model": {
                "config": self.config.to_dict(),
                "heads": list(self.heads),
                "num_labels": self.num_labels,
            },
            "params": {
                "count": int(sum(x.size for x in self.leaves)),
                "bytes": int(sum(x.nbytes for x in self.leaves)),
                "names": self.names,
                "dtypes": [str(x.dtype) for x in self.leaves],
            },
        }


def _check_platforms(platforms: Sequence[str] | None) -> tuple[str, ...] | None:
    if platforms is None:
        return None
    if isinstance(platforms, str) or not platforms or any(p not in PLATFORMS for p in platforms):
        raise UserError(
            f"platforms={platforms!r} is invalid: expected a non-empty list from: {', '.join(PLATFORMS)}"
        )
    return tuple(platforms)


def _prepare_dir(output_dir: str, overwrite: bool) -> None:
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UserError(f"output_dir {output_dir!r} exists and is not a directory")
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise UserError(
            f"output_dir {output_dir!r} is not empty; choose an empty or new directory, "
            f"or pass overwrite=True"
        )
    os.makedirs(output_dir, exist_ok=True)


def _write_json(path: str, value: dict) -> None:
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


# --- StableHLO -------------------------------------------------------------------------------
def export_stablehlo(
    model,
    output_dir: str,
    *,
    batch: int | None = None,
    seq_len: int = 128,
    outputs: Sequence[str] | None = None,
    platforms: Sequence[str] | None = None,
    overwrite: bool = False,
) -> dict:
    """Writes model.stablehlo, params.npz and serving_signature.json to `output_dir`; returns
    the signature (plus `files`: name -> bytes, and `export_seconds`).

    batch: None exports a symbolic batch dimension (any batch size at call time).
    outputs: names to return (default: every output of the model).
    platforms: lower for these (cpu, cuda, rocm, tpu); default: the platform this runs on.
    """
    if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
        raise UserError(f"batch={batch!r} is invalid: expected a positive integer, or None for any")
    servable = _Servable(model, seq_len, outputs)
    platforms = _check_platforms(platforms)
    _prepare_dir(output_dir, overwrite)

    start = time.perf_counter()
    exported = servable.export(batch, platforms)
    with open(os.path.join(output_dir, MODULE_FILE), "wb") as f:
        f.write(exported.serialize())
    # np.savez cannot describe ml_dtypes (bfloat16): store their bits; the signature has the dtype.
    arrays = {
        name: (x if x.dtype.isnative and x.dtype.kind in "biuf" else x.view(f"u{x.itemsize}"))
        for name, x in zip(servable.names, servable.leaves, strict=True)
    }
    np.savez(os.path.join(output_dir, PARAMS_FILE), **arrays)
    signature = servable.signature(exported, FORMAT_STABLEHLO, batch)
    signature["files"] = {"module": MODULE_FILE, "params": PARAMS_FILE}
    _write_json(os.path.join(output_dir, SIGNATURE_FILE), signature)
    elapsed = time.perf_counter() - start
    sizes = {
        name: os.path.getsize(os.path.join(output_dir, name))
        for name in (MODULE_FILE, PARAMS_FILE, SIGNATURE_FILE)
    }
    return {**signature, "files": sizes, "export_seconds": round(elapsed, 3)}


def _read_signature(output_dir: str, fmt: str) -> dict:
    path = os.path.join(output_dir, SIGNATURE_FILE)
    if not os.path.isfile(path):
        raise UserError(
            f"{output_dir!r} holds no {SIGNATURE_FILE}; is it a directory written by export_stablehlo?"
        )
    with open(path) as f:
        signature = json.load(f)
    if signature.get("format") != fmt:
        raise UserError(f"{path} has format {signature.get('format')!r}, expected {fmt!r}")
    return signature


def _check_platform_here(platforms: Sequence[str], where: str) -> None:
    here = jax.default_backend()
    ok = any(p in ("cuda", "rocm") for p in platforms) if here == "gpu" else here in platforms
    if not ok:
        raise UserError(
            f"{where} was exported for {', '.join(platforms)} but this process runs on "
            f"{here}; re-export with platforms=[..., {here!r}]"
        )


def load_stablehlo(output_dir: str) -> Callable[..., dict[str, np.ndarray]]:
    """The exported model as `serve(input_ids, attention_mask=None, token_type_ids=None)`:
    numpy (any integer dtype) [batch, seq_len] in, {output name: numpy array} out. A missing
    mask means no padding, missing types mean segment 0. `serve.signature` is the JSON."""
    signature = _read_signature(output_dir, FORMAT_STABLEHLO)
    with open(os.path.join(output_dir, signature["files"]["module"]), "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    _check_platform_here(exported.platforms, output_dir)
    with np.load(os.path.join(output_dir, signature["files"]["params"])) as stored:
        leaves = [
            stored[name].view(jnp.dtype(dtype))
            for name, dtype in zip(signature["params"]["names"], signature["params"]["dtypes"], strict=True)
        ]
    leaves = jax.device_put(leaves)
    call = jax.jit(exported.call)
    batch, seq_len = signature["batch"], signature["seq_len"]

    def as_ids(name: str, x, like: np.ndarray | None, fill: int) -> np.ndarray:
        if x is None:
            return np.full(like.shape, fill, np.int32)
        x = np.asarray(x)
        if x.dtype.kind not in "iub" or x.ndim != 2:
            raise UserError(
                f"{name} must be a 2-D integer array [batch, {seq_len}], got {x.dtype}{list(x.shape)}"
            )
        if x.shape[1] != seq_len or (batch is not None and x.shape[0] != batch):
            raise UserError(
                f"{name} has shape {list(x.shape)}; this export takes "
                f"[{'any' if batch is None else batch}, {seq_len}]"
            )
        if like is not None and x.shape != like.shape:
            raise UserError(f"{name} has shape {list(x.shape)} but input_ids has {list(like.shape)}")
        return x.astype(np.int32)

    def serve(input_ids, attention_mask=None, token_type_ids=None) -> dict[str, np.ndarray]:
        ids = as_ids("input_ids", input_ids, None, 0)
        mask = as_ids("attention_mask", attention_mask, ids, 1)
        types = as_ids("token_type_ids", token_type_ids, ids, 0)
        return {name: np.asarray(value) for name, value in call(leaves, ids, mask, types).items()}

    serve.signature = signature
    return serve


# --- TF SavedModel ---------------------------------------------------------------------------
def export_savedmodel(
    model,
    output_dir: str,
    *,
    seq_len: int = 128,
    outputs: Sequence[str] | None = None,
    platforms: Sequence[str] | None = None,
    overwrite: bool = False,
) -> dict:
    """Writes a TF SavedModel (signature `serving_default`, inputs int32 [None, seq_len]) and
    serving_signature.json to `output_dir`; returns the signature (plus `files` and
    `export_seconds`). Needs tensorflow; the conversion is jax2tf's native serialization."""
    try:
        import tensorflow as tf
        from jax.experimental import jax2tf
    except ImportError as e:
        raise UserError(f"SavedModel export needs tensorflow and jax.experimental.jax2tf: {e}") from e
    servable = _Servable(model, seq_len, outputs)
    platforms = _check_platforms(platforms)
    _prepare_dir(output_dir, overwrite)
    # TF would otherwise claim the whole GPU beside JAX; the variables only need host memory.
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TF already initialized its devices: leave them be
        pass

    start = time.perf_counter()
    # Lowered once through jax.export for the signature (and a JAX-side error if it fails).
    exported = servable.export(None, platforms)
    batch_seq = f"(batch, {seq_len})"
    converted = jax2tf.convert(
        servable.fn,
        polymorphic_shapes=[None, batch_seq, batch_seq, batch_seq],
        with_gradient=False,
        native_serialization_platforms=exported.platforms,
    )
    module = tf.Module()
    module.params = [
        tf.Variable(x, trainable=False, name=name.replace("/", "."))
        for name, x in zip(servable.names, servable.leaves, strict=True)
    ]

    @tf.function(
        autograph=False,
        input_signature=[tf.TensorSpec([None, seq_len], tf.int32, name=name) for name in INPUT_NAMES],
    )
    def serve(input_ids, attention_mask, token_type_ids):
        return converted(module.params, input_ids, attention_mask, token_type_ids)

    module.serve = serve
    tf.saved_model.save(module, output_dir, signatures={"serving_default": serve})
    signature = servable.signature(exported, FORMAT_SAVEDMODEL, None)
    signature["signature_name"] = "serving_default"
    _write_json(os.path.join(output_dir, SIGNATURE_FILE), signature)
    elapsed = time.perf_counter() - start
    sizes = {
        os.path.relpath(os.path.join(root, name), output_dir): os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(output_dir)
        for name in names
    }
    return {**signature, "files": sizes, "export_seconds": round(elapsed, 3)}
