"""Fine-tuning task pipelines: examples (TFDS or the user's files) -> model rows -> scores and
prediction files.

    task = load_task(config.task, tokenizer)
    train = task.features(task.train_split, training=True)     # Features: numpy rows + meta
    metrics, predictions = task.evaluate(split, features, outputs)   # outputs row-aligned logits
    task.write_predictions(split, predictions, output_dir)

Four kinds of task, one head each:

  classification          GLUE (glue/<cola|sst2|mrpc|qqp|mnli|qnli|rte|wnli|ax>) or CSV/TSV/JSONL;
                          one row per example, pairs truncated longest-first as BERT did.
  regression              GLUE STS-B or CSV/TSV/JSONL with a numeric label; the head's single
                          logit is the prediction.
  span                    SQuAD v1.1 / v2.0 (TFDS, SQuAD JSON, HF-style JSONL), as BERT's
                          run_squad.py: whitespace words, per-word sub-tokens, sliding windows
                          over the context, n-best search over all of a question's windows.
  token_classification    CoNLL-2003 (TFDS) or CoNLL files; a word's label sits on its first
                          sub-token.

Every word is tokenized on its own, which gives the same sub-tokens as tokenizing the whole
text: WordPiece and SentencePiece split on whitespace first anyway, and for byte-level BPE
(RoBERTa) every word but a text's first is tokenized with its leading space (" word" ->
"Ġword"), as it appears inside the text.

Anything wrong with the data raises `UserError` naming the file and line (TFDS: split and
idx/example number), the field and what was expected.

Modules, one concern each: settings (the task config), task (Features, the Task interface),
examples (example records, _Source), tfds_source and file_source (reading TFDS and the
user's files), classification, squad and conll (each kind's rows, scores and prediction files).
"""

from __future__ import annotations

from bert_jax.data.finetuning.classification import _SequenceTask
from bert_jax.data.finetuning.conll import _TaggingTask
from bert_jax.data.finetuning.file_source import _files_source
from bert_jax.data.finetuning.settings import DEFAULTS, KINDS, _Settings
from bert_jax.data.finetuning.squad import _SpanTask
from bert_jax.data.finetuning.task import HEADS, Features, Task
from bert_jax.data.finetuning.tfds_source import TFDS_NAMES, _tfds_source
from bert_jax.data.tokenizers import Tokenizer

__all__ = ["DEFAULTS", "HEADS", "KINDS", "TFDS_NAMES", "Features", "Task", "load_task"]


def load_task(task_cfg, tokenizer: Tokenizer) -> Task:
    """The task that `task_cfg` (ConfigDict or dict with the fields of DEFAULTS) describes.

    Defaults when a split field is "":
      GLUE: train; eval validation (mnli: validation_matched,validation_mismatched); predict
        test (mnli: test_matched,test_mismatched). glue/ax has only a test split: it trains and
        is scored on MNLI (train; validation_matched,validation_mismatched) and predicts AX
        test, which is how GLUE's diagnostic set is meant to be run.
      squad/v1.1, squad/v2.0: train; eval validation; no predict split.
      conll2003: train; eval validation,test ("validation" reads TFDS's "dev" split).
      files: train if files.train is set; eval validation (if set) and test if its file has
        labels; predict test if its file has no labels.
    """
    s = _Settings.parse(task_cfg)
    if s.source == "tfds":
        source = _tfds_source(s)
    else:
        source = _files_source(s)
    task_class = {  # the class that builds each kind's rows, scores and prediction files
        "classification": _SequenceTask,
        "regression": _SequenceTask,
        "span": _SpanTask,
        "token_classification": _TaggingTask,
    }[source.kind]
    return task_class(s, source, tokenizer)
