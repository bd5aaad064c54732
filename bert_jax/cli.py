"""`bert-jax <command>`: parse flags, call one function, turn user errors into one line.

A `UserError` (bad config, file, flag) prints `bert-jax: error: <message>` and exits 2,
like argparse's own errors; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from bert_jax.errors import UserError


def _encode(args: argparse.Namespace) -> None:
    from bert_jax import encode

    encode.encode(args.checkpoint, args.input, args.output, pooling=args.pooling,
                  max_length=args.max_length, batch_size=args.batch_size,
                  normalize=args.normalize)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bert-jax", description="BERT, RoBERTa, ALBERT and ELECTRA in JAX/Flax.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = sub.add_parser("encode", help="embed text lines with a checkpoint; writes .npy",
                       description="Encode UTF-8 text lines (one text per line) with a BERT "
                       "checkpoint and write the hidden states or pooled vectors as .npy.")
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint directory (Hugging Face: config.json, model.safetensors, "
                   "vocab.txt)")
    p.add_argument("--input", required=True, help="UTF-8 text file, one text per line")
    p.add_argument("--output", required=True, help="where to write the .npy array")
    p.add_argument("--pooling", choices=("cls", "mean", "none"), default="mean",
                   help="mean: [lines, hidden] over tokens; cls: [CLS]'s hidden state; "
                   "none: [lines, max_length, hidden] (default: mean)")
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens per line incl. [CLS]/[SEP]; longer lines are truncated "
                   "(default: the model's maximum, at most 512)")
    p.add_argument("--batch-size", type=int, default=32, help="lines per batch (default: 32)")
    p.add_argument("--normalize", action="store_true", help="L2-normalize pooled vectors")
    p.set_defaults(func=_encode)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except UserError as e:
        print(f"bert-jax: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
