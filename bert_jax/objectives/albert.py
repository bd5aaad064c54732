"""ALBERT: masked LM (n-gram masking in the paper) + sentence-order prediction."""

from bert_jax.objectives import masked_lm

HEADS = ("mlm", "sop")
MODEL = ()  # where the BERT model with HEADS sits in the parameters
DATA = ("sop",)  # prepared-data objectives this objective can train on
build = masked_lm.builder(HEADS)
denominators = masked_lm.pair_denominators


def loss_fn(model, batch, rng, denom):
    return masked_lm.pretraining_loss(model, batch, rng, denom, "sop")
