"""ELECTRA: a small generator fills the masked positions with sampled tokens; the
discriminator tells, for every token, whether it was replaced.

loss = generator MLM + rtd_weight (config.electra.rtd_weight, 50) * discriminator binary
cross-entropy over real tokens.
Generator and discriminator share the token, position and segment embeddings (the
discriminator owns them; the generator is built without and is handed them at call time).
Sampled tokens carry no gradient, as in the paper.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bert_jax.models import model as model_lib
from bert_jax.models.config import EncoderConfig
from bert_jax.objectives import masked_lm

HEADS = ("rtd",)
MODEL = ("discriminator",)  # where the BERT model with HEADS sits in the parameters
DATA = ("electra", "full_sentences")


def generator_config(disc: EncoderConfig, fraction: float) -> EncoderConfig:
    """The generator: `fraction` of the discriminator's width (heads of 64), same depth and
    embedding width (the embeddings are shared)."""
    hidden = max(64, int(round(disc.hidden_size * fraction / 64)) * 64)
    return disc.replace(
        hidden_size=hidden,
        num_heads=hidden // 64,
        intermediate_size=4 * hidden,
        embedding_size=disc.embed_dim,
        use_pooler=False,
    )


class ElectraPretrainer(nnx.Module):
    def __init__(self, disc: EncoderConfig, gen: EncoderConfig, *, rngs: nnx.Rngs, rtd_weight: float = 50.0):
        self.discriminator = model_lib.Model(disc, ("rtd",), rngs=rngs)
        self.generator = model_lib.Model(gen, ("mlm",), rngs=rngs, own_embeddings=False)
        # A plain float: static, part of the graph definition, not a parameter.
        self.rtd_weight = float(rtd_weight)


def build(config: EncoderConfig, settings, rngs):
    return ElectraPretrainer(
        config,
        generator_config(config, settings.generator_fraction),
        rngs=rngs,
        rtd_weight=settings.rtd_weight,
    )


def networks(disc: EncoderConfig, settings) -> tuple[EncoderConfig, EncoderConfig]:
    return disc, generator_config(disc, settings.generator_fraction)


def hf_models(disc: EncoderConfig, params: dict, generator_fraction: float) -> list[tuple]:
    """discriminator/ (ElectraForPreTraining) and generator/ (ElectraForMaskedLM, holding the
    embeddings it shares with the discriminator)."""
    shared = params["discriminator"]["encoder"]["embeddings"]
    gen = dict(params["generator"], encoder={**params["generator"]["encoder"], "embeddings": shared})
    return [
        ("discriminator", disc, HEADS, params["discriminator"]),
        ("generator", generator_config(disc, generator_fraction), ("mlm",), gen),
    ]


def denominators(batch):
    return {
        "mlm": masked_lm.mlm_denominator(batch),
        "tokens": jnp.maximum(batch["attention_mask"].sum(), 1.0).astype(jnp.float32),
    }


def loss_fn(model: ElectraPretrainer, batch, rng, denom):
    r_gen, r_sample, r_disc = jax.random.split(rng, 3) if rng is not None else (None, None, None)
    inputs = masked_lm.model_inputs(batch)
    embeddings = model.discriminator.encoder.embeddings
    gen = model.generator(
        **inputs, masked_positions=batch["masked_positions"], rng=r_gen, embeddings=embeddings
    )
    gen_loss, sums = masked_lm.mlm_terms(gen["mlm_logits"], batch, denom["mlm"], "mlm")

    # Replace every masked position by a token sampled from the generator.
    logits = jax.lax.stop_gradient(gen["mlm_logits"])
    sampled = (
        jax.random.categorical(r_sample, logits) if r_sample is not None else jnp.argmax(logits, -1)
    )  # [batch, P]
    rows = jnp.arange(batch["input_ids"].shape[0])[:, None]
    pos, real = batch["masked_positions"], batch["masked_weights"] > 0
    ids = batch["input_ids"]
    original = ids.at[rows, pos].set(jnp.where(real, batch["masked_ids"], ids[rows, pos]))
    corrupted = ids.at[rows, pos].set(jnp.where(real, sampled, ids[rows, pos]))
    replaced = (corrupted != original).astype(jnp.float32)

    disc = model.discriminator(**{**inputs, "input_ids": corrupted}, rng=r_disc)
    valid = batch["attention_mask"].astype(jnp.float32)
    bce = optax.sigmoid_binary_cross_entropy(disc["rtd_logits"], replaced) * valid
    correct = ((disc["rtd_logits"] > 0) == (replaced > 0)) * valid
    sums.update(
        rtd_loss=bce.sum(),
        rtd_correct=correct.sum(),
        rtd_count=valid.sum(),
        rtd_replaced=(replaced * valid).sum(),
    )
    return gen_loss + model.rtd_weight * bce.sum() / denom["tokens"], sums
