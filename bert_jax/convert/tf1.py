"""Original TF1 checkpoints of google-research/bert, /albert and /electra.

`load_tf1(path)` reads a name-based TF1 checkpoint (`bert_model.ckpt.*`, `model.ckpt-N.*`,
`electra_small.*`, ...) with its config JSON and vocabulary, renames each variable to the
name transformers gives it (as `load_tf_weights_in_{bert,albert,electra}` do), and hands the
result to `hf.from_tensors`, so both importers share one name table and one set of checks.

One rule table per family (`_rules`) maps TF1 variable names onto HF names. Optimizer slots
and counters (`adam_m`, `global_step`, ...) are skipped; every other variable must be
claimed by a rule, and every rule of the parts present must find its variable: unknown and
missing variables are reported together, by their TF1 names.

Things the original repositories leave implicit, decided here:
- ELECTRA writes no config file. `electra_config.json` or `config.json` (BERT or HF keys)
  is used when present; otherwise every size is read off the variable shapes and the heads
  follow ELECTRA's own rule, `num_attention_heads = max(1, hidden_size // 64)`.
- ELECTRA checkpoints hold two encoders that share `electra/embeddings`: the discriminator
  (`electra/`, with `discriminator_predictions/`) and the generator (`generator/`, with
  `generator_predictions/`). `part` picks which one to import; the other is skipped. The
  generator's sizes are always read off its shapes, since the config describes the
  discriminator.
- "gelu" means what the code that trained the weights computed: the exact erf GELU for
  ELECTRA (its modeling.py uses tf.math.erf) and BERT (as transformers reads it; BERT's
  modeling.py used tf.erf when the models were released, a tanh approximation later), the
  tanh approximation ("gelu_new") for ALBERT, whose modeling.py only ever defined that one.
"""

from __future__ import annotations

import glob
import json
import os
import re

import numpy as np

from bert_jax.convert import hf
from bert_jax.errors import UserError

# Any name with one of these components is optimizer or loss-scaling state, not a weight.
SKIPPED_PARTS = frozenset(
    {
        "adam_m",
        "adam_v",
        "Adam",
        "Adam_1",
        "lamb_m",
        "lamb_v",
        "Momentum",
        "Adagrad",
        "RMSProp",
        "RMSProp_1",
        "ExponentialMovingAverage",
        "global_step",
        "beta1_power",
        "beta2_power",
        "bad_steps",
        "good_steps",
        "loss_scale",
        "current_loss_scale",
        "temperature",
    }
)
CONFIG_FILES = {
    "bert": ("bert_config.json", "config.json"),
    "albert": ("albert_config.json", "config.json"),
    "electra": ("electra_config.json", "config.json"),
}
# Config keys passed on to hf.from_tensors; TF1 configs use the same names as transformers.
CONFIG_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "initializer_range",
    "layer_norm_eps",
    "embedding_size",
    "num_hidden_groups",
    "inner_group_num",
    "position_embedding_type",
    "pad_token_id",
    "id2label",
)
# TF1 activation name -> transformers name, per family (see the module docstring).
ACTIVATIONS = {"bert": {"gelu": "gelu"}, "albert": {"gelu": "gelu_new"}, "electra": {"gelu": "gelu"}}
# ALBERT config fields for variants no released model uses, with the value every one has.
ALBERT_DEFAULTS = {"net_structure_type": 0, "gap_size": 0, "num_memory_blocks": 0, "down_scale_factor": 1}
# Tokenizer files: the name transformers expects (what hf.save writes) <- names in TF1 releases.
TOKENIZER_FILES = {
    "bert": {"vocab.txt": ("vocab.txt",)},
    "albert": {"spiece.model": ("spiece.model", "30k-clean.model")},
    "electra": {"vocab.txt": ("vocab.txt",)},
}
MAX_LISTED = 20


