"""The encoder itself: presets and parameter counts, packing, scan/remat, bf16, axes, errors."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from bert_jax.convert import hf  # noqa: E402
from bert_jax.errors import UserError  # noqa: E402
from bert_jax.models import model as M  # noqa: E402
from bert_jax.models.config import PRESETS, EncoderConfig, get_preset  # noqa: E402
from bert_jax.models.layers import keep_masks  # noqa: E402

# Published sizes, counted as the HF AutoModel of each family counts them (encoder plus
# pooler where the family has one). Sources: BERT README and its miniatures (Turc et al.
# 2019, HF model cards), RoBERTa / ALBERT / ELECTRA papers, keras-hub presets for the
# exact figures. A rounded figure ("12M") is met within max(2%, half its last digit).
# ALBERT xlarge / xxlarge: the paper's table says 60M / 235M, but the architectures it
# describes (and the released v2 checkpoints: 58M / 223M on HF's pretrained-model table)
# have 58.7M / 222.6M; we hold the released figures.
# ELECTRA-small: the paper's 14M counts the discriminator head, so we add it (H*H+2H+1).
PUBLISHED = {
    "bert-tiny": (4.4e6, 0.1e6),
    "bert-mini": (11.3e6, 0.1e6),
    "bert-small": (29.1e6, 0.1e6),
    "bert-medium": (41.7e6, 0.1e6),
    "bert-base": (109_482_240, 1),
    "bert-large": (340e6, 1e6),
    "roberta-base": (125e6, 1e6),
    "roberta-large": (355e6, 1e6),
    "albert-base": (12e6, 1e6),
    "albert-large": (18e6, 1e6),
    "albert-xlarge": (58e6, 1e6),
    "albert-xxlarge": (223e6, 1e6),
    "electra-small": (14e6, 1e6),
    "electra-base": (110e6, 1e6),
    "electra-large": (335e6, 1e6),
    # keras-hub's exact counts include an H*H+H pooler ELECTRA does not have.
    "electra-small-generator": (13_548_800 - 256 * 257, 1),
    "electra-base-generator": (33_576_960 - 256 * 257, 1),
    "electra-large-generator": (51_065_344 - 256 * 257, 1),
}


def test_presets_cover_the_grid_and_every_family():
    for layers in (2, 4, 6, 8, 10, 12):
        for hidden in (128, 256, 512, 768):
            c = PRESETS[f"bert-L{layers}-H{hidden}"]
            assert (c.num_layers, c.hidden_size, c.num_heads, c.intermediate_size) == (
                layers,
                hidden,
                hidden // 64,
                4 * hidden,
            )
    assert PRESETS["bert-tiny"] == PRESETS["bert-L2-H128"]
    assert PRESETS["bert-base"] == PRESETS["bert-L12-H768"]
    unpublished = {"roberta-tiny", "albert-tiny", "electra-tiny"}  # CPU demo / test sizes
    assert set(PUBLISHED) == {n for n in PRESETS if not n.startswith("bert-L")} - unpublished
    assert all(PRESETS[n].share_layers for n in PRESETS if n.startswith("albert"))


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_matches_published(name):
    config = PRESETS[name]
    heads = ("rtd",) if name == "electra-small" else ()
    count = M.count_params(M.abstract(config, heads))
    published, unit = PUBLISHED[name]
    tolerance = max(0.02 * published, unit / 2)
    assert abs(count - published) <= tolerance, (name, count, published)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_parameter_count_equals_transformers(name):
    import torch
    import transformers

    config = PRESETS[name]
    hf_config = transformers.AutoConfig.for_model(**hf.config_to_hf(config))
    with torch.device("meta"):
        theirs = transformers.AutoModel.from_config(hf_config)
    ours = M.count_params(M.abstract(config))
    assert ours == sum(p.numel() for p in theirs.parameters())


def test_embedding_projection_follows_each_family():
    """ALBERT projects its embeddings whatever the widths (as transformers' AlbertModel);
    ELECTRA only when they differ; a record from before the field existed (no key) names
    the same architecture as today's preset whenever the widths differ."""
    assert all(PRESETS[n].embedding_projection for n in PRESETS if n.startswith("albert"))
    assert PRESETS["albert-tiny"].embed_dim == PRESETS["albert-tiny"].hidden_size
    assert not PRESETS["electra-base"].embedding_projection  # E == H == 768
    assert PRESETS["electra-small"].embedding_projection  # E 128, H 256
    assert not any(PRESETS[n].embedding_projection for n in PRESETS if n.startswith(("bert", "rob")))
    for name in ("albert-base", "electra-small", "electra-base", "bert-base"):
        old = {k: v for k, v in PRESETS[name].architecture().items() if k != "embedding_projection"}
        assert EncoderConfig.from_dict(old).architecture() == PRESETS[name].architecture()
    with pytest.raises(UserError, match="embedding_projection"):
        EncoderConfig(embedding_projection="yes")


def tiny(family="bert", **kw):
    base = dict(
        vocab_size=101,
        hidden_size=32,
        num_layers=3,
        num_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    if family == "roberta":
        base.update(pad_token_id=1, type_vocab_size=1)
    if family == "albert":
        base.update(embedding_size=16, share_layers=True, hidden_act="gelu_tanh")
    if family == "electra":
        base.update(embedding_size=16, use_pooler=False)
    base.update(kw)
    return EncoderConfig(family=family, **base)


@pytest.mark.parametrize("family", ["bert", "roberta", "albert", "electra"])
def test_packed_row_equals_sequences_run_separately(family):
    config = tiny(family)
    m = M.create(config, heads=("mlm",), seed=3)
    rng = np.random.default_rng(0)
    a, b = rng.integers(5, 100, 7), rng.integers(5, 100, 5)
    S = 16
    packed = np.full((1, S), config.pad_token_id)
    packed[0, :7], packed[0, 7:12] = a, b
    packing = np.zeros((1, S), np.int32)
    packing[0, :7], packing[0, 7:12] = 1, 2
    segments = np.zeros((1, S), np.int32)
    segments[0, 3:7] = 1 if config.type_vocab_size > 1 else 0
    out = m(jnp.asarray(packed), segment_ids=jnp.asarray(segments), packing_ids=jnp.asarray(packing))[
        "hidden"
    ][0]
    for seq, start, seg in ((a, 0, segments[0, :7]), (b, 7, segments[0, 7:12])):
        alone = m(jnp.asarray(seq)[None], jnp.ones((1, len(seq))), jnp.asarray(seg)[None])["hidden"][0]
        np.testing.assert_allclose(out[start : start + len(seq)], alone, atol=2e-5)


def test_scan_unrolled_and_remat_agree():
    config = tiny()
    ids = jnp.asarray(np.random.default_rng(0).integers(5, 100, (2, 10)))

    def loss_and_grads(cfg):
        m = M.create(cfg, heads=("mlm",), seed=1)
        graphdef, params = nnx.split(m)

        def loss(params):
            return jnp.mean(nnx.merge(graphdef, params)(ids)["mlm_logits"] ** 2)

        return jax.jit(jax.value_and_grad(loss))(params)

    ref_loss, ref_grads = loss_and_grads(config)
    for changes in (
        {"scan_layers": False},
        {"remat_policy": "full"},
        {"remat_policy": "dots"},
        {"remat_policy": "dots_no_batch", "scan_layers": False},
    ):
        loss, grads = loss_and_grads(config.replace(**changes))
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
        for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
            np.testing.assert_allclose(g, r, atol=1e-6, rtol=1e-5)


def test_scan_compiles_one_block():
    """The HLO of a 12-layer scanned encoder is no bigger than a 2-layer one's."""

    def hlo_size(layers):
        cfg = tiny(num_layers=layers)
        m = M.abstract(cfg)
        graphdef, params = nnx.split(m)
        fn = jax.jit(lambda p, ids: nnx.merge(graphdef, p)(ids)["hidden"])
        return len(fn.lower(params, jax.ShapeDtypeStruct((2, 8), jnp.int32)).as_text())

    assert hlo_size(12) < 1.05 * hlo_size(2)


def test_albert_applies_one_block():
    m = M.create(tiny("albert", num_layers=6))
    shapes = jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(m.encoder.layers, nnx.Param)))
    assert shapes["attention"]["query"]["kernel"] == (32, 4, 8)  # no layers axis


