"""ALBERT: masked LM (n-gram masking in the paper) + sentence-order prediction."""

import jax.numpy as jnp

from bert_jax.models import model as model_lib
from bert_jax.objectives import masked_lm

HEADS = ("mlm", "sop")
DATA = ("sop",)


def build(config, settings, rngs):
    return model_lib.Model(config, HEADS, rngs=rngs)


def denominators(batch):
    return {"mlm": masked_lm.mlm_denominator(batch),
            "rows": jnp.asarray(batch["input_ids"].shape[0], jnp.float32)}


def loss_fn(model, batch, rng, denom):
    return masked_lm.pretraining_loss(model, batch, rng, denom, "sop")
