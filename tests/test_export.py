"""Export to Hugging Face: transformers v5 loads every family and head with no missing or
unexpected weights and matches our outputs within 1e-5 (fp32); ours -> HF -> ours is
bit-exact; the CLI exports pretraining workdirs with a manifest."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers as T
from flax import nnx

from bert_jax.convert import hf
from bert_jax.export import sha256
from bert_jax.models import model as M
from bert_jax.models.config import EncoderConfig
from bert_jax.training.workdir import parse_checkpoint

B, S = 3, 12


def tiny(family):
    kw = dict(
        vocab_size=99,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=37,
        max_position_embeddings=40,
        family=family,
    )
    if family == "roberta":
        kw.update(pad_token_id=1, type_vocab_size=1, layer_norm_eps=1e-5)
    if family == "albert":
        kw.update(embedding_size=16, share_layers=True, hidden_act="gelu_tanh")
    if family == "electra":
        kw.update(embedding_size=16, use_pooler=False)
    return EncoderConfig(**kw)


def random_model(config, heads, num_labels=3, seed=0):
    """Our model with every parameter random (LayerNorm scales around 1)."""
    m = M.create(config, heads, num_labels, seed=seed)
    graphdef, state = nnx.split(m)
    pure = nnx.to_pure_dict(state)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(pure)
    rng = np.random.default_rng(seed)
    new = []
    for path, x in leaves:
        noise = rng.normal(0, 0.2, x.shape).astype(np.float32)
        new.append(noise + (1.0 if path[-1].key == "scale" else 0.0))
    pure = jax.tree_util.tree_unflatten(treedef, new)
    return nnx.merge(graphdef, pure), pure


CASES = [
    (f, heads)
    for f in ("bert", "roberta", "albert", "electra")
    for heads in ((), ("mlm",), ("classification",), ("token_classification",), ("span",))
]
CASES += [("bert", ("mlm", "nsp")), ("albert", ("mlm", "sop")), ("electra", ("rtd",))]
OUTPUTS = {
    "mlm": ("mlm_logits", "logits"),
    "classification": ("classification_logits", "logits"),
    "token_classification": ("token_classification_logits", "logits"),
}


@pytest.mark.parametrize("family,heads", CASES, ids=[f"{f}-{'+'.join(h) or 'base'}" for f, h in CASES])
def test_transformers_loads_and_matches(tmp_path, family, heads):
    config = tiny(family)
    pooled = hf._has_pooler(family, heads)
    config = config.replace(use_pooler=pooled or (family != "electra" and config.use_pooler))
    ours, pure = random_model(config, heads)
    labels = ("neg", "neu", "pos")
    hf.save(config, heads, pure, str(tmp_path), num_labels=3, label_names=labels)
    cls = getattr(T, hf.architecture(family, heads))
    theirs, info = cls.from_pretrained(str(tmp_path), output_loading_info=True)
    assert not any(info.values()), info
    theirs.eval()
    if "classification" in heads:
        assert theirs.config.id2label == {0: "neg", 1: "neu", 2: "pos"}

    rng = np.random.default_rng(1)
    ids = rng.integers(3, 99, (B, S))
    mask = np.ones((B, S), np.int64)
    mask[1, 7:] = 0
    ids[mask == 0] = config.pad_token_id
    segments = rng.integers(0, config.type_vocab_size, (B, S)) * mask
    with torch.no_grad():
        t = theirs(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            token_type_ids=torch.tensor(segments),
            output_hidden_states=True,
        )
    o = ours(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(segments))
    diffs = {"hidden": np.abs(np.asarray(o["hidden"]) - t.hidden_states[-1].numpy()).max()}
    pairs = dict(OUTPUTS)
    if heads in (("mlm", "nsp"), ("mlm", "sop")):
        pairs = {
            "mlm": ("mlm_logits", "prediction_logits"),
            heads[1]: (
                f"{heads[1]}_logits",
                "seq_relationship_logits" if heads[1] == "nsp" else "sop_logits",
            ),
        }
    if heads == ("rtd",):
        pairs = {"rtd": ("rtd_logits", "logits")}
    if heads == ("span",):
        pairs = {"span": ("start_logits", "start_logits"), "span_end": ("end_logits", "end_logits")}
    for head, (mine, their_name) in pairs.items():
        if head.split("_end")[0] in heads:
            value = getattr(t, their_name).numpy()
            diffs[mine] = np.abs(np.asarray(o[mine]).reshape(value.shape) - value).max()
    print(family, heads, {k: f"{v:.1e}" for k, v in diffs.items()})
    assert all(v <= 1e-5 for v in diffs.values()), diffs

    # Round trip: ours -> HF files -> ours, bit for bit.
    back = hf.load(str(tmp_path))
    assert back.heads == tuple(h for h in heads) and back.label_names == (
        labels if ({"classification", "token_classification"} & set(heads)) else None
    )
    expect = (
        pure
        if config.use_pooler == back.config.use_pooler
        else {**pure, "encoder": {k: v for k, v in pure["encoder"].items() if k != "pooler"}}
    )
    for a, b in zip(jax.tree.leaves(expect), jax.tree.leaves(back.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_no_class_for_impossible_heads():
    with pytest.raises(Exception, match="no transformers class"):
        hf.architecture("roberta", ("mlm", "nsp"))


def test_parse_checkpoint_keeps_urls():
    assert parse_checkpoint("gs://bucket/run/400") == ("gs://bucket/run", 400)
    assert parse_checkpoint("gs://bucket/run/checkpoints/400/") == ("gs://bucket/run", 400)
    assert parse_checkpoint("/tmp/w") == ("/tmp/w", None)


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    """Three short pretraining runs (BERT, ELECTRA, ALBERT) on the first 100 documents of the
    embedded corpus, each preparing its data (and training its vocabulary) in WORKDIR/data."""
    import corpus_sample

    from bert_jax import config_files
    from bert_jax.training import pretrain

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tmp = tmp_path_factory.mktemp("export")
    corpus = corpus_sample.write(tmp / "corpus.txt", documents=100)
    out = {}
    for family in ("bert", "electra", "albert"):
        cfg = config_files.load(
            f"{root}/configs/pretrain/{family}.py:size=tiny",
            [
                "--config.train.steps=2",
                "--config.optim.warmup_steps=0",
                "--config.train.global_batch_size=8",
                "--config.data.prepare.max_seq_length=64",
                *corpus_sample.prepare_overrides(corpus),
                "--config.data.prepare.train_tokenizer.vocab_size=1000",
                "--config.data.eval_rows=0",  # no evaluation: its compile is not what these tests test
                "--config.train.peak_flops=1e11",
            ],
        )
        pretrain.train_and_evaluate(cfg, str(tmp / family), log=lambda *a: None)
        out[family] = tmp / family
    return out


def test_cli_export_of_pretraining_workdirs(workdirs, tmp_path):
    from bert_jax import cli
    from bert_jax.data.tokenizers import load_tokenizer

    out = tmp_path / "bert"
    assert (
        cli.main(["export", "--checkpoint", str(workdirs["bert"]), "--format", "hf", "--output", str(out)])
        == 0
    )
    model, info = T.AutoModelForPreTraining.from_pretrained(str(out), output_loading_info=True)
    assert type(model).__name__ == "BertForPreTraining" and not any(info.values())
    tok = T.AutoTokenizer.from_pretrained(str(out))
    text = "The quick brown fox returns a value from the function."
    ours = load_tokenizer(str(out))
    assert tok(text)["input_ids"] == ours.build_pair(ours.encode_ids(text))[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["step"] == 2 and manifest["source"]["objective"] == "bert"
    assert {k: sha256(str(out / k)) for k in manifest["files"]} == manifest["files"]
    assert "model.safetensors" in manifest["files"]

    out = tmp_path / "electra"
    assert (
        cli.main(
            ["export", "--checkpoint", f"{workdirs['electra']}/2", "--format", "hf", "--output", str(out)]
        )
        == 0
    )
    disc, info = T.AutoModelForPreTraining.from_pretrained(
        str(out / "discriminator"), output_loading_info=True
    )
    assert type(disc).__name__ == "ElectraForPreTraining" and not any(info.values())
    gen, info = T.AutoModelForMaskedLM.from_pretrained(str(out / "generator"), output_loading_info=True)
    assert type(gen).__name__ == "ElectraForMaskedLM" and not any(info.values())
    # The generator carries the discriminator's (shared) embeddings.
    np.testing.assert_array_equal(
        gen.electra.embeddings.word_embeddings.weight.detach().numpy(),
        disc.electra.embeddings.word_embeddings.weight.detach().numpy(),
    )
    assert (
        cli.main(
            [
                "export",
                "--checkpoint",
                str(workdirs["bert"]),
                "--format",
                "hf",
                "--output",
                str(tmp_path / "bert"),
            ]
        )
        == 2
    )  # not empty: refused


def test_cli_serving_exports_match_the_checkpoint(workdirs, tmp_path):
    from bert_jax import cli
    from bert_jax.convert import serving
    from bert_jax.training import workdir

    ckpt = workdir.open(str(workdirs["bert"]))
    enc, params = ckpt.record.encoder, ckpt.params()
    ours = nnx.merge(nnx.graphdef(M.abstract(enc, ("mlm", "nsp"))), params)
    ids = np.random.default_rng(0).integers(5, 900, (2, 128)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 60:] = 0
    expected = ours(jnp.asarray(ids), jnp.asarray(mask), jnp.zeros_like(jnp.asarray(ids)))
    assert (
        cli.main(
            [
                "export",
                "--checkpoint",
                str(workdirs["bert"]),
                "--format",
                "stablehlo",
                "--output",
                str(tmp_path / "s"),
                "--max-length",
                "128",
            ]
        )
        == 0
    )
    got = serving.load_stablehlo(str(tmp_path / "s"))(ids, mask, np.zeros_like(ids))
    np.testing.assert_allclose(got["nsp_logits"], expected["nsp_logits"], atol=1e-5)
    np.testing.assert_allclose(got["hidden"], expected["hidden"], atol=1e-5)
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert "model.stablehlo" in manifest["files"] and manifest["source"]["max_length"] == 128
    # Without --max-length the signature takes the model's whole length (512), not 128.
    assert (
        cli.main(
            [
                "export",
                "--checkpoint",
                str(workdirs["bert"]),
                "--format",
                "stablehlo",
                "--output",
                str(tmp_path / "full"),
            ]
        )
        == 0
    )
    signature = json.loads((tmp_path / "full" / "serving_signature.json").read_text())
    assert signature["seq_len"] == enc.max_length == 512
    for bad in (["--max-length", "513"], ["--max-length", "64", "--format", "hf"]):
        args = [
            "export",
            "--checkpoint",
            str(workdirs["bert"]),
            "--format",
            "stablehlo",
            "--output",
            str(tmp_path / "bad"),
            *bad,
        ]
        assert cli.main(args) == 2 and not (tmp_path / "bad").exists()


def test_albert_tiny_export_matches_encode(workdirs, tmp_path):
    """#18: albert-tiny (E == H == 128) exported a model transformers completed with a random
    embedding projection. Its export must hold the projection and give bert-jax encode's
    hidden states."""
    from bert_jax import cli
    from bert_jax.data.records import read_metadata
    from bert_jax.data.tokenizers import load_tokenizer

    out = tmp_path / "albert"
    assert (
        cli.main(["export", "--checkpoint", str(workdirs["albert"]), "--format", "hf", "--output", str(out)])
        == 0
    )
    model, info = T.AlbertForPreTraining.from_pretrained(str(out), output_loading_info=True)
    assert not any(info.values()), info
    assert tuple(model.albert.encoder.embedding_hidden_mapping_in.weight.shape) == (128, 128)
    model.eval()

    lines = ["The quick brown fox returns a value from the function.", "Open the file."]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    assert (
        cli.main(
            [
                "encode",
                "--checkpoint",
                str(workdirs["albert"]),
                "--input",
                str(tmp_path / "in.txt"),
                "--output",
                str(tmp_path / "h.npy"),
                "--pooling",
                "none",
                "--max-length",
                "32",
            ]
        )
        == 0
    )
    encoded = np.load(tmp_path / "h.npy")
    tokenizer = load_tokenizer(read_metadata(str(workdirs["albert"] / "data"))["tokenizer"])
    ids, mask, _ = tokenizer.encode_batch(lines, 32)
    with torch.no_grad():
        hidden = model.albert(
            input_ids=torch.tensor(np.asarray(ids, np.int64)),
            attention_mask=torch.tensor(np.asarray(mask, np.int64)),
        ).last_hidden_state
    theirs = hidden.numpy() * np.asarray(mask)[..., None]
    assert np.abs(theirs - encoded).max() <= 1e-5, np.abs(theirs - encoded).max()


def test_albert_without_projection_exports_an_identity(tmp_path):
    """A model built without the projection (an albert-tiny workdir from before #18) exports
    with an identity projection: transformers' outputs equal ours."""
    config = tiny("albert").replace(embedding_size=None, embedding_projection=False)
    ours, pure = random_model(config, ())
    assert "projection" not in pure["encoder"]
    hf.save(config, (), pure, str(tmp_path))
    theirs, info = T.AlbertModel.from_pretrained(str(tmp_path), output_loading_info=True)
    assert not any(info.values()), info
    ids = np.random.default_rng(0).integers(3, 99, (2, 10))
    with torch.no_grad():
        t = theirs.eval()(input_ids=torch.tensor(ids)).last_hidden_state.numpy()
    assert np.abs(np.asarray(ours(jnp.asarray(ids))["hidden"]) - t).max() <= 1e-5


def test_export_check_names_what_differs(tmp_path, monkeypatch):
    """hf.save reads its output back: a tensor written wrong or left out is refused by name."""
    from bert_jax.errors import UserError

    config = tiny("albert")
    _, pure = random_model(config, ("mlm",))
    real = hf.to_tensors

    def drops_projection(*args):
        out = real(*args)
        del out["albert.encoder.embedding_hidden_mapping_in.bias"]
        return out

    monkeypatch.setattr(hf, "to_tensors", drops_projection)
    with pytest.raises(UserError, match="embedding_hidden_mapping_in.bias"):
        hf.save(config, ("mlm",), pure, str(tmp_path / "a"))

    def perturbs(*args):
        out = real(*args)
        out["predictions.bias"] = out["predictions.bias"] + 1e-3
        return out

    monkeypatch.setattr(hf, "to_tensors", perturbs)
    with pytest.raises(UserError, match="differing from the source: mlm.bias"):
        hf.save(config, ("mlm",), pure, str(tmp_path / "b"))


def test_export_overwrite_replaces_the_whole_directory(workdirs, tmp_path):
    from bert_jax import cli

    out = tmp_path / "x"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier export")
    assert (
        cli.main(
            [
                "export",
                "--checkpoint",
                str(workdirs["bert"]),
                "--format",
                "hf",
                "--output",
                str(out),
                "--overwrite",
            ]
        )
        == 0
    )
    assert not (out / "stale.txt").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["files"]) == sorted(p.name for p in out.iterdir() if p.name != "manifest.json")
    assert [p.name for p in tmp_path.iterdir()] == ["x"]  # no staging directory left behind


def test_export_from_a_live_workdir_writes_nothing_there(workdirs, tmp_path):
    """Readers never write: a save in flight (its tmp directory) survives an export, and the
    workdir is byte-for-byte as before; a mistyped workdir is an error that creates nothing."""
    import shutil

    from bert_jax import cli

    live = tmp_path / "live"
    shutil.copytree(workdirs["bert"], live)
    ckpts = live / "checkpoints"
    shutil.copytree(ckpts / "2", ckpts / "4.orbax-checkpoint-tmp-1234")
    before = sorted((str(p.relative_to(live)), p.stat().st_size) for p in live.rglob("*"))
    assert (
        cli.main(["export", "--checkpoint", str(live), "--format", "hf", "--output", str(tmp_path / "out")])
        == 0
    )
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["source"]["step"] == 2
    assert sorted((str(p.relative_to(live)), p.stat().st_size) for p in live.rglob("*")) == before
    assert (
        cli.main(
            [
                "export",
                "--checkpoint",
                str(tmp_path / "typo"),
                "--format",
                "hf",
                "--output",
                str(tmp_path / "out2"),
            ]
        )
        == 2
    )
    assert not (tmp_path / "typo").exists() and not (tmp_path / "out2").exists()
