"""The encoder: embeddings, the stack of blocks, and the pooler.

The L blocks are one stacked set of weights (leading `layers` axis) run by `lax.scan`, so
XLA compiles one block whatever L is; ALBERT's single shared block is scanned L times over
the same weights. `remat_policy` wraps the scanned block in `jax.checkpoint`.

Masks: a padding mask lets every token see the real tokens of its row (as BERT). Given
`packing_ids` ([batch, seq], 1..n for the n sequences of a packed row, 0 for padding),
tokens attend only within their own sequence and positions restart at each sequence.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from bert_jax.models import layers
from bert_jax.models.config import EncoderConfig

Array = jax.Array

REMAT_POLICIES = {
    "full": None,  # save nothing; recompute the whole block in the backward pass
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "offload_dots": jax.checkpoint_policies.offload_dot_with_no_batch_dims("device", "pinned_host"),
}


def _stacked_blocks(config: EncoderConfig, rngs: nnx.Rngs) -> layers.Block:
    if config.share_layers:
        return layers.Block(config, rngs=rngs)

    @nnx.split_rngs(splits=config.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make(rngs):
        return layers.Block(config, rngs=rngs)

    blocks = make(rngs)
    for _, var in nnx.iter_graph(blocks):
        if isinstance(var, nnx.Param):
            var.set_metadata("axes", ("layers",) + tuple(var.get_metadata()["axes"]))
    return blocks


def segment_positions(ids: Array) -> Array:
    """Index of each token within its run of equal ids: [1,1,2,2,2,0] -> [0,1,0,1,2,0]."""
    seq = jnp.arange(ids.shape[-1])
    starts = jnp.concatenate([jnp.ones_like(ids[..., :1], bool), ids[..., 1:] != ids[..., :-1]], -1)
    return seq - jax.lax.cummax(jnp.where(starts, seq, 0), axis=ids.ndim - 1)


class Encoder(nnx.Module):
    """`own_embeddings=False` builds no embedding tables: the caller passes another
    encoder's `embeddings` at call time (ELECTRA's generator shares the discriminator's)."""

    def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs, own_embeddings: bool = True):
        self.config = config
        self.embeddings = layers.Embeddings(config, rngs=rngs) if own_embeddings else None
        self.projection = (
            layers.Dense((config.embed_dim,), (config.hidden_size,), ("embed", "embed"), config, rngs=rngs)
            if config.embedding_projection
            else None
        )
        self.layers = _stacked_blocks(config, rngs)
        self.pooler = (
            layers.Dense((config.hidden_size,), (config.hidden_size,), ("embed", "embed"), config, rngs=rngs)
            if config.use_pooler
            else None
        )

    def positions(self, valid: Array, packing_ids: Array | None) -> Array:
        """Default position ids, as HF computes them; restarted per packed sequence."""
        c = self.config
        if packing_ids is not None:
            local = segment_positions(packing_ids)
        elif c.positions == "fairseq":
            local = jnp.cumsum(valid, axis=-1) - 1
        else:
            return jnp.broadcast_to(jnp.arange(valid.shape[-1]), valid.shape)
        if c.positions == "fairseq":  # pad_id + 1 + index, pad_id at padding
            return jnp.where(valid, local + c.position_offset, c.pad_token_id)
        return local

    def __call__(
        self,
        input_ids: Array,
        attention_mask: Array | None = None,
        segment_ids: Array | None = None,
        position_ids: Array | None = None,
        packing_ids: Array | None = None,
        rng: Array | None = None,
        embeddings: layers.Embeddings | None = None,
        cls_positions: Array | None = None,
    ) -> dict[str, Array]:
        """Returns {"hidden": [batch, seq, hidden], "cls": [batch, hidden], "pooled": [batch,
        hidden] (with a pooler)}. With `cls_positions` [batch, K] (a packed row's examples'
        [CLS] positions), "cls" and "pooled" are [batch, K, hidden]: one per example."""
        if packing_ids is not None:
            valid = packing_ids > 0
            # [batch, 1, q, k]: same sequence, and never a padding key.
            mask = (packing_ids[:, None, :, None] == packing_ids[:, None, None, :]) & valid[:, None, None, :]
        else:
            valid = jnp.ones_like(input_ids, bool) if attention_mask is None else attention_mask.astype(bool)
            mask = valid[:, None, None, :]  # [batch, 1, 1, k]
        if segment_ids is None:
            segment_ids = jnp.zeros_like(input_ids)
        if position_ids is None:
            position_ids = self.positions(valid, packing_ids)

        r_embed = r_layers = None
        if rng is not None:
            r_embed, r_layers = jax.random.split(rng)
        x = (embeddings or self.embeddings)(input_ids, segment_ids, position_ids, r_embed)
        if self.projection is not None:
            x = self.projection(x)
        x = self._run_blocks(x, mask, r_layers)
        if cls_positions is None:
            cls = x[:, 0]
        else:
            cls = jnp.take_along_axis(x, cls_positions[..., None].astype(jnp.int32), axis=1)
        out = {"hidden": x, "cls": cls}
        if self.pooler is not None:
            out["pooled"] = jnp.tanh(self.pooler(cls))
        return out

    def _run_blocks(self, x: Array, mask: Array, rng: Array | None) -> Array:
        c = self.config
        graphdef, params = nnx.split(self.layers)
        keys = None if rng is None else jax.random.split(rng, c.num_layers)

        def block(x, layer_params, key):
            return nnx.merge(graphdef, layer_params)(x, mask, key)

        if c.remat_policy != "none":
            block = jax.checkpoint(
                block, policy=REMAT_POLICIES[c.remat_policy], prevent_cse=not c.scan_layers
            )
        if not c.scan_layers:
            for i in range(c.num_layers):
                layer_params = params if c.share_layers else jax.tree.map(lambda p: p[i], params)
                x = block(x, layer_params, None if keys is None else keys[i])
            return x
        if c.share_layers:  # ALBERT: the same weights at every step
            x, _ = jax.lax.scan(lambda x, key: (block(x, params, key), None), x, keys, length=c.num_layers)
        else:
            x, _ = jax.lax.scan(lambda x, xs: (block(x, *xs), None), x, (params, keys))
        return x
