"""The fine-tuning config every task file starts from; each field is commented.

Not run directly: use configs/finetune/{glue,squad,conll2003,files}.py.
"""

import importlib.util
import os

import ml_collections


def _pretrain_base():
    """configs/pretrain/pretrain_base.py: the compute, optimizer, mesh and distributed sections."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pretrain", "pretrain_base.py")
    spec = importlib.util.spec_from_file_location("_pretrain_base", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_SHARED = _pretrain_base()
# 'task=cola,seeds=5' -> {'task': 'cola', 'seeds': '5'} over the allowed keys.
parse_arg = _SHARED.parse_arg


def task_config(source: str, name: str, kind: str = "") -> ml_collections.ConfigDict:
    t = ml_collections.ConfigDict()
    # tfds (GLUE, SQuAD, CoNLL-2003 through tensorflow-datasets) or files (your own).
    t.source = source
    # tfds: glue/<cola|sst2|mrpc|qqp|stsb|mnli|qnli|rte|wnli|ax>, squad/v1.1, squad/v2.0,
    # conll2003. files: a name of your choosing (shown in results).
    t.name = name
    # classification, regression, span (extractive QA) or token_classification;
    # implied by the TFDS name, required for files.
    t.kind = kind
    # TFDS data_dir ("" = TFDS's default, ~/tensorflow_datasets).
    t.tfds_data_dir = ""
    # Splits: "" = the task's defaults (train; GLUE validation / test, MNLI matched and
    # mismatched; SQuAD validation; CoNLL validation,test). Comma-separated lists.
    t.train_split = ""
    t.eval_splits = ""
    # Unlabelled splits that only get predictions (GLUE test -> leaderboard TSVs).
    t.predict_splits = ""
    # source=files: one path per split ("" = none). .csv/.tsv/.jsonl (classification,
    # regression), SQuAD .json/.jsonl (span), CoNLL .conll/.txt (token_classification).
    t.files = ml_collections.ConfigDict({"train": "", "validation": "", "test": ""})
    # Input columns: "" = "text" if present, else "sentence1,sentence2".
    t.text_columns = ""
    t.label_column = "label"
    # Row id for prediction files: "" = "id" / "idx" if present, else the row number.
    t.id_column = ""
    # The label set in order, comma-separated; "" = from the data (TFDS label names; files:
    # sorted labels of the train split; CoNLL tags with "O" first).
    t.labels = ""
    # Tokens per row, [CLS]/[SEP] included.
    t.max_seq_length = 128
    # SQuAD: window stride over long contexts, question tokens kept, spans searched.
    t.doc_stride = 128
    t.max_query_length = 64
    t.n_best_size = 20
    t.max_answer_length = 30
    # Keep only the first N examples of each split (0 = all): smoke runs.
    t.max_examples = 0
    return t


def base_config(task: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # The checkpoint to start from (--init on the command line wins): one of our pretraining
    # workdirs, a `bert-jax import` workdir, a Hugging Face checkpoint directory, or an
    # original TF1 checkpoint (prefix or directory). Its encoder is kept; the head is new.
    c.init = ""
    c.task = task
    # Fine-tune this many times with seeds train.seed, train.seed+1, ...; results report the
    # mean, std and median of every metric over them.
    c.seeds = 1

    # The pretraining config's compute section (configs/pretrain/pretrain_base.py).
    c.model = _SHARED.compute_config()

    c.train = ml_collections.ConfigDict()
    # Passes over the training split; the last batch of an epoch is padded, not dropped.
    c.train.epochs = 3.0
    # Rows per step over all hosts; must divide by the data x fsdp mesh size.
    c.train.global_batch_size = 32
    # Rows per evaluation step (0 = global_batch_size).
    c.train.eval_batch_size = 0
    # Pack a step's examples into as few rows of task.max_seq_length as hold them (each keeps
    # its own attention, positions, [CLS] and labels; the step still takes global_batch_size
    # examples): classification, regression, token classification. Span QA and packing=False
    # cut each batch to the smallest of a few widths that holds its longest row instead.
    c.train.packing = True
    # At most this many examples share a packed row.
    c.train.pack_max_per_row = 16
    c.train.seed = 0
    c.train.log_every = 50
    # Evaluate every N steps (0 = at the end of each epoch); the best checkpoint by the
    # task's main metric (on the first eval split) is kept.
    c.train.eval_every = 0
    # Save the full training state (params, optimizer, step) every N steps (0 = at each
    # evaluation) under seed_<k>/state, and on SIGTERM (then exit 0): rerunning the command
    # continues an interrupted seed where it stopped, bit for bit.
    c.train.checkpoint_every = 0
    # Fraction of the steps spent warming the learning rate up (BERT: 0.1).
    c.train.warmup_fraction = 0.1

    # The optimizer as pretraining's (configs/pretrain/pretrain_base.py), warmup from
    # train.warmup_fraction, plus:
    c.optim = _SHARED.optim_config(learning_rate=2e-5)
    # No gradient clipping by default (pretraining clips at 1.0). A fine-tuning step's global
    # gradient norm runs at 1-8, so clipping at 1.0 rescales nearly every step; on the
    # short-text benchmark (benchmarks/finetune_vs_torch.py, RESULTS.md) it cost 3.5 points
    # of dev accuracy against the plain PyTorch loop, which does not clip. BERT's
    # run_classifier.py and HF's Trainer clip at 1.0: --config.optim.clip_norm=1.0 does too.
    c.optim.clip_norm = 0.0
    # Layer-wise learning-rate decay, as ELECTRA's: with depth 0 for the embeddings, i+1 for
    # layer i, L+1 for the pooler and L+2 for the task head, a parameter learns at
    # lr * decay^(L+2-depth). 1.0 = off; ELECTRA used 0.8 (base) and 0.9 (large).
    c.optim.layerwise_decay = 1.0
    # Mesh and jax.distributed as pretraining's.
    c.mesh = _SHARED.mesh_config()
    c.distributed = _SHARED.distributed_config()
    return c
