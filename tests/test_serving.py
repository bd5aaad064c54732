"""Serving exports: the StableHLO module and the TF SavedModel, reloaded, give the model's own
outputs within 1e-5 max abs on padded random ids, at more than one batch size."""

import json
import os

import numpy as np
import pytest

from bert_jax.convert import serving
from bert_jax.errors import UserError
from bert_jax.models import model as M
from bert_jax.models.config import EncoderConfig, get_preset

TOL = 1e-5
S = 16
VOCAB = 101


def _bert():
    return M.create(get_preset("bert-tiny", vocab_size=VOCAB), heads=("classification",), num_labels=3)


def _electra():
    config = EncoderConfig(
        family="electra",
        vocab_size=VOCAB,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=48,
        embedding_size=16,
        use_pooler=False,
        max_position_embeddings=64,
    )
    return M.create(config, heads=("rtd",))


MODELS = {
    "bert": (_bert, ["classification_logits", "hidden", "pooled"]),
    "electra": (_electra, ["hidden", "rtd_logits"]),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request):
    make, outputs = MODELS[request.param]
    return make(), outputs


def _batch(batch: int, seed: int):
    """Random ids with right padding (pad id 0, mask 0) of a different length per row."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, (batch, S)).astype(np.int32)
    lengths = rng.integers(3, S + 1, batch)
    lengths[0] = S
    mask = (np.arange(S)[None] < lengths[:, None]).astype(np.int32)
    types = ((np.arange(S)[None] >= lengths[:, None] // 2) & (mask == 1)).astype(np.int32)
    return ids * mask, mask, types


def _check(got: dict, model, ids, mask, types, outputs):
    want = model(ids, mask, types)
    assert sorted(got) == outputs
    for name in outputs:
        assert got[name].shape == want[name].shape, name
        err = float(np.max(np.abs(np.asarray(got[name]) - np.asarray(want[name]))))
        assert err <= TOL, f"{name}: max abs {err}"


def test_stablehlo_symbolic_batch(case, tmp_path):
    model, outputs = case
    info = serving.export_stablehlo(model, str(tmp_path), seq_len=S)
    assert sorted(os.listdir(tmp_path)) == ["model.stablehlo", "params.npz", "serving_signature.json"]
    with open(tmp_path / "serving_signature.json") as f:
        signature = json.load(f)
    assert [i["name"] for i in signature["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(i["shape"] == [None, S] and i["dtype"] == "int32" for i in signature["inputs"])
    assert sorted(o["name"] for o in signature["outputs"]) == outputs
    hidden = next(o for o in signature["outputs"] if o["name"] == "hidden")
    assert hidden["shape"] == [None, S, model.config.hidden_size] and hidden["dtype"] == "float32"
    assert info["files"]["params.npz"] > 4 * info["params"]["count"]

    serve = serving.load_stablehlo(str(tmp_path))
    for batch, seed in ((2, 0), (5, 1)):
        ids, mask, types = _batch(batch, seed)
        _check(serve(ids.astype(np.int64), mask, types), model, ids, mask, types, outputs)


def test_stablehlo_fixed_batch_some_outputs_two_platforms(tmp_path):
    model = _bert()
    info = serving.export_stablehlo(
        model, str(tmp_path), batch=3, seq_len=S, outputs=["classification_logits"], platforms=["cpu", "cuda"]
    )
    assert info["platforms"] == ["cpu", "cuda"]
    assert info["outputs"] == [{"name": "classification_logits", "dtype": "float32", "shape": [3, 3]}]
    serve = serving.load_stablehlo(str(tmp_path))
    ids, mask, types = _batch(3, 2)
    _check(serve(ids, mask, types), model, ids, mask, types, ["classification_logits"])
    # Defaults: no padding, segment 0.
    _check(serve(ids), model, ids, np.ones_like(ids), np.zeros_like(ids), ["classification_logits"])
    with pytest.raises(UserError, match=r"takes \[3, 16\]"):
        serve(*_batch(2, 3))


def test_savedmodel(case, tmp_path):
    import tensorflow as tf

    model, outputs = case
    info = serving.export_savedmodel(model, str(tmp_path), seq_len=S)
    assert "saved_model.pb" in info["files"] and "serving_signature.json" in info["files"]
    fn = tf.saved_model.load(str(tmp_path)).signatures["serving_default"]
    specs = fn.structured_input_signature[1]
    assert sorted(specs) == ["attention_mask", "input_ids", "token_type_ids"]
    assert all(s.dtype == tf.int32 and s.shape.as_list() == [None, S] for s in specs.values())
    for batch, seed in ((2, 4), (4, 5)):
        ids, mask, types = _batch(batch, seed)
        got = fn(
            input_ids=tf.constant(ids), attention_mask=tf.constant(mask), token_type_ids=tf.constant(types)
        )
        _check({k: v.numpy() for k, v in got.items()}, model, ids, mask, types, outputs)


def test_bad_input(tmp_path):
    model = _bert()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("x")
    with pytest.raises(UserError, match="not empty.*overwrite=True"):
        serving.export_stablehlo(model, str(tmp_path / "full"), seq_len=S)
    with pytest.raises(UserError, match="not empty"):
        serving.export_savedmodel(model, str(tmp_path / "full"), seq_len=S)
    info = serving.export_stablehlo(
        model, str(tmp_path / "full"), seq_len=S, outputs=["pooled"], overwrite=True
    )
    assert [o["name"] for o in info["outputs"]] == ["pooled"]

    with pytest.raises(UserError, match=r"unknown output\(s\) \['rtd_logits'\].*classification_logits"):
        serving.export_stablehlo(model, str(tmp_path / "a"), seq_len=S, outputs=["rtd_logits"])
    with pytest.raises(UserError, match="unknown output"):
        serving.export_savedmodel(model, str(tmp_path / "b"), seq_len=S, outputs=["mlm_logits"])
    with pytest.raises(UserError, match="seq_len=600 is longer"):
        serving.export_stablehlo(model, str(tmp_path / "c"), seq_len=600)
    with pytest.raises(UserError, match="batch=0"):
        serving.export_stablehlo(model, str(tmp_path / "d"), batch=0, seq_len=S)
    with pytest.raises(UserError, match="platforms"):
        serving.export_stablehlo(model, str(tmp_path / "e"), seq_len=S, platforms=["gpu"])
    with pytest.raises(UserError, match="no serving_signature.json"):
        serving.load_stablehlo(str(tmp_path))
    assert not any((tmp_path / d).exists() for d in "abcde")
