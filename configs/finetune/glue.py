"""GLUE from tensorflow-datasets (glue/<task>): classification, STS-B regression.

Run:
    bert-jax finetune --config configs/finetune/glue.py:task=sst2 --init CHECKPOINT --workdir workdir/sst2
    bert-jax finetune --config configs/finetune/glue.py:task=cola,seeds=5 --init bert-base-uncased/ ...
Metrics (main one first): cola MCC; sst2, mnli (matched and mismatched), qnli, rte, wnli
accuracy; mrpc, qqp F1 and accuracy; stsb Pearson and Spearman. Predictions on the test
splits are written as the GLUE leaderboard's TSVs (CoLA.tsv, MNLI-m.tsv, ...).
Hyperparameters: the BERT paper's (lr 2e-5, batch 32, 3 epochs, 128 tokens); the paper
picked lr from {5e-5, 3e-5, 2e-5} per task on dev; RTE/MRPC/STS-B/CoLA vary across seeds,
so use seeds=5 for them.
"""

import ml_collections

from bert_jax import config_files

TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli", "ax")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    args = config_files.parse_arg(arg, {"task": "sst2", "seeds": "1"})
    if args["task"] not in TASKS:
        raise ValueError(f"task={args['task']!r} is not a GLUE task; choose one of: {', '.join(TASKS)}")
    c = config_files.finetune_config("tfds", f"glue/{args['task']}")
    c.seeds = int(args["seeds"])
    return c