def test_bf16_compute_within_tolerance_of_fp32():
    config = tiny(num_layers=4)
    ids = jnp.asarray(np.random.default_rng(0).integers(5, 100, (4, 24)))
    m32 = M.create(config, heads=("mlm", "nsp"), seed=2)
    m16 = M.create(config.replace(dtype="bfloat16"), heads=("mlm", "nsp"), seed=2)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(m16, nnx.Param)))
    o32, o16 = m32(ids), m16(ids)
    assert o16["hidden"].dtype == jnp.bfloat16
    # bf16 keeps 8 bits of mantissa: post-LayerNorm activations of O(1) stay within 0.1.
    assert np.abs(np.asarray(o16["hidden"], np.float32) - np.asarray(o32["hidden"])).max() < 0.1
    assert np.abs(np.asarray(o16["mlm_logits"]) - np.asarray(o32["mlm_logits"])).max() < 0.1


def test_every_parameter_names_its_axes():
    m = M.abstract(tiny("electra"), heads=("mlm", "rtd", "classification", "span"))
    for path, var in nnx.to_flat_state(nnx.state(m, nnx.Param)):
        axes = var.get_metadata().get("axes")
        assert axes is not None and len(axes) == len(var.shape), (path, axes, var.shape)
    layer_axes = m.encoder.layers.attention.query.kernel.get_metadata()["axes"]
    assert layer_axes == ("layers", "embed", "heads", "kv")


