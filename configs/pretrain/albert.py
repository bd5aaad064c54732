"""ALBERT: masked LM (n-gram spans) + sentence-order prediction, shared layers.

Run (offline demo size on the embedded corpus; data prepared into WORKDIR/data first):
    bert-jax pretrain --config configs/pretrain/albert.py:size=tiny --workdir workdir/albert
Any field can be overridden, e.g. --config.train.steps=200 --config.mesh.fsdp=2.
Sizes: the presets of bert_jax/models/config.py named albert-<size> (tiny: L2 H128, for CPU demos
and tests; base, large, ... for real runs).
"""

import ml_collections

from bert_jax import config_files


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    args = config_files.parse_arg(arg, {"size": "tiny"})
    c = config_files.pretrain_config("albert", args["size"])
    # ALBERT: n-gram masking (n <= 3, p(n) ~ 1/n) and LAMB.
    c.masking.strategy = "span"
    c.masking.span_distribution = "ngram"
    c.optim.name = "lamb"
    c.optim.learning_rate = 1.76e-3
    return c
