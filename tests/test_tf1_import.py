"""Original TF1 checkpoints (google-research/bert, albert, electra) imported exactly.

Random transformers models are written as real TF1 checkpoints (tf.compat.v1 Saver) under
the variable names and layouts of the original repositories, by an inverse mapping written
here independently of bert_jax.convert.tf1; every output of the imported model must match
transformers within 1e-5 (fp32) on padded random ids."""

import json
import os
import re
import shutil
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402
import transformers as hf_lib  # noqa: E402

from bert_jax.convert.tf1 import load_tf1  # noqa: E402
from bert_jax.errors import UserError  # noqa: E402

TOL = 1e-5
B, S = 3, 12
SIZES = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=40,
    type_vocab_size=2,
)
# What the original repos write beside their checkpoints (hidden_act "gelu" in both: BERT's
# is the erf GELU, ALBERT's modeling.py computes the tanh approximation).
BERT_CONFIG = dict(
    SIZES,
    hidden_act="gelu",
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    initializer_range=0.02,
)
ALBERT_CONFIG = dict(
    BERT_CONFIG,
    embedding_size=16,
    num_hidden_groups=1,
    inner_group_num=1,
    net_structure_type=0,
    gap_size=0,
    num_memory_blocks=0,
    down_scale_factor=1,
)
# Optimizer state a real pretraining checkpoint carries; all of it must be skipped.
SLOTS = (
    "bert/embeddings/word_embeddings/adam_m",
    "bert/embeddings/word_embeddings/adam_v",
    "cls/predictions/output_bias/adam_m",
)


# --- transformers state dict -> TF1 variables (the inverse of the import) ------------------
def to_tf1(model, scopes: list[tuple[str, str]], exact: dict[str, str]) -> dict[str, np.ndarray]:
    """`exact`: HF name -> TF1 name, stored as is (output_weights are [out, in] in TF1 too).
    Otherwise the HF prefix is renamed by the first matching `scopes` entry, `.layer.N.`
    becomes `/layer_N/`, and the leaf follows the TF1 layer that made it: embedding tables
    keep their name, LayerNorm weight/bias -> gamma/beta, Linear weight -> kernel [in, out]."""
    out = {}
    for name, t in model.state_dict().items():
        a = t.detach().numpy().copy()
        if name in exact:
            out[exact[name]] = a
            continue
        if "decoder" in name or name.startswith("generator_lm_head") or name.endswith("_ids"):
            continue  # tied to the word embeddings / buffers
        for hf_scope, tf_scope in scopes:
            if name.startswith(hf_scope):
                name = tf_scope + name[len(hf_scope) :]
                break
        path, leaf = name.rsplit(".", 1)
        path = re.sub(r"\.layer\.(\d+)\.", r"/layer_\1/", path).replace(".", "/")
        if path.endswith("_embeddings"):
            out[path] = a
        elif path.rsplit("/", 1)[-1].startswith("LayerNorm"):
            out[f"{path}/{'gamma' if leaf == 'weight' else 'beta'}"] = a
        else:
            out[f"{path}/{'kernel' if leaf == 'weight' else 'bias'}"] = a.T if leaf == "weight" else a
    return out