def load_tf1(path: str, part: str = "discriminator", config: str | None = None) -> hf.HFCheckpoint:
    """Read an original TF1 BERT/ALBERT/ELECTRA checkpoint into our config, heads and params.

    path: a directory holding one checkpoint (found via its `checkpoint` file, else the single
      `*.index` file), or a checkpoint prefix such as `dir/model.ckpt-1000000`.
    part: ELECTRA only: "discriminator" (with its replaced-token-detection head) or
      "generator" (with its MLM head).
    config: the config JSON, if it is not beside the checkpoint under its usual name.
    Returns an `hf.HFCheckpoint` whose `path` is the checkpoint prefix and whose
    `tokenizer_files` maps the name transformers expects (vocab.txt, spiece.model) to the file
    found beside the checkpoint (e.g. ALBERT's 30k-clean.model), for the files present.
    """
    if part not in ("discriminator", "generator"):
        raise UserError(f"part={part!r}: expected 'discriminator' or 'generator'")
    prefix, directory = _find_checkpoint(os.fspath(path))
    reader = _open(prefix)
    shapes = {}  # name without a TF-Hub "module/" prefix -> (stored name, shape)
    for stored, shape in reader.get_variable_to_shape_map().items():
        name = stored.removeprefix("module/")
        if not SKIPPED_PARTS.intersection(name.split("/")) and "AdamWeightDecayOptimizer" not in name:
            shapes[name] = (stored, tuple(shape))
    family = _family(prefix, shapes)
    if part == "generator" and family != "electra":
        raise UserError(f"{prefix}: part='generator' applies to ELECTRA checkpoints; this is a {family} one")

    config_path = config or next(
        (
            os.path.join(directory, n)
            for n in CONFIG_FILES[family]
            if os.path.isfile(os.path.join(directory, n))
        ),
        None,
    )
    raw = _read_json(config_path) if config_path else None
    # ELECTRA: the scope of the encoder imported and of its embeddings (shared unless the
    # generator was trained with untied embeddings).
    scope = emb = "electra"
    if family == "electra":
        if part == "generator":
            scope = "generator"
            emb = "generator" if "generator/embeddings/word_embeddings" in shapes else "electra"
        hf_config = _electra_config(prefix, shapes, raw, config_path, scope, emb, part)
        config_source = (
            config_path
            if raw is not None and part == "discriminator"
            else f"{prefix} (ELECTRA {part} sizes read off the variable shapes)"
        )
    elif raw is None:
        raise UserError(
            f"{directory}: no {' or '.join(CONFIG_FILES[family])} beside the {family} "
            f"checkpoint {os.path.basename(prefix)}; pass config=<path to the model's "
            "config JSON>"
        )
    else:
        hf_config = _hf_config(family, raw, config_path)
        config_source = config_path
    hf.config_from_hf(hf_config, config_source)  # clear errors on the config before the names

    rules = _rules(family, scope, emb)
    num_layers = 1 if family == "albert" else hf_config["num_hidden_layers"]
    expected = _expand(rules, num_layers, shapes, hf_config)
    ignored = _other_part(family, part, emb)
    missing = [n for n in expected if n not in shapes]
    unknown = sorted(n for n in shapes if n not in expected and not n.startswith(ignored))
    if missing or unknown:
        problems = [
            f"{what} variables: {_listed(names)}"
            for what, names in (("missing", missing), ("unknown", unknown))
            if names
        ]
        raise UserError(
            f"{prefix}: TF1 checkpoint does not match a {family} model as configured by "
            f"{config_source}: " + " | ".join(problems)
        )

    tensors = {}
    for name, (hf_name, transpose) in expected.items():
        value = np.asarray(reader.get_tensor(shapes[name][0]))
        tensors[hf_name] = value.T if transpose and value.ndim == 2 else value
    projection = "albert.encoder.embedding_hidden_mapping_in"
    if family == "albert" and projection + ".weight" not in tensors:
        # ALBERT's TF1 code projects only when embedding_size != hidden_size; transformers'
        # (and ours) always does. The identity is exact, so outputs are unchanged.
        width = hf_config["hidden_size"]
        tensors[projection + ".weight"] = np.eye(width, dtype=np.float32)
        tensors[projection + ".bias"] = np.zeros((width,), np.float32)
    try:
        ckpt = hf.from_tensors(hf_config, tensors, prefix, config_source)
    except UserError as e:  # its names are the HF ones: say which TF1 variable each came from
        renamed = [
            f"{h} <- {n}"
            for n, (h, _) in expected.items()
            if re.search(rf"(?<![\w.]){re.escape(h)}(?![\w.])", str(e))
        ]
        raise UserError(f"{e} (TF1 variables, renamed: {_listed(renamed)})") from None
    ckpt.tokenizer_files = {}
    for want, names in TOKENIZER_FILES[family].items():
        found = [os.path.join(directory, n) for n in names if os.path.isfile(os.path.join(directory, n))]
        if found:
            ckpt.tokenizer_files[want] = found[0]
    return ckpt


