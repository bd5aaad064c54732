"""Building blocks of the encoder: dense, LayerNorm, embeddings, attention, feed-forward, block.

Every parameter carries `axes`, its logical axis names (`vocab`, `embed`, `mlp`, `heads`,
`kv`, ...); `training/sharding.py` alone maps them onto a mesh. Parameters are stored in
`param_dtype` (fp32) and cast to the compute `dtype` at use; LayerNorm and softmax
statistics are computed in fp32 whatever the compute dtype.

Dropout takes an explicit PRNG key (`rng`); `rng=None` means deterministic (inference).
A block draws the random bits of all its dropout sites at once (`keep_masks`): XLA:CPU
compiles each threefry draw on its own, about half a second apiece, and that was a third of
a training step's compile (benchmarks/compile_breakdown.py).

Cheap elementwise work is recomputed in the backward pass rather than stored per layer
(`recompute`): LayerNorm keeps only its compute-dtype input, the feed-forward activation
only its pre-activation, explicit attention only its compute-dtype logits. Otherwise their
fp32 intermediates are saved for every layer (at bf16 that is 3 fp32 [batch, seq, hidden]
tensors per LayerNorm and 4 [batch, seq, 4*hidden] tensors per GELU), and writing and
reading them back costs more than recomputing them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from bert_jax.errors import UserError
from bert_jax.models.config import EncoderConfig

Array = jax.Array

ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


def dropout(x: Array, rate: float, rng: Array | None) -> Array:
    if rng is None or rate == 0.0:
        return x
    return apply_keep(x, keep_masks(rng, [(rate, x.shape)])[0], rate)


def keep_masks(rng: Array, sites: Sequence[tuple[float, tuple[int, ...]]]) -> list[Array | None]:
    """Boolean keep masks for several dropout sites, `(rate, shape)` each, from one draw.

    Each mask keeps an element with probability 1 - rate exactly (a uint32 compared with
    round((1 - rate) * 2**32)); a site with rate 0 gets None. Every shape starts with the
    batch axis, and the draw is [batch, elements per example of all sites], so a batch
    sharded over devices draws its own rows where it lives.
    """
    drawn = [(rate, shape) for rate, shape in sites if rate > 0.0]
    if not drawn:
        return [None] * len(sites)
    batch = drawn[0][1][0]
    if any(shape[0] != batch for _, shape in drawn):
        raise ValueError(f"dropout sites must share their leading (batch) axis: {[s for _, s in drawn]}")
    sizes = [math.prod(shape[1:]) for _, shape in drawn]
    bits = jax.random.bits(rng, (batch, sum(sizes)), jnp.uint32)
    masks, start = [], 0
    for (rate, shape), size in zip(drawn, sizes, strict=True):
        threshold = min(round((1.0 - rate) * 2**32), 2**32 - 1)
        masks.append((bits[:, start : start + size] < jnp.uint32(threshold)).reshape(shape))
        start += size
    it = iter(masks)
    return [next(it) if rate > 0.0 else None for rate, _ in sites]


def apply_keep(x: Array, keep: Array, rate: float) -> Array:
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def recompute(fn, config: EncoderConfig):
    """fn, saving only its inputs for the backward pass (which recomputes fn's insides).

    Inside lax.scan no CSE can undo the recomputation; unrolled, prevent_cse keeps it.
    """
    return jax.checkpoint(fn, prevent_cse=not config.scan_layers)


def _normal(config: EncoderConfig):
    return jax.nn.initializers.truncated_normal(stddev=config.initializer_range)


class Dense(nnx.Module):
    """y = x . kernel + bias, contracting the last len(in_shape) axes of x.

    Multi-axis shapes keep heads explicit: query is [embed] -> [heads, kv], the attention
    output is [heads, kv] -> [embed], so each axis can be named and sharded on its own.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        out_shape: Sequence[int],
        axes: Sequence[str | None],
        config: EncoderConfig,
        *,
        rngs: nnx.Rngs,
        use_bias: bool = True,
    ):
        in_shape, out_shape = tuple(in_shape), tuple(out_shape)
        assert len(axes) == len(in_shape) + len(out_shape), (axes, in_shape, out_shape)
        pdt = jnp.dtype(config.param_dtype)
        self.n_in = len(in_shape)
        self.dtype = jnp.dtype(config.dtype)
        self.kernel = nnx.Param(_normal(config)(rngs.params(), in_shape + out_shape, pdt), axes=tuple(axes))
        self.bias = nnx.Param(jnp.zeros(out_shape, pdt), axes=tuple(axes[self.n_in :])) if use_bias else None

    def __call__(self, x: Array) -> Array:
        return self.apply(x, self.kernel[...], None if self.bias is None else self.bias[...])

    def apply(self, x: Array, kernel: Array, bias: Array | None) -> Array:
        """The layer with the given weights (for functions of them, e.g. under recompute)."""
        contract = (tuple(range(x.ndim - self.n_in, x.ndim)), tuple(range(self.n_in)))
        y = jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype), (contract, ((), ())))
        if bias is not None:
            y = y + bias.astype(self.dtype)
        return y


class LayerNorm(nnx.Module):
    """LayerNorm in fp32 whatever the compute dtype; the backward pass recomputes it from its
    input rather than storing its fp32 intermediates."""

    def __init__(self, dim: int, config: EncoderConfig, axis_name: str = "embed"):
        pdt = jnp.dtype(config.param_dtype)
        self.eps = config.layer_norm_eps
        self.dtype = jnp.dtype(config.dtype)
        self.scale = nnx.Param(jnp.ones((dim,), pdt), axes=(axis_name,))
        self.bias = nnx.Param(jnp.zeros((dim,), pdt), axes=(axis_name,))
        self.config = config

    def _apply(self, x: Array, scale: Array, bias: Array) -> Array:
        x = x.astype(jnp.float32)
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        y = (x - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * scale + bias).astype(self.dtype)

    def __call__(self, x: Array) -> Array:
        return recompute(self._apply, self.config)(x, self.scale[...], self.bias[...])