BERT_EXACT = {
    "cls.predictions.bias": "cls/predictions/output_bias",
    "cls.seq_relationship.weight": "cls/seq_relationship/output_weights",
    "cls.seq_relationship.bias": "cls/seq_relationship/output_bias",
    "classifier.weight": "output_weights",
    "classifier.bias": "output_bias",
    "qa_outputs.weight": "cls/squad/output_weights",
    "qa_outputs.bias": "cls/squad/output_bias",
}
_G, _T = (
    "albert.encoder.albert_layer_groups.0.albert_layers.0.",
    "bert/encoder/transformer/group_0/inner_group_0/",
)
ALBERT_SCOPES = [
    (_G + "attention.query", _T + "attention_1/self/query"),
    (_G + "attention.key", _T + "attention_1/self/key"),
    (_G + "attention.value", _T + "attention_1/self/value"),
    (_G + "attention.dense", _T + "attention_1/output/dense"),
    (_G + "attention.LayerNorm", _T + "LayerNorm"),
    (_G + "ffn_output", _T + "ffn_1/intermediate/output/dense"),
    (_G + "ffn", _T + "ffn_1/intermediate/dense"),
    (_G + "full_layer_layer_norm", _T + "LayerNorm_1"),
    ("albert.pooler", "bert/pooler/dense"),
    ("albert.", "bert/"),
    ("predictions.dense", "cls/predictions/transform/dense"),
    ("predictions.LayerNorm", "cls/predictions/transform/LayerNorm"),
]
ALBERT_EXACT = {
    "predictions.bias": "cls/predictions/output_bias",
    "sop_classifier.classifier.weight": "cls/seq_relationship/output_weights",
    "sop_classifier.classifier.bias": "cls/seq_relationship/output_bias",
}


def write_tf1(
    directory,
    variables: dict[str, np.ndarray],
    prefix: str = "model.ckpt-7",
    config: dict | None = None,
    config_name: str = "bert_config.json",
    vocab: str | None = "vocab.txt",
) -> str:
    """A real TF1 checkpoint: graph-mode variables under `variables`' names, saved by a v1 Saver."""
    os.makedirs(directory, exist_ok=True)
    graph = tf.Graph()
    with graph.as_default():
        tf_vars = {n: tf.compat.v1.Variable(v, name=n) for n, v in variables.items()}
        tf_vars["global_step"] = tf.compat.v1.Variable(np.int64(7), name="global_step")
        saver = tf.compat.v1.train.Saver(var_list=tf_vars)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            path = saver.save(sess, os.path.join(directory, prefix))
    if config is not None:
        with open(os.path.join(directory, config_name), "w") as f:
            json.dump(config, f)
    if vocab:
        with open(os.path.join(directory, vocab), "w") as f:
            f.write("[PAD]\n[UNK]\n")
    return path


def randomize(model, seed: int):
    torch.manual_seed(seed)
    with torch.no_grad():  # every tensor random; LayerNorm scales (1-D weights) around 1
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.2 + float(name.endswith("weight") and p.ndim == 1))
    return model.eval()


def random_batch(seed: int = 1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, SIZES["vocab_size"], size=(B, S))
    mask = np.ones((B, S), np.int64)
    mask[1, 7:] = 0  # padding
    mask[2, 4:] = 0
    ids[mask == 0] = 0
    segments = rng.integers(0, 2, size=(B, S)) * mask
    return ids, mask, segments


def max_diffs(model, ckpt, outputs: dict[str, str]) -> dict[str, float]:
    """Max abs difference of the final hidden states and of each head (ours -> HF output)."""
    ids, mask, segments = random_batch()
    with torch.no_grad():
        theirs = model(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            token_type_ids=torch.tensor(segments),
            output_hidden_states=True,
        )
    ours = ckpt.model()(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(segments))
    diffs = {"hidden": np.abs(np.asarray(ours["hidden"]) - theirs.hidden_states[-1].numpy()).max()}
    for mine, their_name in outputs.items():
        value = getattr(theirs, their_name).numpy()
        diffs[mine] = np.abs(np.asarray(ours[mine]).reshape(value.shape) - value).max()
    print({k: f"{v:.2e}" for k, v in diffs.items()})
    return diffs


# --- exact imports ------------------------------------------------------------------------
CASES = [
    (
        "BertForPreTraining",
        {"mlm_logits": "prediction_logits", "nsp_logits": "seq_relationship_logits"},
        ("mlm", "nsp"),
    ),
    ("BertForSequenceClassification", {"classification_logits": "logits"}, ("classification",)),
    ("BertForQuestionAnswering", {"start_logits": "start_logits", "end_logits": "end_logits"}, ("span",)),
]


