"""Pretraining objectives, one module each: OBJECTIVES = {name: module}.

Each module provides HEADS, DATA (the prepared-data formats it trains on),
build(encoder_config, settings, rngs) -> the network, denominators(batch) -> whole-batch
normalizers, and loss_fn(model, batch, rng, denominators) -> (loss, metric sums).
The network knows nothing of losses; the trainer knows nothing of the objective.
"""

from bert_jax.objectives import albert, bert, electra, roberta

OBJECTIVES = {"bert": bert, "roberta": roberta, "albert": albert, "electra": electra}
