"""Heads on top of the encoder. They return logits and know nothing of losses.

- `MaskedLMHead`: transform (dense, activation, LayerNorm) then the decoder tied to the
  token embedding (through `Embed.attend`, so no parameter is shared) plus a bias. It runs
  only at the given masked positions, as the original BERT did: for small models the
  vocabulary projection is most of the FLOPs. Without positions it runs everywhere.
- `SentencePairHead`: NSP (BERT) or SOP (ALBERT), two logits from the pooled output.
- `ReplacedTokenHead`: ELECTRA's discriminator, one logit per token.
- `SequenceClassificationHead`: classification (or regression with one label), either on
  the pooled output (BERT, ALBERT) or through a dense + activation on [CLS] (RoBERTa, ELECTRA).
- `TokenClassificationHead`, `SpanHead` (start/end logits for extractive QA).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from bert_jax.models import layers
from bert_jax.models.config import EncoderConfig

Array = jax.Array


def gather_positions(x: Array, positions: Array) -> Array:
    """x[b, positions[b, p]] for every b, p: [batch, seq, d], [batch, P] -> [batch, P, d]."""
    return jnp.take_along_axis(x, positions[..., None].astype(jnp.int32), axis=1)


class MaskedLMHead(nnx.Module):
    def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
        h, e = config.hidden_size, config.embed_dim
        self.config = config
        self.transform = layers.Dense((h,), (e,), ("embed", "embed"), config, rngs=rngs)
        self.norm = layers.LayerNorm(e, config)
        self.bias = nnx.Param(jnp.zeros((config.vocab_size,), jnp.dtype(config.param_dtype)), axes=("vocab",))

    def __call__(self, hidden: Array, word_embeddings: layers.Embed, positions: Array | None = None) -> Array:
        """Logits [batch, P, vocab] at `positions` [batch, P], or [batch, seq, vocab]."""
        if positions is not None:
            hidden = gather_positions(hidden, positions)
        x = self.norm(layers.ACTIVATIONS[self.config.hidden_act](self.transform(hidden)))
        logits = word_embeddings.attend(x) + self.bias[...].astype(x.dtype)
        return logits.astype(jnp.float32)


class SentencePairHead(nnx.Module):
    """NSP (is segment B the next segment?) or SOP (are A and B in order?); 2 logits."""

    def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.classifier = layers.Dense((config.hidden_size,), (2,), ("embed", None), config, rngs=rngs)

    def __call__(self, pooled: Array, rng: Array | None = None) -> Array:
        pooled = layers.dropout(pooled, self.config.hidden_dropout, rng)
        return self.classifier(pooled).astype(jnp.float32)  # [batch, 2]


class ReplacedTokenHead(nnx.Module):
    """ELECTRA discriminator: was this token replaced by the generator? One logit a token."""

    def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
        h = config.hidden_size
        self.config = config
        self.dense = layers.Dense((h,), (h,), ("embed", "embed"), config, rngs=rngs)
        self.prediction = layers.Dense((h,), (), ("embed",), config, rngs=rngs)

    def __call__(self, hidden: Array) -> Array:
        x = layers.ACTIVATIONS[self.config.hidden_act](self.dense(hidden))
        return self.prediction(x).astype(jnp.float32)  # [batch, seq]


class SequenceClassificationHead(nnx.Module):
    """num_labels logits per row (num_labels=1: regression).

    config.classifier: "pooler" classifies the pooled output (BERT, ALBERT); "cls_dense_tanh"
    (RoBERTa) and "cls_dense_gelu" (ELECTRA) run [CLS] through a dense layer of their own first,
    as the HF heads of those families do.
    """

    def __init__(self, config: EncoderConfig, num_labels: int, *, rngs: nnx.Rngs):
        h = config.hidden_size
        self.config = config
        self.dense = (
            layers.Dense((h,), (h,), ("embed", "embed"), config, rngs=rngs)
            if config.classifier != "pooler"
            else None
        )
        self.output = layers.Dense((h,), (num_labels,), ("embed", None), config, rngs=rngs)

    def __call__(self, encoded: dict[str, Array], rng: Array | None = None) -> Array:
        rate = self.config.hidden_dropout
        r1 = r2 = None
        if rng is not None:
            r1, r2 = jax.random.split(rng)
        if self.dense is None:
            return self.output(layers.dropout(encoded["pooled"], rate, r1)).astype(jnp.float32)
        x = layers.dropout(encoded["cls"], rate, r1)
        act = jnp.tanh if self.config.classifier == "cls_dense_tanh" else layers.ACTIVATIONS["gelu"]
        x = layers.dropout(act(self.dense(x)), rate, r2)
        return self.output(x).astype(jnp.float32)  # [batch, (K,) num_labels]


class TokenClassificationHead(nnx.Module):
    def __init__(self, config: EncoderConfig, num_labels: int, *, rngs: nnx.Rngs):
        self.config = config
        self.output = layers.Dense((config.hidden_size,), (num_labels,), ("embed", None), config, rngs=rngs)

    def __call__(self, hidden: Array, rng: Array | None = None) -> Array:
        hidden = layers.dropout(hidden, self.config.hidden_dropout, rng)
        return self.output(hidden).astype(jnp.float32)  # [batch, seq, num_labels]


class SpanHead(nnx.Module):
    """Extractive QA: start and end logits for every token."""

    def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
        self.output = layers.Dense((config.hidden_size,), (2,), ("embed", None), config, rngs=rngs)

    def __call__(self, hidden: Array) -> tuple[Array, Array]:
        logits = self.output(hidden).astype(jnp.float32)  # [batch, seq, 2]
        return logits[..., 0], logits[..., 1]
