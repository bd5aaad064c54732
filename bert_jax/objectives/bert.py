"""BERT: masked LM + next-sentence prediction (loss = MLM + NSP)."""

import jax.numpy as jnp

from bert_jax.models import model as model_lib
from bert_jax.objectives import masked_lm

HEADS = ("mlm", "nsp")
DATA = ("nsp",)  # prepared-data objectives this objective can train on


def build(config, settings, rngs):
    return model_lib.Model(config, HEADS, rngs=rngs)


def denominators(batch):
    return {"mlm": masked_lm.mlm_denominator(batch),
            "rows": jnp.asarray(batch["input_ids"].shape[0], jnp.float32)}


def loss_fn(model, batch, rng, denom):
    return masked_lm.pretraining_loss(model, batch, rng, denom, "nsp")
