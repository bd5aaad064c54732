"""RoBERTa: masked LM only, on full-sentence rows (no sentence-pair task)."""

from bert_jax.models import model as model_lib
from bert_jax.objectives import masked_lm

HEADS = ("mlm",)
DATA = ("full_sentences", "electra")


def build(config, settings, rngs):
    return model_lib.Model(config, HEADS, rngs=rngs)


def denominators(batch):
    return {"mlm": masked_lm.mlm_denominator(batch)}


def loss_fn(model, batch, rng, denom):
    return masked_lm.pretraining_loss(model, batch, rng, denom, None)
