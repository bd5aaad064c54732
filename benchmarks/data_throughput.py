"""Data pipeline throughput: prepare-data and the online stream, tokens/s per core.

    python benchmarks/data_throughput.py --tokenizer DIR [--workdir /tmp/bench-data]

prepare-data runs on the embedded default corpus (~2 MB of English) with 1 worker (per
core figure) and with one worker per core; the stream reads + masks + batches B=256 x
S=128 host batches from what was prepared, first in a plain loop on one thread, then
through the tf.data pipeline. One JSON line per measurement.
"""

import argparse
import json
import os
import shutil
import time

import numpy as np

from bert_jax import config_files
from bert_jax.data import corpora, masking, prepare
from bert_jax.data.pretraining import PretrainingStream, StreamConfig


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--workdir", default="/tmp/bert-jax-bench-data")
    parser.add_argument("--objective", default="nsp")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=8)
    args = parser.parse_args()
    cores = os.cpu_count()
    # The embedded corpus written --repeat times to one file: enough text (~4M tokens at 8)
    # that worker start-up does not dominate.
    os.makedirs(args.workdir, exist_ok=True)
    text = os.path.join(args.workdir, "corpus.txt")
    docs = list(corpora.default_corpus())
    with open(text, "w", encoding="utf-8") as f:
        for _ in range(args.repeat):
            for doc in docs:
                f.write("\n".join(doc) + "\n\n")
    for workers in sorted({1, cores}):
        out = os.path.join(args.workdir, f"w{workers}")
        shutil.rmtree(out, ignore_errors=True)
        cfg = config_files.to_dict(
            config_files.load(
                "configs/data/pretraining.py:bert",
                [
                    f"--config.tokenizer={args.tokenizer}",
                    f"--config.num_workers={workers}",
                    "--config.corpus.source=files",
                    f"--config.corpus.files={text}",
                    f"--config.objective={args.objective}",
                ],
            )
        )
        meta = prepare.prepare(cfg, out, progress=False, log=lambda *a: None)
        print(
            json.dumps(
                {
                    "bench": "prepare-data",
                    "workers": workers,
                    "corpus_tokens": meta["corpus_tokens"],
                    "seconds": meta["seconds"],
                    "tokens_per_s": meta["tokens_per_second"],
                    "tokens_per_s_per_core": round(meta["tokens_per_second"] / workers),
                }
            )
        )
    data = os.path.join(args.workdir, "w1")
    for strategy in ("token", "whole_word", "span"):
        stream = PretrainingStream(StreamConfig(data, 256, masking=masking.MaskingConfig(strategy=strategy)))
        stream.host_batch(0)
        start = time.perf_counter()
        tokens = 0
        for k in range(args.batches):
            tokens += int(stream.host_batch(k)["attention_mask"].sum())
        dt = time.perf_counter() - start
        print(
            json.dumps(
                {
                    "bench": "stream-loop",
                    "strategy": strategy,
                    "batch": [256, 128],
                    "tokens_per_s_per_core": round(tokens / dt),
                    "padded_tokens_per_s": round(args.batches * 256 * 128 / dt),
                }
            )
        )
    stream = PretrainingStream(StreamConfig(data, 256, masking=masking.MaskingConfig()))
    it = stream.dataset(parallel=1).as_numpy_iterator()
    next(it)
    start = time.perf_counter()
    tokens = sum(int(next(it)["attention_mask"].sum()) for _ in range(args.batches))
    dt = time.perf_counter() - start
    print(
        json.dumps(
            {
                "bench": "stream-tf.data",
                "strategy": "token",
                "parallel": 1,
                "tokens_per_s": round(tokens / dt),
                "note": "one map thread",
            }
        )
    )
    np.testing.assert_(tokens > 0)


if __name__ == "__main__":
    main()
