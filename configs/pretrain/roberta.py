"""RoBERTa: masked LM on full-sentence rows, dynamic masking.

Run (offline demo size on the embedded corpus; data prepared into WORKDIR/data first):
    bert-jax pretrain --config configs/pretrain/roberta.py:size=tiny --workdir workdir/roberta
Any field can be overridden, e.g. --config.train.steps=200 --config.mesh.fsdp=2.
Sizes: the presets of bert_jax/models/config.py named roberta-<size> (tiny: L2 H128, for CPU demos
and tests; base, large, ... for real runs).
"""

import ml_collections

from bert_jax import config_files


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    args = config_files.parse_arg(arg, {"size": "tiny"})
    c = config_files.pretrain_config("roberta", args["size"])
    # RoBERTa's recipe: larger learning rate with longer warmup, Adam b2=0.98, eps 1e-6.
    c.optim.b2 = 0.98
    c.optim.learning_rate = 6e-4
    return c