@pytest.mark.parametrize("cls_name,outputs,heads", CASES, ids=[c[0] for c in CASES])
def test_bert(tmp_path, cls_name, outputs, heads):
    num_labels = 2 if cls_name.endswith("QuestionAnswering") else 3  # start/end: 2 outputs
    model = randomize(getattr(hf_lib, cls_name)(hf_lib.BertConfig(**SIZES, num_labels=num_labels)), seed=0)
    variables = to_tf1(model, [], BERT_EXACT)
    variables.update(
        {n: np.zeros_like(variables[n.rsplit("/", 1)[0]]) for n in SLOTS if n.rsplit("/", 1)[0] in variables}
    )
    write_tf1(tmp_path, variables, "bert_model.ckpt", BERT_CONFIG)

    ckpt = load_tf1(str(tmp_path))
    assert ckpt.config.family == "bert" and ckpt.heads == heads
    assert ckpt.config.hidden_act == "gelu" and ckpt.config.num_layers == 2
    assert ckpt.tokenizer_files == {"vocab.txt": str(tmp_path / "vocab.txt")}
    if cls_name.endswith("Classification"):
        assert ckpt.num_labels == 3
    diffs = max_diffs(model, ckpt, outputs)
    assert all(v <= TOL for v in diffs.values()), diffs


def test_albert(tmp_path):
    """One shared layer group, embedding 16 -> hidden 32, MLM + sentence order."""
    config = hf_lib.AlbertConfig(**SIZES, embedding_size=16, hidden_act="gelu_new")
    model = randomize(hf_lib.AlbertForPreTraining(config), seed=2)
    variables = to_tf1(model, ALBERT_SCOPES, ALBERT_EXACT)
    assert _T + "ffn_1/intermediate/output/dense/kernel" in variables
    write_tf1(
        tmp_path, variables, "model.ckpt-best", ALBERT_CONFIG, "albert_config.json", vocab="30k-clean.model"
    )

    ckpt = load_tf1(str(tmp_path / "model.ckpt-best"))  # a prefix works as well as the directory
    assert ckpt.config.family == "albert" and ckpt.heads == ("mlm", "sop")
    assert ckpt.config.share_layers and ckpt.config.embed_dim == 16
    assert ckpt.config.hidden_act == "gelu_tanh"
    assert ckpt.tokenizer_files == {"spiece.model": str(tmp_path / "30k-clean.model")}
    diffs = max_diffs(model, ckpt, {"mlm_logits": "prediction_logits", "sop_logits": "sop_logits"})
    assert all(v <= TOL for v in diffs.values()), diffs


@pytest.mark.parametrize("projection", ["absent", "present"])
def test_albert_embedding_as_wide_as_hidden(tmp_path, projection):
    """ALBERT's TF1 code projects the embeddings only when embedding_size != hidden_size;
    transformers' AlbertModel always does. Without the variable the import holds an identity
    projection (exact); with it, the variable's values."""
    config = hf_lib.AlbertConfig(**SIZES, embedding_size=32, hidden_act="gelu_new")
    model = randomize(hf_lib.AlbertForPreTraining(config), seed=5)
    variables = to_tf1(model, ALBERT_SCOPES, ALBERT_EXACT)
    if projection == "absent":
        with torch.no_grad():
            model.albert.encoder.embedding_hidden_mapping_in.weight.copy_(torch.eye(32))
            model.albert.encoder.embedding_hidden_mapping_in.bias.zero_()
        for leaf in ("kernel", "bias"):
            del variables[f"bert/encoder/embedding_hidden_mapping_in/{leaf}"]
    write_tf1(
        tmp_path,
        variables,
        "model.ckpt-1",
        dict(ALBERT_CONFIG, embedding_size=32),
        "albert_config.json",
        vocab="30k-clean.model",
    )

    ckpt = load_tf1(str(tmp_path))
    assert ckpt.config.embed_dim == 32 and ckpt.config.embedding_projection
    diffs = max_diffs(model, ckpt, {"mlm_logits": "prediction_logits", "sop_logits": "sop_logits"})
    assert all(v <= TOL for v in diffs.values()), diffs


