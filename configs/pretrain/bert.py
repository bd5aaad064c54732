"""BERT: masked LM + next-sentence prediction.

Run (offline demo size on the embedded corpus; data prepared into WORKDIR/data first):
    bert-jax pretrain --config configs/pretrain/bert.py:size=tiny --workdir workdir/bert
Any field can be overridden, e.g. --config.train.steps=200 --config.mesh.fsdp=2.
Sizes: the presets of bert_jax/models/config.py named bert-<size> (tiny: L2 H128, for CPU demos
and tests; base, large, ... for real runs).
"""

import ml_collections

from bert_jax import config_files


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    args = config_files.parse_arg(arg, {"size": "tiny"})
    c = config_files.pretrain_config("bert", args["size"])
    # Small models take (and need) a larger step: BERT-Tiny learns in minutes on a CPU at 1e-3.
    if args["size"] in ("tiny", "mini"):
        c.optim.learning_rate = 1e-3
    return c