def test_dropout_only_with_a_key():
    m = M.create(tiny(hidden_dropout=0.1, attention_dropout=0.1))
    ids = jnp.ones((2, 8), jnp.int32)
    np.testing.assert_array_equal(m(ids)["hidden"], m(ids)["hidden"])
    a = m(ids, rng=jax.random.key(0))["hidden"]
    b = m(ids, rng=jax.random.key(1))["hidden"]
    assert not np.allclose(a, b) and not np.allclose(a, m(ids)["hidden"])


def test_keep_masks_rates_sites_and_sharding():
    """One draw serves several dropout sites: each keeps 1 - rate of its elements, the sites
    are not copies of each other, and a batch sharded over 8 devices draws the same bits."""
    key = jax.random.key(3)
    hidden_site = (0.1, (16, 64, 32))
    sites = [(0.1, (16, 4, 64, 64)), (0.0, (16, 64, 32)), (0.5, (16, 64, 32)), hidden_site, hidden_site]
    attn, none, half, hidden, hidden2 = keep_masks(key, sites)
    assert none is None and attn.shape == (16, 4, 64, 64) and attn.dtype == jnp.bool_
    for mask, rate in ((attn, 0.1), (half, 0.5), (hidden, 0.1)):
        n = mask.size  # binomial: 5 standard deviations
        assert abs(float(mask.mean()) - (1 - rate)) < 5 * (rate * (1 - rate) / n) ** 0.5, (rate, mask.mean())
    assert 0.8 < float((hidden == hidden2).mean()) < 0.84  # independent: 0.9^2 + 0.1^2
    mesh = jax.make_mesh((8,), ("data",))
    sharded = jax.jit(
        lambda k: keep_masks(k, sites), out_shardings=NamedSharding(mesh, PartitionSpec("data"))
    )(key)
    for a, b in zip((attn, half, hidden, hidden2), (sharded[0], *sharded[2:]), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="leading .batch. axis"):
        keep_masks(key, [(0.1, (2, 3)), (0.1, (3, 2))])


