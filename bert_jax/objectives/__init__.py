"""Pretraining objectives, one module each: OBJECTIVES = {name: module}.

Each module provides HEADS, MODEL (the path of the BERT model with those heads in the
parameters: () or ELECTRA's ("discriminator",)), DATA (the prepared-data formats it trains on),
build(encoder_config, settings, rngs) -> the network, denominators(batch) -> whole-batch
normalizers, and loss_fn(model, batch, rng, denominators) -> (loss, metric sums); it may
provide hf_models (see `hf_models`) and networks (see `networks`).
The network knows nothing of losses; the trainer knows nothing of the objective.
"""

from bert_jax.objectives import albert, bert, electra, roberta

OBJECTIVES = {"bert": bert, "roberta": roberta, "albert": albert, "electra": electra}


def hf_models(record, params: dict) -> list[tuple]:
    """The transformers models a checkpoint exports as: (subdirectory, encoder config, heads,
    params) each. One model at the top, unless the objective says otherwise (ELECTRA: its
    discriminator and generator side by side). `record`: a training.workdir.Record."""
    module = OBJECTIVES.get(record.objective)
    if module is not None and hasattr(module, "hf_models"):
        return module.hf_models(record.encoder, params, record.generator_fraction)
    return [("", record.encoder, record.heads, params)]


def networks(name: str, enc, settings) -> tuple:
    """The encoder configs that run at each training step (their FLOPs count): the model's,
    and an objective's others (ELECTRA: the generator)."""
    module = OBJECTIVES[name]
    return module.networks(enc, settings) if hasattr(module, "networks") else (enc,)
