"""The optimizer against hand-written expectations: which parameters take weight decay,
the learning-rate schedules and global-norm clipping in closed form, layer-wise decay in
fine-tuning, and LAMB's trust ratio per stacked layer against optax itself."""

import os
import re
import types

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from bert_jax import config_files
from bert_jax.models import model as model_lib
from bert_jax.models.config import get_preset
from bert_jax.objectives import OBJECTIVES
from bert_jax.training import finetune, optim, sharding
from bert_jax.training.state import Settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(**changes):
    """An optimizer config: AdamW, constant 1e-2, no warmup, decay or clipping unless changed."""
    fields = dict(
        name="adamw",
        learning_rate=1e-2,
        warmup_steps=0,
        decay="constant",
        power=1.0,
        end_learning_rate=0.0,
        weight_decay=0.0,
        b1=0.9,
        b2=0.999,
        eps=1e-6,
        clip_norm=0.0,
    )
    return types.SimpleNamespace(**{**fields, **changes})


def _path(keys) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in keys)


def _leaves(tree) -> dict:
    return {_path(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


# --- weight decay: kernels and embedding tables, never LayerNorm or biases ---------------------


def _expand(pattern: str) -> list[str]:
    """'a/{b,c}/d' -> ['a/b/d', 'a/c/d']."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    head, tail = pattern[: m.start()], pattern[m.end() :]
    return [p for alt in m.group(1).split(",") for p in _expand(head + alt + tail)]


def _table(*parts: str, prefix: str = "") -> dict[str, bool]:
    """Lines of 'PATTERN decay' or 'PATTERN -' -> {path: takes weight decay}."""
    out = {}
    for line in "\n".join(parts).split("\n"):
        if line.strip():
            pattern, verdict = line.split()
            out.update({prefix + p: verdict == "decay" for p in _expand(pattern)})
    return out


EMBEDDINGS = """
encoder/embeddings/{word,position,segment}/embedding            decay
encoder/embeddings/norm/{scale,bias}                            -
"""
BLOCKS = """
encoder/layers/attention/{query,key,value,output}/kernel        decay
encoder/layers/attention/{query,key,value,output}/bias          -
encoder/layers/{intermediate,output}/kernel                     decay
encoder/layers/{intermediate,output}/bias                       -
encoder/layers/{attention_norm,output_norm}/{scale,bias}        -
"""
POOLER = """
encoder/pooler/kernel                                           decay
encoder/pooler/bias                                             -
"""
PROJECTION = """
encoder/projection/kernel                                       decay
encoder/projection/bias                                         -
"""
MLM = """
mlm/transform/kernel                                            decay
mlm/{transform/bias,norm/scale,norm/bias,bias}                  -
"""
NSP = "nsp/classifier/kernel decay\nnsp/classifier/bias -"
SOP = "sop/classifier/kernel decay\nsop/classifier/bias -"
RTD = "rtd/{dense,prediction}/kernel decay\nrtd/{dense,prediction}/bias -"
# Task heads: BERT and ALBERT classify the pooled [CLS]; RoBERTa and ELECTRA add a dense layer.
TASK_HEADS = """
{token_classification,span}/output/kernel                       decay
{token_classification,span}/output/bias                         -
"""
CLASSIFIER = "classification/output/kernel decay\nclassification/output/bias -"
DENSE_CLASSIFIER = "classification/{dense,output}/kernel decay\nclassification/{dense,output}/bias -"
# Each family's pretraining network, then its fine-tuning model with every task head.
DECAY = {
    "bert": (
        _table(EMBEDDINGS, BLOCKS, POOLER, MLM, NSP),
        _table(EMBEDDINGS, BLOCKS, POOLER, TASK_HEADS, CLASSIFIER),
    ),
    "roberta": (
        _table(EMBEDDINGS, BLOCKS, POOLER, MLM),
        _table(EMBEDDINGS, BLOCKS, POOLER, TASK_HEADS, DENSE_CLASSIFIER),
    ),
    "albert": (
        _table(EMBEDDINGS, PROJECTION, BLOCKS, POOLER, MLM, SOP),
        _table(EMBEDDINGS, PROJECTION, BLOCKS, POOLER, TASK_HEADS, CLASSIFIER),
    ),
    # ELECTRA pretrains a generator (no embeddings of its own, a projection to its width) and
    # a discriminator; fine-tuning keeps the discriminator, which has no pooler.
    "electra": (
        {
            **_table(EMBEDDINGS, BLOCKS, RTD, prefix="discriminator/"),
            **_table(PROJECTION, BLOCKS, MLM, prefix="generator/"),
        },
        _table(EMBEDDINGS, BLOCKS, TASK_HEADS, DENSE_CLASSIFIER),
    ),
}


def _networks(family: str) -> list[dict]:
    enc = get_preset(f"{family}-tiny", vocab_size=64)
    pretrain = OBJECTIVES[family].build(enc, Settings(), nnx.Rngs(0))
    heads = ("classification", "token_classification", "span")
    return [nnx.to_pure_dict(nnx.state(net)) for net in (pretrain, model_lib.create(enc, heads, 3))]


@pytest.mark.parametrize("family", list(DECAY))
def test_weight_decay_on_kernels_and_embeddings_only(family):
    """decay_mask against the hand-written tables, and the optimizer applies it: with zero
    gradients, AdamW's update is -lr * weight_decay * param on those parameters and exactly 0
    on the others; LAMB's (trust ratio included) is 0 exactly where there is no decay."""
    rng = np.random.default_rng(0)
    for params, expected in zip(_networks(family), DECAY[family], strict=True):
        assert _leaves(optim.decay_mask(params)) == expected
        # Random values: biases start at 0, where decay would go unseen.
        params = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
        zeros = jax.tree.map(np.zeros_like, params)
        values = _leaves(params)
        tx, _ = optim.make(_cfg(learning_rate=0.5, weight_decay=0.1), 10)
        for path, update in _leaves(jax.jit(tx.update)(zeros, tx.init(params), params)[0]).items():
            want = -0.5 * 0.1 * values[path] if expected[path] else np.zeros_like(values[path])
            np.testing.assert_allclose(update, want, rtol=1e-6, atol=0, err_msg=path)
        tx, _ = optim.make(_cfg(name="lamb", weight_decay=0.1), 10)
        for path, update in _leaves(jax.jit(tx.update)(zeros, tx.init(params), params)[0]).items():
            assert bool(np.all(update != 0)) if expected[path] else not update.any(), path


# --- learning-rate schedules and clipping --------------------------------------------------


def _closed_form(step, lr, warmup, total, decay, end, power):
    """Linear warmup 0 -> lr over `warmup` steps, then `decay` to `end` at `total`, held after."""
    if step < warmup:
        return lr * step / warmup
    if decay == "constant":
        return lr
    done = min(step - warmup, total - warmup) / (total - warmup)
    return end + (lr - end) * (1.0 - done) ** (1.0 if decay == "linear" else power)


@pytest.mark.parametrize(
    "decay,warmup,end,power",
    [
        ("linear", 10, 1e-4, 1.0),
        ("polynomial", 10, 1e-4, 2.0),
        ("polynomial", 0, 2e-4, 3.0),
        ("constant", 10, 0.0, 1.0),
        ("linear", 0, 0.0, 1.0),
    ],
)
def test_schedule_is_its_closed_form(decay, warmup, end, power):
    """The schedule at step 0, mid-warmup, end of warmup, mid-decay, last step and beyond;
    then the update the optimizer takes at every step: Adam on a constant gradient of 1 moves
    by exactly -lr(step) / (1 + eps), so the updates trace the schedule."""
    lr, total = 1e-3, 50
    cfg = _cfg(learning_rate=lr, warmup_steps=warmup, decay=decay, end_learning_rate=end, power=power)
    tx, schedule = optim.make(cfg, total)
    for step in (0, warmup // 2, warmup, warmup + (total - warmup) // 2, total - 1, total, total + 7):
        want = _closed_form(step, lr, warmup, total, decay, end, power)
        assert float(schedule(step)) == pytest.approx(want, rel=1e-5, abs=1e-12), step
    params = {"w": np.ones(4, np.float32)}
    grads = jax.tree.map(np.ones_like, params)
    update = jax.jit(tx.update)
    state = tx.init(params)
    for step in range(total + 8):
        u, state = update(grads, state, params)
        want = -_closed_form(step, lr, warmup, total, decay, end, power) / (1 + cfg.eps)
        # Adam's bias corrections are float32 (1 - 0.999 is not exact): rtol 1e-4 of lr.
        np.testing.assert_allclose(u["w"], want, rtol=1e-4, atol=1e-9, err_msg=f"step {step}")


@pytest.mark.parametrize("clip_norm", [1.0, 100.0, 0.0])
def test_gradients_are_clipped_by_their_global_norm(clip_norm):
    """Gradients over several parameters with a global norm of ~9: scaled by clip_norm / norm
    when above clip_norm, untouched below it or with clip_norm=0. Adam with eps=1 makes the
    first update -g / (|g| + 1), so it shows the gradient Adam was given."""
    rng = np.random.default_rng(1)
    grads = {
        "a": {"kernel": rng.normal(size=(3, 4)) * 2},
        "b": rng.normal(size=(5,)) * 3,
        "c": {"d": {"kernel": rng.normal(size=(2, 2, 2))}},
    }
    grads = jax.tree.map(lambda g: g.astype(np.float32), grads)
    norm = np.sqrt(sum(np.sum(np.square(g.astype(np.float64))) for g in jax.tree.leaves(grads)))
    assert 5.0 < norm < 20.0
    factor = clip_norm / norm if 0 < clip_norm < norm else 1.0
    params = jax.tree.map(np.zeros_like, grads)
    tx, _ = optim.make(_cfg(learning_rate=1.0, eps=1.0, clip_norm=clip_norm), 10)
    updates, _ = tx.update(grads, tx.init(params), params)
    for path, u in _leaves(updates).items():
        g = _leaves(grads)[path].astype(np.float64) * factor
        np.testing.assert_allclose(u, -g / (np.abs(g) + 1.0), rtol=1e-5, atol=1e-7, err_msg=path)


# --- layer-wise learning-rate decay in fine-tuning ---------------------------------------------


def _depth(path: str, num_layers: int, shared: bool):
    """config_files.finetune_config: depth 0 for the embeddings (ELECTRA: and the
    embedding projection), i+1 for layer i, L+1 for the pooler, L+2 for the task head; ALBERT's
    one shared block counts as the top layer (L). An array for the stacked [L, ...] blocks."""
    if path.startswith(("encoder/embeddings/", "encoder/projection/")):
        return 0
    if path.startswith("encoder/layers/"):
        return num_layers if shared else np.arange(1, num_layers + 1)
    if path.startswith("encoder/pooler/"):
        return num_layers + 1
    assert path.startswith(("classification/", "token_classification/", "span/")), path
    return num_layers + 2


@pytest.mark.parametrize(
    "preset,head",
    [("bert-tiny", "classification"), ("electra-tiny", "span"), ("albert-tiny", "token_classification")],
)
def test_layerwise_decay_multiplies_each_parameters_update(preset, head):
    """Fine-tuning's optimizer with layerwise_decay=0.8 on a 3-layer encoder: every
    parameter's first update is -lr * 0.8^(L+2-depth) / (1 + eps) (Adam on a gradient of 1),
    layer by layer within the stacked blocks."""
    enc = get_preset(preset, num_layers=3, vocab_size=64)
    decay, lr, L = 0.8, 1e-3, 3
    config = config_files.load(
        f"{ROOT}/configs/finetune/files.py:kind=classification",
        [
            "--config.optim.layerwise_decay=0.8",
            f"--config.optim.learning_rate={lr}",
            "--config.optim.weight_decay=0",
            "--config.optim.clip_norm=0",
            "--config.optim.decay=constant",
            "--config.train.warmup_fraction=0",
        ],
    )
    task = types.SimpleNamespace(head=head, num_labels=3)
    pure = nnx.to_pure_dict(nnx.state(model_lib.create(enc, (head,), 3)))
    init = finetune.Init(enc, pure["encoder"], {}, "test")
    setup = finetune._setup(config, init, task, sharding.make_mesh(dict(config.mesh)), 10)
    params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model_lib.create(setup.enc, (head,), 3))))
    grads = jax.tree.map(np.ones_like, params)
    updates = _leaves(setup.tx.update(grads, setup.tx.init(params), params)[0])
    assert set(updates) == set(_leaves(params))
    for path, u in updates.items():
        multiplier = decay ** (L + 2 - _depth(path, L, enc.share_layers))
        multiplier = np.reshape(multiplier, np.shape(multiplier) + (1,) * (u.ndim - np.ndim(multiplier)))
        np.testing.assert_allclose(
            u, np.broadcast_to(-lr * multiplier / (1 + 1e-6), u.shape), rtol=1e-5, err_msg=path
        )


