"""BERT: masked LM + next-sentence prediction (loss = MLM + NSP)."""

from bert_jax.objectives import masked_lm

HEADS = ("mlm", "nsp")
MODEL = ()  # where the BERT model with HEADS sits in the parameters
DATA = ("nsp",)  # prepared-data objectives this objective can train on
build = masked_lm.builder(HEADS)
denominators = masked_lm.pair_denominators


def loss_fn(model, batch, rng, denom):
    return masked_lm.pretraining_loss(model, batch, rng, denom, "nsp")
