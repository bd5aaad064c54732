"""Parity with transformers v5 (PyTorch, fp32): random weights in HF, saved as safetensors,
imported by bert_jax.convert.hf; every output within 1e-5 max abs on padded random ids."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers as tf  # noqa: E402

from bert_jax.convert import hf  # noqa: E402
from bert_jax.errors import UserError  # noqa: E402

TOL = 1e-5
B, S = 3, 12
COMMON = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=40,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
)
CONFIGS = {
    "bert": lambda: tf.BertConfig(**COMMON, type_vocab_size=2),
    "roberta": lambda: tf.RobertaConfig(**COMMON, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5),
    "albert": lambda: tf.AlbertConfig(**COMMON, type_vocab_size=2, embedding_size=16, hidden_act="gelu_new"),
    "electra": lambda: tf.ElectraConfig(**COMMON, type_vocab_size=2, embedding_size=16),
    # Embedding width equal to the hidden width: AlbertModel still has its projection,
    # ElectraModel has none (#18).
    "albert_eq": lambda: tf.AlbertConfig(
        **COMMON, type_vocab_size=2, embedding_size=32, hidden_act="gelu_new"
    ),
    "electra_eq": lambda: tf.ElectraConfig(**COMMON, type_vocab_size=2, embedding_size=32),
}
# (family, HF class, the outputs to compare: ours -> HF's)
CASES = [
    ("bert", "BertModel", {"pooled": "pooler_output"}),
    (
        "bert",
        "BertForPreTraining",
        {"mlm_logits": "prediction_logits", "nsp_logits": "seq_relationship_logits"},
    ),
    ("bert", "BertForMaskedLM", {"mlm_logits": "logits"}),
    ("bert", "BertForSequenceClassification", {"classification_logits": "logits"}),
    ("bert", "BertForTokenClassification", {"token_classification_logits": "logits"}),
    ("bert", "BertForQuestionAnswering", {"start_logits": "start_logits", "end_logits": "end_logits"}),
    ("roberta", "RobertaModel", {"pooled": "pooler_output"}),
    ("roberta", "RobertaForMaskedLM", {"mlm_logits": "logits"}),
    ("roberta", "RobertaForSequenceClassification", {"classification_logits": "logits"}),
    ("roberta", "RobertaForTokenClassification", {"token_classification_logits": "logits"}),
    ("roberta", "RobertaForQuestionAnswering", {"start_logits": "start_logits", "end_logits": "end_logits"}),
    ("albert", "AlbertModel", {"pooled": "pooler_output"}),
    ("albert", "AlbertForPreTraining", {"mlm_logits": "prediction_logits", "sop_logits": "sop_logits"}),
    ("albert", "AlbertForMaskedLM", {"mlm_logits": "logits"}),
    ("albert", "AlbertForSequenceClassification", {"classification_logits": "logits"}),
    ("albert", "AlbertForTokenClassification", {"token_classification_logits": "logits"}),
    ("albert", "AlbertForQuestionAnswering", {"start_logits": "start_logits", "end_logits": "end_logits"}),
    ("electra", "ElectraModel", {}),
    ("electra", "ElectraForPreTraining", {"rtd_logits": "logits"}),
    ("electra", "ElectraForMaskedLM", {"mlm_logits": "logits"}),
    ("electra", "ElectraForSequenceClassification", {"classification_logits": "logits"}),
    ("electra", "ElectraForTokenClassification", {"token_classification_logits": "logits"}),
    ("electra", "ElectraForQuestionAnswering", {"start_logits": "start_logits", "end_logits": "end_logits"}),
]
CASES += [(f + "_eq", cls, out) for f, cls, out in CASES if f in ("albert", "electra")]


def save_random_hf(family: str, cls_name: str, directory, num_labels: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    config = CONFIGS[family]()
    config.num_labels = num_labels
    model = getattr(tf, cls_name)(config).eval()
    with torch.no_grad():  # every tensor random; LayerNorm scales (1-D weights) around 1
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.2 + float(name.endswith("weight") and p.ndim == 1))
    model.save_pretrained(directory)
    return model


def random_batch(config, seed: int = 1):
    rng = np.random.default_rng(seed)
    pad = config.pad_token_id
    ids = rng.integers(3, config.vocab_size, size=(B, S))
    mask = np.ones((B, S), np.int64)
    mask[1, 7:] = 0  # padding
    mask[2, 4:] = 0
    ids[mask == 0] = pad
    segments = rng.integers(0, config.type_vocab_size, size=(B, S)) * mask
    return ids, mask, segments


def hf_outputs(model, ids, mask, segments):
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            token_type_ids=torch.tensor(segments),
            output_hidden_states=True,
        )
    return out


@pytest.mark.parametrize(
    "family,cls_name,outputs", CASES, ids=[c[1] + ("-E=H" if c[0].endswith("_eq") else "") for c in CASES]
)
def test_parity(tmp_path, family, cls_name, outputs):
    num_labels = 2 if cls_name.endswith(("QuestionAnswering", "PreTraining")) else 3
    model = save_random_hf(family, cls_name, tmp_path, num_labels)
    ids, mask, segments = random_batch(model.config)
    theirs = hf_outputs(model, ids, mask, segments)

    ckpt = hf.load(str(tmp_path))
    ours = ckpt.model()(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(segments))

    hidden = (
        theirs.hidden_states[-1].numpy()
        if theirs.hidden_states is not None
        else theirs.last_hidden_state.numpy()
    )
    diffs = {"hidden": np.abs(np.asarray(ours["hidden"]) - hidden).max()}
    for mine, their_name in outputs.items():
        theirs_value = getattr(theirs, their_name).numpy()
        diffs[mine] = np.abs(np.asarray(ours[mine]).reshape(theirs_value.shape) - theirs_value).max()
    print(cls_name, {k: f"{v:.2e}" for k, v in diffs.items()})
    assert all(v <= TOL for v in diffs.values()), diffs

    # HF -> ours -> HF: the same tensors, bit for bit (minus the buffers and tied copies
    # transformers may save beside the weights).
    hf.save(
        ckpt.config,
        ckpt.heads,
        ckpt.params,
        str(tmp_path / "again"),
        num_labels=ckpt.num_labels,
        label_names=ckpt.label_names,
    )
    before = hf.read_safetensors(str(tmp_path / "model.safetensors"))
    after = hf.read_safetensors(str(tmp_path / "again" / "model.safetensors"))
    tied = hf._tied_aliases(ckpt.config.family, hf.PREFIXES[ckpt.config.family])
    before = {k: v for k, v in before.items() if not k.endswith(hf.IGNORED_SUFFIXES) and k not in tied}
    assert set(before) == set(after), set(before) ^ set(after)
    for name, value in before.items():
        np.testing.assert_array_equal(value, after[name], err_msg=name)


def test_mlm_at_masked_positions_equals_full_logits(tmp_path):
    model = save_random_hf("bert", "BertForPreTraining", tmp_path)
    ids, mask, segments = random_batch(model.config)
    m = hf.load(str(tmp_path)).model()
    positions = jnp.asarray([[1, 5, 0], [2, 3, 6], [0, 1, 3]])
    full = m(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(segments))["mlm_logits"]
    at = m(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(segments), masked_positions=positions)[
        "mlm_logits"
    ]
    assert at.shape == (B, 3, 99)
    np.testing.assert_allclose(
        at, np.take_along_axis(np.asarray(full), np.asarray(positions)[..., None], 1), atol=1e-6
    )


def test_detects_heads_and_labels(tmp_path):
    save_random_hf("roberta", "RobertaForSequenceClassification", tmp_path, num_labels=5)
    ckpt = hf.load(str(tmp_path))
    assert ckpt.config.family == "roberta" and ckpt.heads == ("classification",)
    assert ckpt.num_labels == 5
    assert ckpt.config.position_offset == 2


def test_missing_unexpected_misshaped_are_listed(tmp_path):
    from safetensors.numpy import save_file

    save_random_hf("bert", "BertModel", tmp_path)
    tensors = hf.read_safetensors(str(tmp_path / "model.safetensors"))
    del tensors["encoder.layer.1.attention.self.key.weight"]
    tensors["encoder.layer.0.output.dense.bias"] = np.zeros((31,), np.float32)
    tensors["surprise.weight"] = np.zeros((2,), np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(UserError) as e:
        hf.load(str(tmp_path))
    msg = str(e.value)
    assert "missing tensors: encoder.layer.1.attention.self.key.weight" in msg
    assert "unexpected tensors: surprise.weight" in msg
    assert "encoder.layer.0.output.dense.bias: shape (31,)" in msg


def test_refuses_pickle_and_oversized_header(tmp_path):
    save_random_hf("bert", "BertModel", tmp_path)
    os.remove(tmp_path / "model.safetensors")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(UserError, match="safetensors only.*arbitrary code"):
        hf.load(str(tmp_path))
    bad = tmp_path / "big.safetensors"
    bad.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(UserError, match="exceeds"):
        hf.read_safetensors(str(bad))


def test_missing_directory_and_config(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        hf.load(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="no config.json"):
        hf.load(str(tmp_path))


@pytest.mark.parametrize(
    "index,message",
    [
        ("{not json", "not a safetensors index"),
        ('{"metadata": {}}', "not a safetensors index"),
        ('{"weight_map": {"a.weight": "../../etc/passwd"}}', "is not a file name in"),
        ('{"weight_map": {"a.weight": "/abs/model.safetensors"}}', "is not a file name in"),
    ],
)
def test_malformed_or_escaping_index_is_refused(tmp_path, index, message):
    save_random_hf("bert", "BertModel", tmp_path)
    os.remove(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(index)
    with pytest.raises(UserError, match=message):
        hf.load(str(tmp_path))


def test_malformed_header_is_refused(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((5).to_bytes(8, "little") + b"{nope")
    with pytest.raises(UserError, match="header is not valid JSON"):
        hf.read_safetensors(str(bad))
    truncated = b'{"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 99]}}'[:40]
    bad.write_bytes((40).to_bytes(8, "little") + truncated)
    with pytest.raises(UserError):
        hf.read_safetensors(str(bad))


@pytest.mark.parametrize(
    "header",
    [
        b"[1, 2]",
        b'{"t": 3}',
        b'{"t": {"dtype": "F32", "shape": [4]}}',
        b'{"t": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}',
    ],
)
def test_malformed_header_entries_are_one_line_errors(tmp_path, header):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))
    with pytest.raises(UserError, match=str(bad)):
        hf.read_safetensors(str(bad))
