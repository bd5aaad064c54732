"""`bert-jax <command>`: parse flags, call one function, turn user errors into one line.

A `UserError` (bad config, file, flag) prints `bert-jax: error: <message>` and exits 2,
like argparse's own errors; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

from bert_jax import host_malloc
from bert_jax.errors import UserError


def _encode(args: argparse.Namespace) -> None:
    import types

    from bert_jax.training import distributed

    distributed.initialize(
        types.SimpleNamespace(
            coordinator=args.coordinator_address or "",
            num_processes=args.num_processes or 0,
            process_id=-1 if args.process_id is None else args.process_id,
            timeout_seconds=300,
        )
    )
    from bert_jax import encode

    encode.encode(
        args.checkpoint,
        args.input,
        args.output,
        pooling=args.pooling,
        max_length=args.max_length,
        batch_size=args.batch_size,
        normalize=args.normalize,
        batch_tokens=args.batch_tokens,
        prefix=args.prefix,
        dtype=args.dtype,
        field=args.field,
        on_bad_line=args.on_bad_line,
        window=args.window,
    )


def _prepare_data(args: argparse.Namespace) -> None:
    from bert_jax import config_files
    from bert_jax.data import prepare

    config = config_files.load(args.config, args.overrides)
    prepare.prepare(config_files.to_dict(config), args.output, overwrite=args.overwrite)


def _distributed_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--coordinator-address",
        default=None,
        help="jax.distributed coordinator HOST:PORT (or BERT_JAX_COORDINATOR)",
    )
    p.add_argument(
        "--num-processes", type=int, default=None, help="processes in the run (or BERT_JAX_NUM_PROCESSES)"
    )
    p.add_argument("--process-id", type=int, default=None, help="this process's id (or BERT_JAX_PROCESS_ID)")


def _apply_distributed_flags(args: argparse.Namespace, config) -> None:
    for flag, field in (
        ("coordinator_address", "coordinator"),
        ("num_processes", "num_processes"),
        ("process_id", "process_id"),
    ):
        if getattr(args, flag) is not None:
            config.distributed[field] = getattr(args, flag)


def _pretrain(args: argparse.Namespace) -> None:
    from bert_jax import config_files

    config = config_files.load(args.config, args.overrides)
    _apply_distributed_flags(args, config)
    from bert_jax.training import pretrain

    pretrain.train_and_evaluate(config, args.workdir)


def _finetune(args: argparse.Namespace) -> None:
    from bert_jax import config_files

    config = config_files.load(args.config, args.overrides)
    if args.init is not None:
        config.init = args.init
    _apply_distributed_flags(args, config)
    from bert_jax.training import finetune

    finetune.fine_tune(config, args.workdir)


def _evaluate(args: argparse.Namespace) -> None:
    from bert_jax import evaluate

    evaluate.evaluate(args.checkpoint, args.config, args.overrides, args.output)


def _export(args: argparse.Namespace) -> None:
    from bert_jax import export

    export.export(
        args.checkpoint, args.format, args.output, overwrite=args.overwrite, max_length=args.max_length
    )


def _import(args: argparse.Namespace) -> None:
    from bert_jax import importer

    importer.import_checkpoint(args.source_kind, args.source, args.output, overwrite=args.overwrite)


def _bench(args: argparse.Namespace) -> None:
    from bert_jax import bench, config_files

    config = config_files.load(args.config, args.overrides)
    if args.mode == "loop":
        bench.run_loop(config, steps=args.steps or 300, workdir=args.workdir)
    else:
        bench.run(config, steps=args.steps or 10, profile_dir=args.profile)


def _train_tokenizer(args: argparse.Namespace) -> None:
    from bert_jax.data.train_tokenizer import train_tokenizer

    summary = train_tokenizer(
        args.input,
        args.model_type,
        args.vocab_size,
        args.output,
        lowercase=args.lowercase,
        overwrite=args.overwrite,
    )
    print(f"train-tokenizer: {summary}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bert-jax", description="BERT, RoBERTa, ALBERT and ELECTRA in JAX/Flax."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = sub.add_parser(
        "encode",
        help="embed text lines with a checkpoint; writes .npy",
        description="Encode UTF-8 text lines (one text per line) with a BERT "
        "checkpoint and write the hidden states or pooled vectors as .npy.",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="checkpoint directory (Hugging Face: config.json, model.safetensors, vocab.txt)",
    )
    p.add_argument(
        "--input",
        required=True,
        help="UTF-8 text (one text per line), .jsonl, .csv, .tsv, or tfds:NAME[/CONFIG][:SPLIT]",
    )
    p.add_argument(
        "--output",
        required=True,
        help="a .npy file, or a directory for .npy shards and a manifest (resumable; "
        "needed with several processes)",
    )
    p.add_argument(
        "--field",
        default="",
        help="the text's JSONL key, CSV/TSV column (default: text) or TFDS feature",
    )
    p.add_argument(
        "--on-bad-line",
        choices=("error", "skip"),
        default="error",
        help="a line that is not UTF-8, invalid JSON or an empty text: stop with its line "
        "number (error), or report it and go on without it (skip) (default: error)",
    )
    p.add_argument(
        "--pooling",
        choices=("cls", "mean", "none"),
        default="mean",
        help="mean: [lines, hidden] over tokens; cls: [CLS]'s hidden state; "
        "none: [lines, max_length, hidden] (default: mean)",
    )
    p.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="tokens per line incl. [CLS]/[SEP]; longer lines are truncated "
        "(default: the model's maximum, at most 512)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=0,
        help="rows of 128 tokens per batch (four times as many 32-token rows); a row holds several "
        "short lines (default: 8 on CPU, 32 on GPU/TPU)",
    )
    p.add_argument(
        "--batch-tokens",
        type=int,
        default=0,
        help="tokens per batch instead of rows (rows = this // the row's width)",
    )
    p.add_argument("--normalize", action="store_true", help="L2-normalize pooled vectors")
    p.add_argument(
        "--prefix",
        default="",
        help='text put before every line, e.g. "query: " for E5-style models (default: none)',
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="compute dtype; weights stay float32 and outputs are float32 (default: float32)",
    )
    p.add_argument(
        "--window",
        type=int,
        default=0,
        help="lines sorted and written together: one shard (default: 8192; pooling none: "
        "at most 256 MB of output)",
    )
    _distributed_flags(p)
    p.set_defaults(func=_encode)

    p = sub.add_parser(
        "prepare-data",
        help="corpus -> tokenized, (packed) pretraining rows",
        description="Tokenize a corpus and build pretraining examples (NSP, SOP, "
        "full sentences or ELECTRA) into ArrayRecord shards plus metadata.json. "
        "Override any config field with --config.FIELD=VALUE.",
    )
    p.add_argument(
        "--config", required=True, help="config file and argument, e.g. configs/data/pretraining.py:nsp"
    )
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument(
        "--overwrite", action="store_true", help="replace data prepared from another config in --output"
    )
    p.set_defaults(func=_prepare_data, takes_overrides=True)

    p = sub.add_parser(
        "pretrain",
        help="pretrain BERT / RoBERTa / ALBERT / ELECTRA",
        description="Pretrain on prepared data with checkpoints, evaluation and "
        "TensorBoard logs under --workdir; rerun to resume. Override any config "
        "field with --config.FIELD=VALUE.",
    )
    p.add_argument("--config", required=True, help="e.g. configs/pretrain/bert.py:size=tiny")
    p.add_argument("--workdir", required=True, help="checkpoints, logs, and (by default) the data")
    _distributed_flags(p)
    p.set_defaults(func=_pretrain, takes_overrides=True)

    p = sub.add_parser(
        "finetune",
        help="fine-tune on GLUE, SQuAD, CoNLL-2003 or your own files",
        description="Fine-tune a checkpoint (ours, `bert-jax import`ed, Hugging Face "
        "or TF1) on a task: several seeds, the best checkpoint per seed by the task's "
        "main metric, predictions, and mean/std/median over seeds in "
        "WORKDIR/results.md. Override any config field with --config.FIELD=VALUE.",
    )
    p.add_argument(
        "--config",
        required=True,
        help="e.g. configs/finetune/glue.py:task=cola or configs/finetune/files.py:kind=classification",
    )
    p.add_argument(
        "--init",
        default=None,
        help="checkpoint to start from: our workdir, a Hugging Face directory, or a TF1 "
        "checkpoint (default: config.init)",
    )
    p.add_argument("--workdir", required=True, help="checkpoints, predictions and results")
    _distributed_flags(p)
    p.set_defaults(func=_finetune, takes_overrides=True)

    p = sub.add_parser(
        "evaluate",
        help="score a fine-tuned checkpoint and write its predictions",
        description="Evaluate a fine-tuned checkpoint (a fine-tuning WORKDIR: its best "
        "seed; WORKDIR/seed_K; or a Hugging Face directory with a task head, given "
        "--config) on the task's eval splits; writes metrics.json and predictions. "
        "--config.task.FIELD=VALUE changes the data, e.g. "
        "--config.task.files.validation=other.csv.",
    )
    p.add_argument("--checkpoint", required=True, help="fine-tuning WORKDIR, WORKDIR/seed_K or HF dir")
    p.add_argument(
        "--config", default=None, help="task config file (default: the one saved with the checkpoint)"
    )
    p.add_argument("--output", default=None, help="predictions directory (default: CHECKPOINT/evaluation)")
    p.set_defaults(func=_evaluate, takes_overrides=True)

    p = sub.add_parser(
        "export",
        help="a checkpoint out as Hugging Face files or a serving artifact",
        description="Export one of our checkpoints: --format hf (transformers v5 "
        "loads it), stablehlo (jax.export) or savedmodel (TF). Writes manifest.json "
        "with the SHA-256 of every file and the source step and config.",
    )
    p.add_argument("--checkpoint", required=True, help="WORKDIR (latest step) or WORKDIR/STEP")
    p.add_argument("--format", required=True, choices=("hf", "stablehlo", "savedmodel"))
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    p.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="stablehlo/savedmodel: the fixed sequence length of the serving signature "
        "(default: the model's, e.g. 512)",
    )
    p.set_defaults(func=_export)

    p = sub.add_parser(
        "import",
        help="a Hugging Face or original TF1 checkpoint into a workdir",
        description="Import a Hugging Face checkpoint directory (safetensors) or an "
        "original google-research bert/albert/electra TF1 checkpoint into a workdir "
        "that pretrain, encode, export and fine-tuning read.",
    )
    p.add_argument("--from", dest="source_kind", required=True, choices=("hf", "tf1"))
    p.add_argument("--source", required=True, help="checkpoint directory (or TF1 checkpoint prefix)")
    p.add_argument("--output", required=True, help="the workdir to create")
    p.add_argument("--overwrite", action="store_true", help="replace checkpoints already in --output")
    p.set_defaults(func=_import)

    p = sub.add_parser(
        "bench",
        help="time the train step on synthetic batches (JSON line)",
        description="Compile and time the pretraining step of a config on synthetic "
        "data; prints one JSON line: ms/step, tokens/s, model FLOPs, MFU against a "
        "matmul ceiling measured in the same run, compile time, peak host memory. "
        "Sequence length: --config.data.prepare.max_seq_length; batch: "
        "--config.train.global_batch_size.",
    )
    p.add_argument("--config", required=True, help="e.g. configs/pretrain/bert.py:size=mini")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="step mode: timed steps after 2 warm-up steps (default 10); loop mode: "
        "steps of the whole loop (default 300)",
    )
    p.add_argument(
        "--mode",
        choices=("step", "loop"),
        default="step",
        help="step: the train step alone on synthetic batches; loop: then the whole "
        "pretraining loop (real data pipeline, async checkpoints every "
        "train.checkpoint_every steps) and its ratio to the step alone",
    )
    p.add_argument(
        "--workdir",
        default=None,
        help="loop mode: where the data and checkpoints go (default: a temporary dir)",
    )
    p.add_argument(
        "--profile",
        default=None,
        metavar="DIR",
        help="step mode: trace 3 more steps with jax.profiler into DIR (TensorBoard "
        "profile plugin; a Perfetto trace.json.gz too)",
    )
    p.set_defaults(func=_bench, takes_overrides=True)

    p = sub.add_parser(
        "train-tokenizer",
        help="train a WordPiece / SentencePiece / BPE vocabulary",
        description="Train a vocabulary on text files and write files that "
        "bert_jax and transformers' tokenizers load.",
    )
    p.add_argument("--input", required=True, nargs="+", help="UTF-8 text files")
    p.add_argument(
        "--model-type",
        required=True,
        choices=("wordpiece", "unigram", "bpe", "byte_bpe"),
        help="wordpiece (BERT, ELECTRA), unigram (ALBERT), bpe (SentencePiece BPE), byte_bpe (RoBERTa)",
    )
    p.add_argument("--vocab-size", required=True, type=int, help="vocabulary size")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument(
        "--lowercase",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="lower-case text first (default: the family's convention: yes for "
        "wordpiece/unigram/bpe, no for byte_bpe)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    p.set_defaults(func=_train_tokenizer)
    return parser


# Commands whose input runs through TensorFlow (tf.data, TFDS). Fine-tuning and evaluation
# start it only for a TFDS task (data/finetuning/tfds_source.py): on files they never import it.
_USES_TENSORFLOW = (_pretrain, _prepare_data, _bench)


# Commands that keep glibc's default malloc on CPU: a fine-tuning step on packed rows has small
# temporaries, and the tuning's kept heap cost ~630 MB of peak RSS on the fine-tuning
# benchmark (2,121 -> 1,493 MB, the PyTorch loop's 1,562; 5% slower): benchmarks/RESULTS.md.
_DEFAULT_MALLOC = ("finetune", "evaluate")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in _DEFAULT_MALLOC and host_malloc.runs_on_cpu():
        host_malloc.tune()  # before JAX starts: see bert_jax/host_malloc.py
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.func in _USES_TENSORFLOW:
        from bert_jax import tf_setup

        tf_setup.start()  # quietly, accelerators hidden: see bert_jax/tf_setup.py
    overrides = [a for a in unknown if a.startswith("--config.")]
    rest = [a for a in unknown if not a.startswith("--config.")]
    if rest or (overrides and not getattr(args, "takes_overrides", False)):
        parser.error(f"unrecognized arguments: {' '.join(rest or overrides)}")
    args.overrides = overrides
    try:
        args.func(args)
    except UserError as e:
        print(f"bert-jax: error: {e}", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    """The `bert-jax` program: main(), then exit without the interpreter's final garbage
    collections walking the object graph TensorFlow and JAX built. gc.freeze() moves every
    object out of the collector's reach; objects are still released and exit handlers still
    run. It cuts a pretraining process's exit from 2.4 s to 0.3 s."""
    try:
        code = main()
    finally:
        gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