class Embed(nnx.Module):
    def __init__(
        self, num: int, dim: int, axes: tuple[str | None, str], config: EncoderConfig, *, rngs: nnx.Rngs
    ):
        pdt = jnp.dtype(config.param_dtype)
        self.dtype = jnp.dtype(config.dtype)
        self.embedding = nnx.Param(_normal(config)(rngs.params(), (num, dim), pdt), axes=axes)

    def __call__(self, ids: Array) -> Array:
        return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)

    def attend(self, x: Array) -> Array:
        """Logits against every row of the table: the tied MLM decoder."""
        table = self.embedding[...].astype(self.dtype)
        return jnp.einsum("...e,ve->...v", x.astype(self.dtype), table)


class Embeddings(nnx.Module):
    """Token + segment + learned absolute position embeddings, LayerNorm, dropout.

    Width is config.embed_dim (E); ALBERT and ELECTRA project E -> H in the encoder.
    """

    def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
        e = config.embed_dim
        self.config = config
        self.word = Embed(config.vocab_size, e, ("vocab", "embed"), config, rngs=rngs)
        self.position = Embed(config.max_position_embeddings, e, (None, "embed"), config, rngs=rngs)
        self.segment = Embed(config.type_vocab_size, e, (None, "embed"), config, rngs=rngs)
        self.norm = LayerNorm(e, config)

    def __call__(self, input_ids: Array, segment_ids: Array, position_ids: Array, rng: Array | None) -> Array:
        x = self.word(input_ids) + self.segment(segment_ids) + self.position(position_ids)
        return dropout(self.norm(x), self.config.hidden_dropout, rng)  # [batch, seq, E]


class SelfAttention(nnx.Module):
    def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
        h, n, d = config.hidden_size, config.num_heads, config.head_dim
        self.config = config
        self.query = Dense((h,), (n, d), ("embed", "heads", "kv"), config, rngs=rngs)
        self.key = Dense((h,), (n, d), ("embed", "heads", "kv"), config, rngs=rngs)
        self.value = Dense((h,), (n, d), ("embed", "heads", "kv"), config, rngs=rngs)
        self.output = Dense((n, d), (h,), ("heads", "kv", "embed"), config, rngs=rngs)

    def __call__(self, x: Array, mask: Array, keep: Array | None) -> Array:
        """keep: the attention probabilities' dropout mask [batch, heads, q, k], or None."""
        q, k, v = self.query(x), self.key(x), self.value(x)  # [batch, seq, heads, head_dim]
        if keep is None:
            impl = None if self.config.attention_impl == "auto" else self.config.attention_impl
            if impl == "cudnn" and jax.default_backend() != "gpu":
                raise UserError(
                    f"model.attention_impl='cudnn' needs a GPU; JAX's backend here is "
                    f"{jax.default_backend()!r} (use 'auto' or 'xla')"
                )
            ctx = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=impl)
        else:
            # jax.nn.dot_product_attention has no dropout on the probabilities; training
            # with attention dropout takes the explicit path (same math, no fused kernel).
            logits = jnp.einsum("bqnd,bknd->bnqk", q, k)
            probs = recompute(self._probs, self.config)(logits, mask, keep)
            ctx = jnp.einsum("bnqk,bknd->bqnd", probs, v)
        return self.output(ctx)  # [batch, seq, hidden]

    def _probs(self, logits: Array, mask: Array, keep: Array) -> Array:
        """Dropped-out attention probabilities from compute-dtype logits (softmax in fp32)."""
        logits = logits.astype(jnp.float32) * (1.0 / self.config.head_dim**0.5)
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1).astype(self.config.dtype)
        return apply_keep(probs, keep, self.config.attention_dropout)


class Block(nnx.Module):
    """Post-LN Transformer block: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
        h, f = config.hidden_size, config.intermediate_size
        self.config = config
        self.attention = SelfAttention(config, rngs=rngs)
        self.attention_norm = LayerNorm(h, config)
        self.intermediate = Dense((h,), (f,), ("embed", "mlp"), config, rngs=rngs)
        self.output = Dense((f,), (h,), ("mlp", "embed"), config, rngs=rngs)
        self.output_norm = LayerNorm(h, config)

    def __call__(self, x: Array, mask: Array, rng: Array | None) -> Array:
        c = self.config
        rate = c.hidden_dropout
        keep_attn = keep_out1 = keep_out2 = None
        if rng is not None:
            b, s, _ = x.shape
            keep_attn, keep_out1, keep_out2 = keep_masks(
                rng, [(c.attention_dropout, (b, c.num_heads, s, s)), (rate, x.shape), (rate, x.shape)]
            )
        a = self.attention(x, mask, keep_attn)
        x = self.attention_norm(x + (a if keep_out1 is None else apply_keep(a, keep_out1, rate)))
        y = self._ffn_out(self.intermediate(x), self.output.kernel[...], self.output.bias[...])
        return self.output_norm(x + (y if keep_out2 is None else apply_keep(y, keep_out2, rate)))  # [b, s, h]

    def _ffn_out(self, h: Array, kernel: Array, bias: Array) -> Array:
        # Recomputed: the backward pass keeps the pre-activation h alone and recomputes the
        # activation for both its own gradient and the output kernel's.
        return recompute(
            lambda h, k, b: self.output.apply(ACTIVATIONS[self.config.hidden_act](h), k, b), self.config
        )(h, kernel, bias)