# --- finding and opening the checkpoint ------------------------------------------------------
def _find_checkpoint(path: str) -> tuple[str, str]:
    """(checkpoint prefix, directory holding it and its config/vocab)."""
    for suffix in (".index", ".meta"):
        if path.endswith(suffix) and os.path.isfile(path):
            path = path[: -len(suffix)]
    if os.path.isfile(path + ".index"):
        return path, os.path.dirname(path) or "."
    if not os.path.isdir(path):
        raise UserError(f"{path}: neither a directory nor a TF1 checkpoint prefix (no {path}.index)")
    state = os.path.join(path, "checkpoint")
    if os.path.isfile(state):
        latest = _tf().train.latest_checkpoint(path)
        if latest and os.path.isfile(latest + ".index"):
            return latest, path
    indexes = sorted(glob.glob(os.path.join(glob.escape(path), "*.index")))
    if len(indexes) == 1:
        return indexes[0][: -len(".index")], path
    if not indexes:
        raise UserError(
            f"{path}: no TF1 checkpoint here (no *.index file, and no 'checkpoint' file "
            "naming one); expected e.g. bert_model.ckpt.index + bert_model.ckpt.data-*"
        )
    names = ", ".join(os.path.basename(i)[: -len(".index")] for i in indexes)
    raise UserError(
        f"{path}: several checkpoints ({names}) and no 'checkpoint' file naming the "
        f"latest; pass the prefix of one, e.g. {indexes[-1][: -len('.index')]}"
    )


def _tf():
    try:
        from bert_jax import tf_setup

        tf_setup.start()
        import tensorflow as tf
    except ImportError:
        raise UserError("reading TF1 checkpoints needs TensorFlow: pip install tensorflow-cpu") from None
    return tf


def _open(prefix: str):
    tf = _tf()
    try:
        return tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError, RuntimeError) as e:
        raise UserError(f"{prefix}: cannot read this TF1 checkpoint ({str(e).splitlines()[0]})") from None


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise UserError(f"config {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a JSON object of model settings")
    return raw


def _family(prefix: str, shapes: dict) -> str:
    names = list(shapes)
    if "_CHECKPOINTABLE_OBJECT_GRAPH" in names or any("/.ATTRIBUTES/" in n for n in names):
        raise UserError(
            f"{prefix}: a TF2 object-based checkpoint (e.g. from tf-models-official); "
            "load_tf1 reads the name-based TF1 checkpoints of google-research/bert, "
            "albert and electra"
        )
    if any(n.startswith(("electra/", "generator/", "discriminator_predictions/")) for n in names):
        return "electra"
    if any(
        n.startswith(("bert/encoder/transformer/", "bert/encoder/embedding_hidden_mapping_in/"))
        for n in names
    ):
        return "albert"
    if any(n.startswith("bert/encoder/layer_") for n in names):
        return "bert"
    raise UserError(
        f"{prefix}: no BERT, ALBERT or ELECTRA variables (bert/encoder/layer_N/..., "
        "bert/encoder/transformer/..., electra/encoder/...) among: " + _listed(sorted(names))
    )


# --- config ---------------------------------------------------------------------------------
def _hf_config(family: str, raw: dict, source: str) -> dict:
    """A TF1 (or HF) config dict -> the HF config dict hf.from_tensors reads."""
    if raw.get("model_type", family) != family:
        raise UserError(
            f"{source}: model_type={raw['model_type']!r}, but the checkpoint holds {family} variables"
        )
    if family == "albert":
        odd = {k: raw[k] for k, v in ALBERT_DEFAULTS.items() if raw.get(k, v) != v}
        if odd:
            raise UserError(f"{source}: {odd} is not supported; expected {ALBERT_DEFAULTS}")
    out = {"model_type": family, **{k: raw[k] for k in CONFIG_KEYS if k in raw}}
    act = out.get("hidden_act", "gelu")
    out["hidden_act"] = ACTIVATIONS[family].get(act, act) if isinstance(act, str) else act
    return out