def test_config_errors_name_the_field():
    with pytest.raises(UserError, match="preset 'bert-huge' is unknown; choose one of: .*bert-base"):
        get_preset("bert-huge")
    with pytest.raises(UserError, match="hidden_size=100 is not divisible by num_heads=12"):
        EncoderConfig(hidden_size=100, num_heads=12)
    with pytest.raises(UserError, match="family='gpt'"):
        EncoderConfig(family="gpt")
    with pytest.raises(UserError, match="remat_policy"):
        EncoderConfig(remat_policy="sometimes")
    with pytest.raises(UserError, match="no field.*colour"):
        PRESETS["bert-base"].replace(colour="red")
    with pytest.raises(UserError, match="unknown head"):
        M.abstract(tiny(), heads=("mlm", "translation"))
    with pytest.raises(UserError, match="attention_impl='flash'.*auto, xla, cudnn"):
        EncoderConfig(attention_impl="flash")
    with pytest.raises(UserError, match="attention_impl='cudnn' needs attention_dropout=0"):
        EncoderConfig(attention_impl="cudnn", dtype="bfloat16")
    with pytest.raises(UserError, match="bfloat16/float16 dtype .got float32"):
        EncoderConfig(attention_impl="cudnn", attention_dropout=0.0)


def test_attention_impl_is_a_runtime_choice():
    """xla computes what auto does; the choice is not part of a checkpoint's identity."""
    config = tiny(attention_dropout=0.0)
    ids = jnp.asarray(np.random.default_rng(0).integers(5, 100, (2, 16)))
    auto = M.create(config, seed=3)(ids)["hidden"]
    xla = M.create(config.replace(attention_impl="xla"), seed=3)(ids)["hidden"]
    np.testing.assert_array_equal(np.asarray(auto), np.asarray(xla))
    assert "attention_impl" not in config.architecture()
    assert config.architecture() == config.replace(attention_impl="xla").architecture()
    assert EncoderConfig.from_dict(config.architecture()) == config
    if jax.default_backend() != "gpu":
        cudnn = config.replace(attention_impl="cudnn", dtype="bfloat16")
        with pytest.raises(UserError, match="attention_impl='cudnn' needs a GPU; JAX's backend here"):
            M.create(cudnn, seed=3)(ids)


def test_features_not_family_names_decide_the_architecture():
    """positions and classifier default to the family's, are recorded, and compute the same
    model under any family name; an older record (no feature fields) reads as its family."""
    roberta = tiny("roberta")
    assert (roberta.positions, roberta.classifier) == ("fairseq", "cls_dense_tanh")
    assert (tiny("electra").positions, tiny("electra").classifier) == ("absolute", "cls_dense_gelu")
    assert (tiny("bert").positions, tiny("bert").classifier) == ("absolute", "pooler")
    record = roberta.architecture()
    assert record["positions"] == "fairseq"
    old = {k: v for k, v in record.items() if k not in ("positions", "classifier")}
    assert EncoderConfig.from_dict(old) == EncoderConfig.from_dict(record) == roberta
    # A "bert" model with RoBERTa's features: the same outputs as the roberta model.
    renamed = roberta.replace(family="bert")
    ids = np.array([[5, 9, 17, 33, 1, 1], [7, 8, 1, 1, 1, 1]])
    mask = (ids != 1).astype(np.int32)
    a = M.create(roberta, heads=("classification",), num_labels=3, seed=2)
    b = M.create(renamed, heads=("classification",), num_labels=3, seed=2)
    out_a = a(jnp.asarray(ids), jnp.asarray(mask))
    out_b = b(jnp.asarray(ids), jnp.asarray(mask))
    np.testing.assert_array_equal(
        np.asarray(out_a["classification_logits"]), np.asarray(out_b["classification_logits"])
    )
    np.testing.assert_array_equal(np.asarray(out_a["hidden"]), np.asarray(out_b["hidden"]))
    # ... and different ones with BERT's positions.
    c = M.create(roberta.replace(positions="absolute"), heads=("classification",), num_labels=3, seed=2)
    assert not np.allclose(
        np.asarray(c(jnp.asarray(ids), jnp.asarray(mask))["hidden"]), np.asarray(out_a["hidden"])
    )
    # transformers has no class for a bert with fairseq positions: export refuses it.
    with pytest.raises(UserError, match="no Hugging Face class computes it"):
        hf.config_to_hf(renamed)
    with pytest.raises(UserError, match="positions='rotary'.*absolute, fairseq"):
        EncoderConfig(positions="rotary")
    with pytest.raises(UserError, match="classifier='mean'"):
        EncoderConfig(classifier="mean")
