"""Fine-tune on your own files: CSV/TSV/JSONL classification or regression, SQuAD-format
JSON/JSONL span QA, CoNLL token classification.

Run:
    bert-jax finetune --config configs/finetune/files.py:kind=classification --init CHECKPOINT \
        --workdir workdir/mine --config.task.files.train=train.csv --config.task.files.validation=dev.csv
Columns: `text` or `sentence1`,`sentence2`, and `label` (--config.task.text_columns=...,
--config.task.label_column=...); the label set is the train split's labels, sorted
(--config.task.labels=neg,pos to fix the order). kind: classification, regression, span,
token_classification.
"""

import ml_collections

from bert_jax import config_files

KINDS = ("classification", "regression", "span", "token_classification")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    args = config_files.parse_arg(arg, {"kind": "classification", "name": "files", "seeds": "1"})
    if args["kind"] not in KINDS:
        raise ValueError(f"kind={args['kind']!r}; choose one of: {', '.join(KINDS)}")
    c = config_files.finetune_config("files", args["name"], args["kind"])
    c.seeds = int(args["seeds"])
    if args["kind"] == "span":
        c.task.max_seq_length = 384
        c.optim.learning_rate = 3e-5
        c.train.epochs = 2.0
    if args["kind"] == "token_classification":
        c.optim.learning_rate = 5e-5
    return c