def test_electra_discriminator_and_generator(tmp_path):
    """The original layout: discriminator under electra/, generator under generator/, both
    on electra/embeddings; no config file, so every size is read off the shapes."""
    common = dict(SIZES, embedding_size=16)
    disc = randomize(
        hf_lib.ElectraForPreTraining(
            hf_lib.ElectraConfig(**dict(common, hidden_size=128, num_attention_heads=2))
        ),
        seed=3,
    )
    gen = randomize(
        hf_lib.ElectraForMaskedLM(
            hf_lib.ElectraConfig(
                **dict(
                    common, hidden_size=64, num_hidden_layers=1, num_attention_heads=1, intermediate_size=29
                )
            )
        ),
        seed=4,
    )
    gen.electra.embeddings.load_state_dict(disc.electra.embeddings.state_dict())  # shared in ELECTRA
    variables = to_tf1(
        disc, [("discriminator_predictions.dense_prediction", "discriminator_predictions.dense_1")], {}
    )
    gen_vars = to_tf1(
        gen, [("electra.", "generator.")], {"generator_lm_head.bias": "generator_predictions/output_bias"}
    )
    variables.update({n: v for n, v in gen_vars.items() if not n.startswith("generator/embeddings/")})
    assert {"generator/embeddings_project/kernel", "electra/embeddings_project/kernel"} <= set(variables)
    variables["electra/encoder/layer_0/output/dense/kernel/adam_m"] = np.zeros((37, 128), np.float32)
    write_tf1(tmp_path, variables, "electra_small")
    os.remove(tmp_path / "checkpoint")  # the released zips: found as the single *.index file

    ckpt = load_tf1(str(tmp_path))
    assert ckpt.config.family == "electra" and ckpt.heads == ("rtd",)
    assert (ckpt.config.hidden_size, ckpt.config.num_heads, ckpt.config.num_layers) == (128, 2, 2)
    assert ckpt.config.embed_dim == 16 and ckpt.config.intermediate_size == 37
    diffs = max_diffs(disc, ckpt, {"rtd_logits": "logits"})
    assert all(v <= TOL for v in diffs.values()), diffs

    ckpt = load_tf1(str(tmp_path), part="generator")
    assert ckpt.heads == ("mlm",)
    assert (ckpt.config.hidden_size, ckpt.config.num_heads, ckpt.config.num_layers) == (64, 1, 1)
    diffs = max_diffs(gen, ckpt, {"mlm_logits": "logits"})
    assert all(v <= TOL for v in diffs.values()), diffs
    assert ckpt.tokenizer_files == {"vocab.txt": str(tmp_path / "vocab.txt")}

    # With a (discriminator) config: it rules the discriminator; the generator keeps its shapes.
    (tmp_path / "electra_config.json").write_text(
        json.dumps(dict(BERT_CONFIG, hidden_size=128, num_attention_heads=4))
    )
    assert load_tf1(str(tmp_path)).config.num_heads == 4
    assert load_tf1(str(tmp_path), part="generator").config.num_heads == 1


# --- errors -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bert_variables():
    return to_tf1(randomize(hf_lib.BertForPreTraining(hf_lib.BertConfig(**SIZES)), seed=0), [], BERT_EXACT)


