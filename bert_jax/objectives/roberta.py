"""RoBERTa: masked LM only, on full-sentence rows (no sentence-pair task)."""

from bert_jax.objectives import masked_lm

HEADS = ("mlm",)
MODEL = ()  # where the BERT model with HEADS sits in the parameters
DATA = ("full_sentences", "electra")  # prepared-data objectives this objective can train on
build = masked_lm.builder(HEADS)
denominators = masked_lm.mlm_denominators


def loss_fn(model, batch, rng, denom):
    return masked_lm.pretraining_loss(model, batch, rng, denom, None)
