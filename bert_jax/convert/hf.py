"""Hugging Face checkpoints (config.json + safetensors) for BERT, RoBERTa, ALBERT, ELECTRA.

`load(dir)` reads a checkpoint directory into an `HFCheckpoint`: our `EncoderConfig`, the
heads the checkpoint carries, and our parameter tree (numpy, fp32), plus where its
tokenizer files are. One name table per family (`_name_table`) maps each of our
parameters onto the HF tensor names, so the same table serves import and export.

Safety: safetensors only, parsed here with a bounded header; `pytorch_model.bin` is
refused (unpickling runs code). Missing, unexpected and mis-shaped tensors are reported
together, by name.
"""

from __future__ import annotations

import dataclasses
import json
import mmap
import os
import struct
from collections.abc import Iterator
from typing import Any

import ml_dtypes
import numpy as np
from flax import nnx

from bert_jax import storage
from bert_jax.errors import UserError
from bert_jax.models import model as model_lib
from bert_jax.models.config import FAMILY_FEATURES, EncoderConfig

MAX_HEADER_BYTES = 100 * 1024 * 1024
SAFETENSORS_DTYPES = {
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "F64": np.float64,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")
# Buffers HF saves beside the weights; they carry no learned values.
IGNORED_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")
ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "relu": "relu",
}
PREFIXES = {"bert": "bert.", "roberta": "roberta.", "albert": "albert.", "electra": "electra."}
TOKENIZER_FILES = (
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


@dataclasses.dataclass
class HFCheckpoint:
    config: EncoderConfig
    heads: tuple[str, ...]
    num_labels: int
    params: dict  # nested like nnx.state(model, nnx.Param), numpy leaves
    path: str
    tokenizer_files: dict[str, str]  # file name -> path, for the files present
    label_names: tuple[str, ...] | None = None

    def model(self) -> model_lib.Model:
        """A `Model` holding these weights."""
        m = model_lib.abstract(self.config, self.heads, self.num_labels)
        graphdef, state = nnx.split(m)
        flat = dict(nnx.to_flat_state(state))
        for path, value in _flatten(self.params):
            flat[path] = flat[path].replace(np.asarray(value))
        return nnx.merge(graphdef, nnx.from_flat_state(flat))


# --- reading safetensors ------------------------------------------------------------------
def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """All tensors of one .safetensors file as numpy arrays (copies), checked as we go."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise UserError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES:
            raise UserError(
                f"{path}: safetensors header of {n} bytes exceeds the "
                f"{MAX_HEADER_BYTES}-byte limit; refusing to parse it"
            )
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{path}: safetensors header is not valid JSON ({e})") from None
        size = os.fstat(f.fileno()).st_size
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    if not isinstance(header, dict):
        raise UserError(f"{path}: safetensors header is a JSON {type(header).__name__}, not an object")
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise UserError(f"{path}: tensor {name!r} has no dtype/shape/data_offsets entry")
        dtype = SAFETENSORS_DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise UserError(f"{path}: tensor {name!r} has unsupported dtype {info.get('dtype')!r}")
        offsets, shape = info.get("data_offsets"), info.get("shape")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and isinstance(shape, list)
            and all(isinstance(v, int) and v >= 0 for v in offsets + shape)
        ):
            raise UserError(
                f"{path}: tensor {name!r} has malformed shape {shape!r} or data_offsets {offsets!r}"
            )
        start, end = (8 + n + o for o in offsets)
        shape = tuple(shape)
        if not (8 + n <= start <= end <= size) or end - start != np.dtype(dtype).itemsize * int(
            np.prod(shape, dtype=np.int64)
        ):
            raise UserError(
                f"{path}: tensor {name!r} has offsets {info['data_offsets']} that do "
                f"not fit its shape {shape} and dtype or the file size {size}"
            )
        out[name] = np.frombuffer(buf, dtype, count=int(np.prod(shape)), offset=start).reshape(shape).copy()
    return out


def _read_weights(path: str) -> dict[str, np.ndarray]:
    single = os.path.join(path, "model.safetensors")
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(single):
        return read_safetensors(single)
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise UserError(
                f"{index}: not a safetensors index (expected JSON with a "
                f"'weight_map' of tensor name -> shard file; {type(e).__name__}: {e})"
            ) from None
        for shard in shards:
            # A shard name is a file beside the index: never a path out of the directory.
            if not isinstance(shard, str) or os.path.basename(shard) != shard or shard in ("", ".", ".."):
                raise UserError(f"{index}: shard name {shard!r} is not a file name in {path}")
        tensors = {}
        for shard in shards:
            tensors.update(read_safetensors(os.path.join(path, shard)))
        return tensors
    if any(os.path.isfile(os.path.join(path, n)) for n in ("pytorch_model.bin", "tf_model.h5")):
        raise UserError(
            f"{path}: holds only pytorch_model.bin/tf_model.h5; bert_jax reads safetensors only, "
            "since unpickling a .bin file can run arbitrary code. If you trust the file, convert "
            'it once with transformers: python -c "from transformers import AutoModel as A; '
            f"A.from_pretrained('{path}').save_pretrained('{path}')\" (writes model.safetensors)"
        )
    raise UserError(f"{path}: no model.safetensors (or model.safetensors.index.json) found")


# --- config -------------------------------------------------------------------------------
def config_from_hf(hf: dict, source: str = "config.json") -> EncoderConfig:
    family = hf.get("model_type")
    if family not in PREFIXES:
        raise UserError(
            f"{source}: model_type={family!r} is not supported; expected one of {', '.join(PREFIXES)}"
        )
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise UserError(
            f"{source}: position_embedding_type="
            f"{hf['position_embedding_type']!r}; only 'absolute' is supported"
        )
    if family == "albert" and (hf.get("num_hidden_groups", 1) != 1 or hf.get("inner_group_num", 1) != 1):
        raise UserError(
            f"{source}: ALBERT with num_hidden_groups/inner_group_num other than 1 "
            "is not supported (every released ALBERT uses 1)"
        )
    act = hf.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise UserError(
            f"{source}: hidden_act={act!r} is not supported; expected one of {', '.join(ACTIVATIONS)}"
        )
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    missing = [k for k in required if k not in hf]
    if missing:
        raise UserError(f"{source}: missing field(s) {', '.join(missing)}")
    # transformers' default width for both factorized families is 128.
    embedding = hf.get("embedding_size", 128) if family in ("albert", "electra") else None
    return EncoderConfig(
        family=family,
        **FAMILY_FEATURES[family],  # what transformers' model of this type is
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        embedding_size=embedding if embedding != hf["hidden_size"] else None,
        # AlbertModel always builds embedding_hidden_mapping_in; ElectraModel builds
        # embeddings_project only when the widths differ.
        embedding_projection=family == "albert",
        max_position_embeddings=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        hidden_act=ACTIVATIONS[act],
        hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        initializer_range=hf.get("initializer_range", 0.02),
        pad_token_id=hf.get("pad_token_id") or (1 if family == "roberta" else 0),
        share_layers=family == "albert",
        use_pooler=family != "electra",
    )


# --- the name table -----------------------------------------------------------------------
# kind: "linear" = torch Linear weight [out, in] (transposed, then reshaped to our kernel);
#       "copy"   = same layout (reshaped).  Tied aliases are checked, not loaded.
Entry = tuple[tuple[str, ...], "str | list[str]", str]


def _linear(our: tuple[str, ...], hf: str | list[str], n_in: int = 1) -> Iterator[Entry]:
    """A torch Linear: weight [out, in]; our kernel has n_in input axes ([heads, kv] -> 2)."""
    kind = "linear" if n_in == 1 else f"linear{n_in}"
    if isinstance(hf, list):
        yield our + ("kernel",), [h + ".weight" for h in hf], kind
        yield our + ("bias",), [h + ".bias" for h in hf], "copy"
    else:
        yield our + ("kernel",), hf + ".weight", kind
        yield our + ("bias",), hf + ".bias", "copy"


def _norm(our: tuple[str, ...], hf: str | list[str]) -> Iterator[Entry]:
    if isinstance(hf, list):
        yield our + ("scale",), [h + ".weight" for h in hf], "copy"
        yield our + ("bias",), [h + ".bias" for h in hf], "copy"
    else:
        yield our + ("scale",), hf + ".weight", "copy"
        yield our + ("bias",), hf + ".bias", "copy"


def _name_table(config: EncoderConfig, heads: tuple[str, ...], prefix: str) -> list[Entry]:
    fam, p = config.family, prefix
    t: list[Entry] = []
    emb = ("encoder", "embeddings")
    t += [
        (emb + ("word", "embedding"), p + "embeddings.word_embeddings.weight", "copy"),
        (emb + ("position", "embedding"), p + "embeddings.position_embeddings.weight", "copy"),
        (emb + ("segment", "embedding"), p + "embeddings.token_type_embeddings.weight", "copy"),
    ]
    t += _norm(emb + ("norm",), p + "embeddings.LayerNorm")
    if config.embedding_projection:
        proj = p + ("encoder.embedding_hidden_mapping_in" if fam == "albert" else "embeddings_project")
        t += _linear(("encoder", "projection"), proj)

    if fam == "albert":
        blk = p + "encoder.albert_layer_groups.0.albert_layers.0."
        names = {
            "q": blk + "attention.query",
            "k": blk + "attention.key",
            "v": blk + "attention.value",
            "o": blk + "attention.dense",
            "ln1": blk + "attention.LayerNorm",
            "i": blk + "ffn",
            "out": blk + "ffn_output",
            "ln2": blk + "full_layer_layer_norm",
        }
    else:
        layer = [f"{p}encoder.layer.{i}." for i in range(config.num_layers)]
        per = lambda s: [x + s for x in layer]
        names = {
            "q": per("attention.self.query"),
            "k": per("attention.self.key"),
            "v": per("attention.self.value"),
            "o": per("attention.output.dense"),
            "ln1": per("attention.output.LayerNorm"),
            "i": per("intermediate.dense"),
            "out": per("output.dense"),
            "ln2": per("output.LayerNorm"),
        }
    lay = ("encoder", "layers")
    t += _linear(lay + ("attention", "query"), names["q"])
    t += _linear(lay + ("attention", "key"), names["k"])
    t += _linear(lay + ("attention", "value"), names["v"])
    t += _linear(lay + ("attention", "output"), names["o"], n_in=2)
    t += _norm(lay + ("attention_norm",), names["ln1"])
    t += _linear(lay + ("intermediate",), names["i"])
    t += _linear(lay + ("output",), names["out"])
    t += _norm(lay + ("output_norm",), names["ln2"])
    if config.use_pooler:
        t += _linear(("encoder", "pooler"), p + "pooler.dense" if fam != "albert" else p + "pooler")

    if "mlm" in heads:
        mlm = {
            "bert": (
                "cls.predictions.transform.dense",
                "cls.predictions.transform.LayerNorm",
                "cls.predictions.bias",
            ),
            "roberta": ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias"),
            "albert": ("predictions.dense", "predictions.LayerNorm", "predictions.bias"),
            "electra": (
                "generator_predictions.dense",
                "generator_predictions.LayerNorm",
                "generator_lm_head.bias",
            ),
        }[fam]
        t += _linear(("mlm", "transform"), mlm[0])
        t += _norm(("mlm", "norm"), mlm[1])
        t.append((("mlm", "bias"), mlm[2], "copy"))
    if "nsp" in heads:
        t += _linear(("nsp", "classifier"), "cls.seq_relationship")
    if "sop" in heads:
        t += _linear(("sop", "classifier"), "sop_classifier.classifier")
    if "rtd" in heads:
        t += _linear(("rtd", "dense"), "discriminator_predictions.dense")
        t += _linear(("rtd", "prediction"), "discriminator_predictions.dense_prediction")
    if "classification" in heads:
        if fam in ("roberta", "electra"):
            t += _linear(("classification", "dense"), "classifier.dense")
            t += _linear(("classification", "output"), "classifier.out_proj")
        else:
            t += _linear(("classification", "output"), "classifier")
    if "token_classification" in heads:
        t += _linear(("token_classification", "output"), "classifier")
    if "span" in heads:
        t += _linear(("span", "output"), "qa_outputs")
    return t


def _tied_aliases(family: str, prefix: str) -> dict[str, str]:
    """HF names that duplicate another tensor (tied decoder weight/bias) -> what they equal."""
    word = prefix + "embeddings.word_embeddings.weight"
    head = {"bert": "cls.predictions.", "roberta": "lm_head.", "albert": "predictions."}
    if family == "electra":
        return {"generator_lm_head.weight": word}
    h = head[family]
    return {h + "decoder.weight": word, h + "decoder.bias": h + "bias"}


# --- heads --------------------------------------------------------------------------------
def _detect_heads(family: str, names: set[str], architectures: list[str]) -> tuple[str, ...]:
    arch = " ".join(architectures)
    found = []
    mlm_key = {
        "bert": "cls.predictions.bias",
        "roberta": "lm_head.bias",
        "albert": "predictions.bias",
        "electra": "generator_lm_head.bias",
    }[family]
    if mlm_key in names:
        found.append("mlm")
    if "cls.seq_relationship.weight" in names:
        found.append("nsp")
    if "sop_classifier.classifier.weight" in names:
        found.append("sop")
    if "discriminator_predictions.dense.weight" in names:
        found.append("rtd")
    if "qa_outputs.weight" in names:
        found.append("span")
    if any(n.startswith("classifier.") for n in names):
        found.append("token_classification" if "TokenClassification" in arch else "classification")
    return tuple(found)


def _find_prefix(family: str, names: set[str]) -> str:
    for prefix in (PREFIXES[family], ""):
        if prefix + "embeddings.word_embeddings.weight" in names:
            return prefix
    raise UserError(
        f"no embeddings.word_embeddings.weight (with or without the "
        f"{PREFIXES[family]!r} prefix) among the checkpoint's tensors"
    )


def _flatten(tree: dict, prefix: tuple = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _flatten(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def load(path: str) -> HFCheckpoint:
    """Read a HF checkpoint directory (local or gs://) into our config, heads and parameters."""
    path = os.fspath(path)
    if storage.is_remote(path):
        if not storage.isdir(path):
            raise UserError(f"checkpoint directory {path} does not exist")
        path = storage.fetch(path)  # safetensors and tokenizer files are read from a local copy
    if not os.path.isdir(path):
        raise UserError(f"checkpoint directory {path} does not exist")
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise UserError(
            f"{path}: no config.json; a Hugging Face checkpoint directory needs "
            "config.json and model.safetensors"
        )
    try:
        with open(cfg_path, encoding="utf-8") as f:
            hf_config = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{cfg_path}: not valid JSON ({e})") from None
    config_from_hf(hf_config, cfg_path)  # a bad config.json is reported before reading weights
    ckpt = from_tensors(hf_config, _read_weights(path), path, cfg_path)
    ckpt.tokenizer_files = {
        n: os.path.join(path, n) for n in TOKENIZER_FILES if os.path.isfile(os.path.join(path, n))
    }
    return ckpt


def from_tensors(
    hf_config: dict, tensors: dict[str, np.ndarray], source: str, config_source: str = "config.json"
) -> HFCheckpoint:
    """HF-named tensors (+ the HF config dict) -> our config, heads and parameters.
    Shared by the safetensors reader and the TF1 importer (which renames to HF names)."""
    config = config_from_hf(hf_config, config_source)
    names = set(tensors)
    prefix = _find_prefix(config.family, names)
    heads = _detect_heads(config.family, names, hf_config.get("architectures") or [])
    if (
        config.use_pooler
        and prefix + ("pooler" if config.family == "albert" else "pooler.dense") + ".weight" not in names
    ):
        config = config.replace(use_pooler=False)  # e.g. *ForMaskedLM saves no pooler
    num_labels = 2
    for head, weight in (
        ("classification", "classifier.weight"),
        ("classification", "classifier.out_proj.weight"),
        ("token_classification", "classifier.weight"),
    ):
        if head in heads and weight in tensors:
            num_labels = tensors[weight].shape[0]
    label_names = None
    if "id2label" in hf_config and len(hf_config["id2label"]) == num_labels:
        label_names = tuple(hf_config["id2label"][str(i)] for i in range(num_labels))

    abstract = model_lib.abstract(config, heads, num_labels)
    expected = {p: v.shape for p, v in _flatten(nnx.to_pure_dict(nnx.state(abstract, nnx.Param)))}
    params: dict = {}
    missing, misshaped, used = [], [], set()
    for our, hf, kind in _name_table(config, heads, prefix):
        hf_names = hf if isinstance(hf, list) else [hf]
        absent = [n for n in hf_names if n not in tensors]
        used.update(n for n in hf_names if n in tensors)
        if absent:
            missing += absent
            continue
        want = expected[our]
        # Stacked entries hold one HF tensor per layer: each must fit one slice.
        each = want[1:] if isinstance(hf, list) else want
        arrays = []
        for n in hf_names:
            a = tensors[n]
            if a.dtype.kind != "f" and a.dtype != ml_dtypes.bfloat16:
                misshaped.append(f"{n}: dtype {a.dtype}, expected a float type")
            elif a.size != int(np.prod(each)):
                misshaped.append(f"{n}: shape {a.shape} does not fit {'.'.join(our)} of shape {each}")
            else:
                a = a.astype(np.float32)
                arrays.append((a.T if kind.startswith("linear") else a).reshape(each))
        if len(arrays) != len(hf_names):
            continue
        value = arrays[0] if isinstance(hf, str) else np.stack(arrays)
        _set(params, our, value)

    for alias, target in _tied_aliases(config.family, prefix).items():
        if alias in tensors and target in tensors:
            used.add(alias)
            if tensors[alias].shape != tensors[target].shape or not np.array_equal(
                tensors[alias], tensors[target]
            ):
                misshaped.append(f"{alias}: differs from {target}, but bert_jax ties them")
    unexpected = sorted(n for n in names - used if not n.endswith(IGNORED_SUFFIXES))
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped tensors: {'; '.join(misshaped)}")
    if problems:
        raise UserError(
            f"{source}: checkpoint does not match a {config.family} model with heads "
            f"{list(heads) or 'none'}: " + " | ".join(problems)
        )
    return HFCheckpoint(config, heads, num_labels, params, source, {}, label_names)


def config_to_hf(config: EncoderConfig) -> dict:
    """The config.json transformers expects for this architecture."""
    features = {k: getattr(config, k) for k in FAMILY_FEATURES[config.family]}
    if features != FAMILY_FEATURES[config.family]:
        raise UserError(
            f"this {config.family} model has {features}; transformers' {config.family} models have "
            f"{FAMILY_FEATURES[config.family]}: no Hugging Face class computes it"
        )
    act = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}[config.hidden_act]
    out = {
        "model_type": config.family,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_size,
        "max_position_embeddings": config.max_position_embeddings,
        "type_vocab_size": config.type_vocab_size,
        "layer_norm_eps": config.layer_norm_eps,
        "hidden_act": act,
        "hidden_dropout_prob": config.hidden_dropout,
        "attention_probs_dropout_prob": config.attention_dropout,
        "initializer_range": config.initializer_range,
        "pad_token_id": config.pad_token_id,
        "position_embedding_type": "absolute",
    }
    if config.family in ("albert", "electra"):
        out["embedding_size"] = config.embed_dim
    if config.family == "albert":
        out.update(num_hidden_groups=1, inner_group_num=1)
    return out


# --- export --------------------------------------------------------------------------------
_CLASS_PREFIX = {"bert": "Bert", "roberta": "Roberta", "albert": "Albert", "electra": "Electra"}
_CLASS_SUFFIX = {
    (): "Model",
    ("mlm",): "ForMaskedLM",
    ("mlm", "nsp"): "ForPreTraining",
    ("mlm", "sop"): "ForPreTraining",
    ("rtd",): "ForPreTraining",
    ("nsp",): "ForNextSentencePrediction",
    ("classification",): "ForSequenceClassification",
    ("token_classification",): "ForTokenClassification",
    ("span",): "ForQuestionAnswering",
}


def architecture(family: str, heads: tuple[str, ...]) -> str:
    """The transformers class that holds exactly this family and these heads."""
    key = tuple(
        h
        for h in ("mlm", "nsp", "sop", "rtd", "classification", "token_classification", "span")
        if h in heads
    )
    if (
        key not in _CLASS_SUFFIX
        or ("rtd" in key and family != "electra")
        or ("nsp" in key and family != "bert")
        or ("sop" in key and family != "albert")
    ):
        raise UserError(f"no transformers class holds a {family} model with heads {list(heads)}")
    return _CLASS_PREFIX[family] + _CLASS_SUFFIX[key]


def _has_pooler(family: str, heads: tuple[str, ...]) -> bool:
    """Whether the transformers class builds a pooler (add_pooling_layer)."""
    if family == "electra":
        return False
    if not heads or "nsp" in heads or "sop" in heads:
        return True
    return "classification" in heads and family in ("bert", "albert")


def _get(tree: dict, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def to_tensors(config: EncoderConfig, heads: tuple[str, ...], params: dict) -> dict[str, np.ndarray]:
    """Our parameters -> transformers-named fp32 tensors (the inverse of from_tensors)."""
    prefix = PREFIXES[config.family] if heads else ""
    out: dict[str, np.ndarray] = {}
    for our, hf, kind in _name_table(config, heads, prefix):
        value = np.asarray(_get(params, our), np.float32)
        pairs = zip(hf, value, strict=True) if isinstance(hf, list) else [(hf, value)]
        for name, v in pairs:
            if kind.startswith("linear"):
                n_in = int(kind[6:] or 1)
                w = v.reshape(int(np.prod(v.shape[:n_in])), -1).T  # torch Linear: [out, in]
            elif our[-1] == "embedding":
                w = v
            else:
                w = v.reshape(-1)
            out[name] = np.ascontiguousarray(w)
    return out


def hf_config(
    config: EncoderConfig,
    heads: tuple[str, ...],
    num_labels: int = 2,
    label_names: tuple[str, ...] | None = None,
) -> dict:
    out = config_to_hf(config)
    out.update(architectures=[architecture(config.family, heads)], tie_word_embeddings=True)
    if config.family == "roberta":
        out.update(bos_token_id=0, eos_token_id=2)
    if {"classification", "token_classification"} & set(heads):
        names = label_names or tuple(f"LABEL_{i}" for i in range(num_labels))
        out.update(
            id2label={str(i): n for i, n in enumerate(names)}, label2id={n: i for i, n in enumerate(names)}
        )
        if "classification" in heads and num_labels == 1:
            out["problem_type"] = "regression"
    return out


def save(
    config: EncoderConfig,
    heads: tuple[str, ...],
    params: dict,
    output: str,
    *,
    num_labels: int = 2,
    label_names: tuple[str, ...] | None = None,
    tokenizer_files: dict[str, str] | None = None,
) -> list[str]:
    """Write config.json, model.safetensors and the tokenizer files transformers loads."""
    from safetensors.numpy import save_file

    heads = tuple(heads)
    config, params = as_transformers_builds(config, heads, params)
    os.makedirs(output, exist_ok=True)
    save_file(
        to_tensors(config, heads, params),
        os.path.join(output, "model.safetensors"),
        metadata={"format": "pt"},
    )
    with open(os.path.join(output, "config.json"), "w") as f:
        json.dump(hf_config(config, heads, num_labels, label_names), f, indent=2)
    written = ["config.json", "model.safetensors"]
    for name, path in sorted((tokenizer_files or {}).items()):
        with open(os.path.join(output, name), "wb") as dst:
            dst.write(storage.read_bytes(path))  # the tokenizer may live in a gs:// workdir
        written.append(name)
    verify(output, config, heads, params, num_labels, label_names)
    return written


def as_transformers_builds(
    config: EncoderConfig, heads: tuple[str, ...], params: dict
) -> tuple[EncoderConfig, dict]:
    """This model in the layout of the transformers class that will hold it: a pooler only
    where that class builds one, and ALBERT's embedding projection always."""
    cls = architecture(config.family, heads)
    pooled = _has_pooler(config.family, heads)
    if pooled and not config.use_pooler:
        raise UserError(f"{cls} needs a pooler, but this model has none")
    encoder = dict(params["encoder"])
    if config.use_pooler and not pooled:
        del encoder["pooler"]
    if config.embedding_projection and config.family in ("bert", "roberta"):
        raise UserError(
            f"{cls} has no embedding projection, but this model projects its "
            f"{config.embed_dim}-wide embeddings to hidden_size={config.hidden_size}"
        )
    if config.family == "albert" and not config.embedding_projection:
        # AlbertModel always maps embeddings through embedding_hidden_mapping_in. An identity
        # map (exact in fp32) keeps the outputs of a model built without one, such as an
        # albert-tiny checkpoint written before ALBERT kept its projection at equal widths.
        e = config.embed_dim
        encoder["projection"] = {"kernel": np.eye(e, dtype=np.float32), "bias": np.zeros((e,), np.float32)}
        config = config.replace(embedding_projection=True)
    return config.replace(use_pooler=pooled), {**params, "encoder": encoder}


# What config.json carries of the architecture; the rest (dtype, scan, remat) is how we run it.
_EXPORTED_FIELDS = (
    "family",
    "vocab_size",
    "hidden_size",
    "num_layers",
    "num_heads",
    "intermediate_size",
    "embed_dim",
    "embedding_projection",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "hidden_act",
    "pad_token_id",
    "share_layers",
    "use_pooler",
)


def verify(
    output: str,
    config: EncoderConfig,
    heads: tuple[str, ...],
    params: dict,
    num_labels: int = 2,
    label_names: tuple[str, ...] | None = None,
) -> None:
    """Read an export back through the name table and require what was meant to be written:
    every tensor the transformers class needs, bit-equal to `params`, and the same config,
    heads and labels. Raises UserError naming what differs."""
    try:
        back = load(output)
    except UserError as e:
        raise UserError(f"export check failed: {output} does not read back: {e}") from None
    problems = [
        f"config.{f}: wrote {getattr(config, f)!r}, reads back {getattr(back.config, f)!r}"
        for f in _EXPORTED_FIELDS
        if getattr(config, f) != getattr(back.config, f)
    ]
    if back.heads != tuple(heads):
        problems.append(f"heads: wrote {list(heads)}, reads back {list(back.heads)}")
    if {"classification", "token_classification"} & set(heads):
        names = tuple(label_names or (f"LABEL_{i}" for i in range(num_labels)))
        if (back.num_labels, back.label_names) != (num_labels, names):
            problems.append(f"labels: wrote {list(names)}, read back {list(back.label_names or ())}")
    want = {".".join(p): v for p, v in _flatten(params)}
    got = {".".join(p): v for p, v in _flatten(back.params)}
    prefix = PREFIXES[config.family] if heads else ""
    hf_names = {
        ".".join(our): hf if isinstance(hf, str) else f"{hf[0]} ..."
        for our, hf, _ in _name_table(config, tuple(heads), prefix)
    }
    absent = sorted(set(want) - set(got))
    if absent:
        problems.append("absent: " + ", ".join(f"{n} ({hf_names.get(n, '?')})" for n in absent))
    if sorted(set(got) - set(want)):
        problems.append(f"not in the source: {', '.join(sorted(set(got) - set(want)))}")
    differ = sorted(
        n for n in set(want) & set(got) if not np.array_equal(np.asarray(want[n], np.float32), got[n])
    )
    if differ:
        problems.append(f"differing from the source: {', '.join(differ)}")
    if problems:
        raise UserError(f"export check failed for {output}: " + "; ".join(problems))