# --- LAMB ------------------------------------------------------------------------------------

CFG = _cfg(name="lamb", weight_decay=0.01)


def _unstack(tree, n):
    """encoder.layers leaves [L, ...] -> L separate leaves, as the original LAMB sees them."""
    out = {}
    for k, v in tree.items():
        if k == "layers" and isinstance(v, dict):
            for i in range(n):
                out[f"layer_{i}"] = jax.tree.map(lambda x, i=i: x[i], v)
        else:
            out[k] = _unstack(v, n) if isinstance(v, dict) else v
    return out


@pytest.mark.parametrize("preset", ["bert-tiny", "albert-tiny"])
def test_lamb_trust_ratio_is_per_layer(preset):
    enc = get_preset(preset, vocab_size=64)
    params = model_lib.nnx.to_pure_dict(model_lib.nnx.state(model_lib.create(enc, ("mlm",), seed=0)))
    rng = np.random.default_rng(0)
    grads = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
    tx, _ = optim.make(CFG, 10, stacked_layers=not enc.share_layers)
    ours, _ = tx.update(grads, tx.init(params), params)
    # optax.lamb on the same values, each layer a variable of its own (ALBERT: one shared block).
    n = 1 if enc.share_layers else enc.num_layers
    split = (lambda t: t) if enc.share_layers else (lambda t: _unstack(t, n))
    # decay_mask itself is pinned to hand-written tables by test_weight_decay_on_kernels_and_embeddings_only.
    ref_tx = optax.lamb(
        CFG.learning_rate,
        b1=CFG.b1,
        b2=CFG.b2,
        eps=CFG.eps,
        weight_decay=CFG.weight_decay,
        mask=optim.decay_mask,
    )
    ref, _ = ref_tx.update(split(grads), ref_tx.init(split(params)), split(params))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9), split(ours), ref)
    # The stacked trust ratio differs from one ratio over all layers (what optax.lamb would do).
    if not enc.share_layers:
        whole, _ = ref_tx.update(grads, ref_tx.init(params), params)
        q = ("encoder", "layers", "attention", "query", "kernel")
        a, b = ours, whole
        for k in q:
            a, b = a[k], b[k]
        assert not np.allclose(a, b, rtol=1e-3)
