"""ELECTRA: generator MLM + discriminator replaced-token detection.

Run (offline demo size on the embedded corpus; data prepared into WORKDIR/data first):
    bert-jax pretrain --config configs/pretrain/electra.py:size=tiny --workdir workdir/electra
Any field can be overridden, e.g. --config.train.steps=200 --config.mesh.fsdp=2.
Sizes: the presets of bert_jax/models/config.py named electra-<size> (tiny: L2 H128, for CPU demos
and tests; base, large, ... for real runs).
"""

import ml_collections

from bert_jax import config_files


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    args = config_files.parse_arg(arg, {"size": "tiny"})
    c = config_files.pretrain_config("electra", args["size"])
    # ELECTRA masks with [MASK] 85% of the time and never draws random tokens (the
    # generator supplies the replacements).
    c.masking.mask_prob = 0.85
    c.masking.random_prob = 0.0
    c.optim.learning_rate = 5e-4
    return c