def _electra_config(
    prefix: str, shapes: dict, raw: dict | None, source: str | None, scope: str, emb: str, part: str
) -> dict:
    """ELECTRA's config: the given one for the discriminator, else sizes from the shapes."""

    def shape(name: str) -> tuple[int, ...]:
        if name not in shapes:
            hint = (
                " (and no electra_config.json or config.json to read them from)"
                if raw is None and part == "discriminator"
                else ""
            )
            raise UserError(
                f"{prefix}: no variable {name}, which the ELECTRA {part} sizes are read from{hint}"
            )
        return shapes[name][1]

    vocab, embedding = shape(f"{emb}/embeddings/word_embeddings")
    if raw is not None and part == "discriminator":
        return {"embedding_size": embedding, **_hf_config("electra", raw, source)}
    hidden = shape(f"{scope}/encoder/layer_0/attention/self/query/kernel")[1]
    layers = {int(m.group(1)) for n in shapes if (m := re.match(rf"{scope}/encoder/layer_(\d+)/", n))}
    given = _hf_config("electra", raw, source) if raw is not None else {}
    heads = (
        given["num_attention_heads"]
        if given.get("hidden_size") == hidden and "num_attention_heads" in given
        else max(1, hidden // 64)
    )
    sizes = {
        "model_type": "electra",
        "vocab_size": vocab,
        "embedding_size": embedding,
        "hidden_size": hidden,
        "num_hidden_layers": max(layers) + 1,
        "num_attention_heads": heads,
        "intermediate_size": shape(f"{scope}/encoder/layer_0/intermediate/dense/kernel")[1],
        "max_position_embeddings": shape(f"{emb}/embeddings/position_embeddings")[0],
        "type_vocab_size": shape(f"{emb}/embeddings/token_type_embeddings")[0],
    }
    return {"hidden_act": "gelu", "layer_norm_eps": 1e-12, **given, **sizes}


# --- the rule table -------------------------------------------------------------------------
# (group, TF1 name, HF name, transpose). "{n}" is the layer index. Groups: "core" (always
# there), "projection" (there iff embedding_size != hidden_size; ALBERT: also when present),
# "pooler" and each head
# (taken when any of their variables is there; then all must be).
Rule = tuple[str, str, str, bool]


def _dense(group: str, tf: str, hf_name: str) -> list[Rule]:
    """tf.layers.dense: kernel [in, out] -> torch Linear weight [out, in]."""
    return [
        (group, tf + "/kernel", hf_name + ".weight", True),
        (group, tf + "/bias", hf_name + ".bias", False),
    ]


def _norm(group: str, tf: str, hf_name: str) -> list[Rule]:
    return [
        (group, tf + "/gamma", hf_name + ".weight", False),
        (group, tf + "/beta", hf_name + ".bias", False),
    ]


def _output(group: str, tf: str, hf_name: str) -> list[Rule]:
    """output_weights [labels, hidden] are stored as [out, in] already: not transposed."""
    tf = tf + "/" if tf else ""
    return [
        (group, tf + "output_weights", hf_name + ".weight", False),
        (group, tf + "output_bias", hf_name + ".bias", False),
    ]


def _embeddings(tf: str, hf_name: str) -> list[Rule]:
    rules = [
        ("core", f"{tf}/{k}_embeddings", f"{hf_name}.{k}_embeddings.weight", False)
        for k in ("word", "position", "token_type")
    ]
    return rules + _norm("core", tf + "/LayerNorm", hf_name + ".LayerNorm")


def _bert_layers(tf: str, hf_name: str) -> list[Rule]:
    tf, hf_name = tf + "/layer_{n}/", hf_name + ".layer.{n}."
    rules = []
    for path in (
        "attention/self/query",
        "attention/self/key",
        "attention/self/value",
        "attention/output/dense",
        "intermediate/dense",
        "output/dense",
    ):
        rules += _dense("core", tf + path, hf_name + path.replace("/", "."))
    for path in ("attention/output/LayerNorm", "output/LayerNorm"):
        rules += _norm("core", tf + path, hf_name + path.replace("/", "."))
    return rules


def _rules(family: str, scope: str, emb: str) -> list[Rule]:
    if family == "bert":
        return (
            _embeddings("bert/embeddings", "bert.embeddings")
            + _bert_layers("bert/encoder", "bert.encoder")
            + _dense("pooler", "bert/pooler/dense", "bert.pooler.dense")
            + _dense("mlm", "cls/predictions/transform/dense", "cls.predictions.transform.dense")
            + _norm("mlm", "cls/predictions/transform/LayerNorm", "cls.predictions.transform.LayerNorm")
            + [("mlm", "cls/predictions/output_bias", "cls.predictions.bias", False)]
            + _output("nsp", "cls/seq_relationship", "cls.seq_relationship")
            + _output("classification", "", "classifier")  # run_classifier.py
            + _output("span", "cls/squad", "qa_outputs")
        )  # run_squad.py
    if family == "albert":
        # One shared layer (num_hidden_groups = inner_group_num = 1); its two LayerNorms are
        # unscoped in ALBERT's code, so TF names them LayerNorm and LayerNorm_1.
        g, h = (
            "bert/encoder/transformer/group_0/inner_group_0/",
            "albert.encoder.albert_layer_groups.0.albert_layers.0.",
        )
        return (
            _embeddings("bert/embeddings", "albert.embeddings")
            + _dense(
                "projection",
                "bert/encoder/embedding_hidden_mapping_in",
                "albert.encoder.embedding_hidden_mapping_in",
            )
            + _dense("core", g + "attention_1/self/query", h + "attention.query")
            + _dense("core", g + "attention_1/self/key", h + "attention.key")
            + _dense("core", g + "attention_1/self/value", h + "attention.value")
            + _dense("core", g + "attention_1/output/dense", h + "attention.dense")
            + _norm("core", g + "LayerNorm", h + "attention.LayerNorm")
            + _dense("core", g + "ffn_1/intermediate/dense", h + "ffn")
            + _dense("core", g + "ffn_1/intermediate/output/dense", h + "ffn_output")
            + _norm("core", g + "LayerNorm_1", h + "full_layer_layer_norm")
            + _dense("pooler", "bert/pooler/dense", "albert.pooler")
            + _dense("mlm", "cls/predictions/transform/dense", "predictions.dense")
            + _norm("mlm", "cls/predictions/transform/LayerNorm", "predictions.LayerNorm")
            + [("mlm", "cls/predictions/output_bias", "predictions.bias", False)]
            + _output("sop", "cls/seq_relationship", "sop_classifier.classifier")
            + _output("classification", "", "classifier")
            + _output("span", "cls/squad", "qa_outputs")
        )
    rules = (
        _embeddings(emb + "/embeddings", "electra.embeddings")
        + _dense("projection", scope + "/embeddings_project", "electra.embeddings_project")
        + _bert_layers(scope + "/encoder", "electra.encoder")
    )
    if scope == "generator":
        return (
            rules
            + _dense("mlm", "generator_predictions/dense", "generator_predictions.dense")
            + _norm("mlm", "generator_predictions/LayerNorm", "generator_predictions.LayerNorm")
            + [("mlm", "generator_predictions/output_bias", "generator_lm_head.bias", False)]
        )
    d = "discriminator_predictions"
    return (
        rules
        + _dense("rtd", d + "/dense", d + ".dense")
        + _dense("rtd", d + "/dense_1", d + ".dense_prediction")
    )


def _other_part(family: str, part: str, emb: str) -> tuple[str, ...]:
    """Name prefixes of the ELECTRA encoder not imported: known, skipped."""
    if family != "electra":
        return ()
    if part == "discriminator":
        return ("generator/", "generator_predictions/")
    others = ("electra/embeddings_project/", "electra/encoder/", "discriminator_predictions/")
    return others + (("electra/embeddings/",) if emb == "generator" else ())


def _expand(rules: list[Rule], num_layers: int, shapes: dict, hf_config: dict) -> dict[str, tuple[str, bool]]:
    """The TF1 variables this checkpoint should hold -> (HF name, transpose)."""
    embedding = hf_config.get("embedding_size", 128)
    present = {g for g, tf, _, _ in rules if tf.replace("{n}", "0") in shapes}
    take = {"core"} | (present - {"projection"})
    family = hf_config["model_type"]
    if family != "bert" and (
        embedding != hf_config["hidden_size"] or (family == "albert" and "projection" in present)
    ):
        take.add("projection")
    out = {}
    for group, tf, hf_name, transpose in rules:
        if group in take:
            for n in range(num_layers) if "{n}" in tf else [0]:
                out[tf.replace("{n}", str(n))] = (hf_name.replace("{n}", str(n)), transpose)
    return out


def _listed(names: list[str]) -> str:
    more = f", ... and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
    return ", ".join(names[:MAX_LISTED]) + more
