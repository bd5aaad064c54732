"""SQuAD v1.1 / v2.0 extractive QA from tensorflow-datasets (squad/v1.1, squad/v2.0).

Run:
    bert-jax finetune --config configs/finetune/squad.py:version=1.1 --init CHECKPOINT --workdir workdir/squad
Windows of 384 tokens with a document stride of 128, questions cut at 64 tokens, n-best 20,
answers of at most 30 tokens; EM and F1 by the official scripts' rules. v2.0: the no-answer
threshold on the null-score difference is tuned on dev (best_f1_thresh, reported with the
figures at threshold 0). Hyperparameters: BERT's (lr 3e-5, batch 32, 2 epochs).
"""

import ml_collections

from bert_jax import config_files


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    args = config_files.parse_arg(arg, {"version": "1.1", "seeds": "1"})
    if args["version"] not in ("1.1", "2.0"):
        raise ValueError(f"version={args['version']!r}; choose 1.1 or 2.0")
    c = config_files.finetune_config("tfds", f"squad/v{args['version']}")
    c.seeds = int(args["seeds"])
    c.task.max_seq_length = 384
    c.optim.learning_rate = 3e-5
    c.train.epochs = 2.0
    return c
