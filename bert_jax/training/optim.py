"""Optimizers: AdamW or LAMB, warmup then linear / polynomial decay, global-norm clipping,
and no weight decay on LayerNorm parameters or biases (as BERT's AdamWeightDecay).

Gradient accumulation is not here: the train step sums the gradients of its
microbatches itself, so that 4 x B/4 gives exactly the update of one step of B.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax.errors import UserError

OPTIMIZERS = ("adamw", "lamb")
DECAYS = ("linear", "polynomial", "constant")
_NO_DECAY = ("bias", "scale")  # our LayerNorm parameters are `scale` / `bias`


def schedule(cfg, total_steps: int) -> optax.Schedule:
    """Linear warmup 0 -> lr over warmup_steps, then decay to end_lr at total_steps."""
    lr, warmup = cfg.learning_rate, cfg.warmup_steps
    if cfg.decay not in DECAYS:
        raise UserError(f"config.optim.decay={cfg.decay!r}; choose one of: {', '.join(DECAYS)}")
    if warmup < 0 or warmup > total_steps:
        raise UserError(f"config.optim.warmup_steps={warmup} must be in [0, train.steps={total_steps}]")
    decay_steps = max(1, total_steps - warmup)
    if cfg.decay == "constant":
        after = optax.constant_schedule(lr)
    else:
        power = 1.0 if cfg.decay == "linear" else cfg.power
        after = optax.polynomial_schedule(lr, cfg.end_learning_rate, power, decay_steps)
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def decay_mask(params):
    """True where weight decay applies: kernels and embeddings, not LayerNorm or biases."""

    def keep(path, _):
        last = path[-1]
        name = getattr(last, "key", getattr(last, "name", str(last)))
        return name not in _NO_DECAY

    return jax.tree_util.tree_map_with_path(keep, params)


def layerwise_scales(params: dict, num_layers: int, decay: float, shared_layers: bool = False) -> dict:
    """Learning-rate multipliers per parameter, ELECTRA's layer-wise decay: depth 0 for the
    embeddings (and anything else in the encoder below the blocks), i+1 for block i, L+1
    for the pooler, L+2 for the task heads; a parameter learns at lr * decay^(L+2-depth).

    The blocks' weights are stacked ([L, ...]), so their multiplier is an [L, 1, ...] array
    that broadcasts over each block's slice. ALBERT's one shared block takes the top
    layer's depth L.
    """
    top = num_layers + 2

    def scale(path, leaf):
        keys = [getattr(k, "key", getattr(k, "name", str(k))) for k in path]
        if keys[0] != "encoder":
            return np.float32(1.0)
        if keys[1] == "layers":
            if shared_layers:
                return np.float32(decay ** (top - num_layers))
            depths = np.arange(1, num_layers + 1)
            return (decay ** (top - depths)).astype(np.float32).reshape((-1,) + (1,) * (leaf.ndim - 1))
        if keys[1] == "pooler":
            return np.float32(decay ** (top - num_layers - 1))
        return np.float32(decay**top)

    return jax.tree_util.tree_map_with_path(scale, params)


def scale_updates(scales) -> optax.GradientTransformation:
    """Multiply each update by its (broadcastable) multiplier: per-parameter learning rates."""

    def update(updates, state, params=None):
        return jax.tree.map(lambda u, s: u * s.astype(u.dtype), updates, scales), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _is_stacked(path) -> bool:
    keys = [getattr(k, "key", getattr(k, "name", str(k))) for k in path]
    return any(a == "encoder" and b == "layers" for a, b in itertools.pairwise(keys))


def scale_by_layer_trust_ratio(stacked_layers: bool) -> optax.GradientTransformation:
    """LAMB's trust ratio ||param|| / ||update||, one per layer: the encoder's blocks are
    stacked [L, ...], so their norms are taken per slice of the leading axis (as the
    original LAMB, which sees L separate variables), not over all L layers at once."""

    def update(updates, state, params):
        def scale(path, u, p):
            axes = tuple(range(1, p.ndim)) if stacked_layers and _is_stacked(path) and p.ndim > 1 else None
            pn = jnp.sqrt(jnp.sum(jnp.square(p), axis=axes, keepdims=axes is not None))
            un = jnp.sqrt(jnp.sum(jnp.square(u), axis=axes, keepdims=axes is not None))
            return u * jnp.where((pn == 0) | (un == 0), 1.0, pn / jnp.where(un == 0, 1.0, un)).astype(u.dtype)

        return jax.tree_util.tree_map_with_path(scale, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make(
    cfg, total_steps: int, scales=None, stacked_layers: bool = True
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer and its schedule; `scales`: per-parameter lr multipliers (layerwise_scales);
    `stacked_layers`: the encoder's blocks are stacked [L, ...] (False for ALBERT's shared one)."""
    if cfg.name not in OPTIMIZERS:
        raise UserError(f"config.optim.name={cfg.name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    lr = schedule(cfg, total_steps)
    if cfg.name == "adamw":
        opt = optax.adamw(
            lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask
        )
    else:
        # optax.lamb's chain (same state layout) with the trust ratio taken per layer.
        opt = optax.chain(
            optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
            optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask),
            scale_by_layer_trust_ratio(stacked_layers),
            optax.scale_by_learning_rate(lr),
        )
    chain = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
    if scales is not None:
        opt = optax.chain(opt, scale_updates(scales))
    return optax.chain(*chain, opt), lr