def test_unknown_missing_and_config_errors(tmp_path, bert_variables):
    variables = dict(bert_variables)
    del variables["bert/encoder/layer_1/attention/self/key/kernel"]
    variables["bert/encoder/layer_0/attention/self/surprise/kernel"] = np.zeros((32, 32), np.float32)
    variables["bert/encoder/layer_2/output/dense/bias"] = np.zeros((32,), np.float32)  # a 3rd layer
    write_tf1(tmp_path, variables, "bert_model.ckpt", BERT_CONFIG)
    with pytest.raises(UserError) as e:
        load_tf1(str(tmp_path))
    msg = str(e.value)
    assert "bert_model.ckpt: TF1 checkpoint does not match a bert model" in msg
    assert "missing variables: bert/encoder/layer_1/attention/self/key/kernel |" in msg
    assert "unknown variables: " in msg
    assert "bert/encoder/layer_0/attention/self/surprise/kernel" in msg
    assert "bert/encoder/layer_2/output/dense/bias" in msg
    assert "adam" not in msg and "global_step" not in msg

    with pytest.raises(UserError, match="part='generator' applies to ELECTRA"):
        load_tf1(str(tmp_path), part="generator")
    os.remove(tmp_path / "bert_config.json")
    with pytest.raises(UserError, match=r"no bert_config.json or config.json beside the bert checkpoint"):
        load_tf1(str(tmp_path))
    with pytest.raises(UserError, match="does not exist"):
        load_tf1(str(tmp_path), config=str(tmp_path / "nope.json"))

    for suffix in (".index", ".data-00000-of-00001"):  # a second checkpoint, no 'checkpoint' file
        shutil.copy(tmp_path / f"bert_model.ckpt{suffix}", tmp_path / f"other.ckpt{suffix}")
    os.remove(tmp_path / "checkpoint")
    with pytest.raises(UserError, match=r"several checkpoints \(bert_model.ckpt, other.ckpt\)"):
        load_tf1(str(tmp_path))


def test_misshaped_variable_names_both_names(tmp_path, bert_variables):
    variables = dict(bert_variables)
    variables["bert/encoder/layer_0/output/dense/bias"] = np.zeros((31,), np.float32)
    write_tf1(tmp_path, variables, "bert_model.ckpt", BERT_CONFIG)
    with pytest.raises(UserError) as e:
        load_tf1(str(tmp_path))
    msg = str(e.value)
    assert "bert.encoder.layer.0.output.dense.bias: shape (31,) does not fit" in msg
    assert "bert.encoder.layer.0.output.dense.bias <- bert/encoder/layer_0/output/dense/bias" in msg


def test_no_checkpoint_or_not_tf1(tmp_path):
    with pytest.raises(UserError, match="neither a directory nor a TF1 checkpoint prefix"):
        load_tf1(str(tmp_path / "nope"))
    (tmp_path / "bert_config.json").write_text(json.dumps(BERT_CONFIG))
    with pytest.raises(UserError, match=r"no TF1 checkpoint here \(no \*.index file"):
        load_tf1(str(tmp_path))
    write_tf1(tmp_path / "other", {"dense/kernel": np.zeros((2, 2), np.float32)}, vocab=None)
    with pytest.raises(UserError, match="no BERT, ALBERT or ELECTRA variables .* among: dense/kernel"):
        load_tf1(str(tmp_path / "other"))


def test_imports_neither_torch_nor_tensorflow_up_front():
    """TF is imported only when a checkpoint is read; torch/transformers never."""
    code = (
        "import sys, bert_jax.convert.tf1; "
        "print(sorted(m for m in ('torch', 'transformers', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_cli_import_tf1_into_a_workdir_then_export_to_hf(tmp_path, bert_variables):
    """bert-jax import --from tf1 -> workdir -> bert-jax export --format hf: transformers
    loads BertForPreTraining with the original TF1 weights, exactly."""
    from bert_jax import cli

    write_tf1(tmp_path / "tf1", bert_variables, "bert_model.ckpt", BERT_CONFIG)
    assert (
        cli.main(
            ["import", "--from", "tf1", "--source", str(tmp_path / "tf1"), "--output", str(tmp_path / "work")]
        )
        == 0
    )
    assert (
        cli.main(
            [
                "export",
                "--checkpoint",
                str(tmp_path / "work"),
                "--format",
                "hf",
                "--output",
                str(tmp_path / "hf"),
            ]
        )
        == 0
    )
    model, info = hf_lib.BertForPreTraining.from_pretrained(str(tmp_path / "hf"), output_loading_info=True)
    assert not any(info.values())
    query = model.bert.encoder.layer[1].attention.self.query.weight.detach().numpy()
    np.testing.assert_array_equal(query, bert_variables["bert/encoder/layer_1/attention/self/query/kernel"].T)
