"""Optimizer pieces against optax itself: LAMB's trust ratio per stacked layer."""

import jax
import numpy as np
import optax
import pytest

from bert_jax.models import model as model_lib
from bert_jax.models.config import get_preset
from bert_jax.training import optim

CFG = type("C", (), dict(name="lamb", learning_rate=1e-2, warmup_steps=0, decay="constant", power=1.0,
                         end_learning_rate=0.0, weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-6, clip_norm=0.0))


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
    ref_tx = optax.lamb(CFG.learning_rate, b1=CFG.b1, b2=CFG.b2, eps=CFG.eps, weight_decay=CFG.weight_decay,
                        mask=optim.decay_mask)
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
