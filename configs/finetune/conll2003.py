"""CoNLL-2003 named-entity recognition from tensorflow-datasets (conll2003).

Run:
    bert-jax finetune --config configs/finetune/conll2003.py --init CHECKPOINT --workdir workdir/ner
A word's tag is predicted on its first sub-token; entity-level precision, recall and F1 by
seqeval's (conlleval's) rules on validation and test. Hyperparameters: lr 5e-5, batch 32,
3 epochs (as transformers' run_ner example).
"""

import ml_collections

from bert_jax import config_files


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    args = config_files.parse_arg(arg, {"seeds": "1"})
    c = config_files.finetune_config("tfds", "conll2003")
    c.seeds = int(args["seeds"])
    c.optim.learning_rate = 5e-5
    return c
