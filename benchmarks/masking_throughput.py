"""Masking throughput: masking.mask_batch alone, tokens/s on one host batch, per strategy.

    python benchmarks/masking_throughput.py [--batch 256] [--seq 128] [--vocab 30522] [--repeat 20]

The batch is synthetic, as tests/test_masking.py builds it: [CLS] a [SEP] b [SEP] PAD... with
random lengths (at least 32 tokens) and words of 1-3 tokens; ids 0-3 are PAD, CLS, SEP, MASK,
the first 60% of the rest start a word, the others continue one. The best of --repeat runs,
one thread; one JSON line per strategy.
"""

import argparse
import json
import time

import numpy as np

from bert_jax.data.masking import MaskingConfig, example_key, mask_batch

PAD, CLS, SEP, MASK = 0, 1, 2, 3


def synthetic_batch(rng, batch: int, seq: int, vocab: int, min_len: int = 32):
    """ids [batch, seq], and the special / word-start tables of the vocabulary."""
    special = np.zeros(vocab, bool)
    special[:4] = True
    first_piece = 4 + int(0.6 * (vocab - 4))
    word_start = np.zeros(vocab, bool)
    word_start[4:first_piece] = True

    def words(n):  # n ids made of words of 1-3 tokens (the last one may be cut)
        lengths = rng.integers(1, 4, n)
        starts = np.zeros(lengths.sum(), bool)
        starts[np.cumsum(lengths) - lengths] = True
        start_ids, piece_ids = rng.integers(4, first_piece, n), rng.integers(first_piece, vocab, n)
        return np.where(starts[:n], start_ids, piece_ids).tolist()

    ids = np.full((batch, seq), PAD, np.int32)
    for b in range(batch):
        length = int(rng.integers(min_len, seq + 1))
        split = int(rng.integers(0, length - 2))
        ids[b, :length] = [CLS, *words(split), SEP, *words(length - 3 - split), SEP]
    return ids, special, word_start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    ids, special, word_start = synthetic_batch(np.random.default_rng(9), args.batch, args.seq, args.vocab)
    keys = example_key(0, 0, np.arange(args.batch))
    for strategy in ("token", "whole_word", "span"):
        config = MaskingConfig(strategy=strategy)

        def run(config=config):
            return mask_batch(
                ids, special, word_start, keys, config, MASK, args.vocab, random_ids_exclude=special
            )

        run()  # warm-up
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        best = min(times)
        print(
            json.dumps(
                {
                    "bench": "masking",
                    "strategy": strategy,
                    "batch": [args.batch, args.seq],
                    "vocab": args.vocab,
                    "ms_per_batch": round(best * 1e3, 3),
                    "padded_tokens_per_s": round(ids.size / best),
                    "real_tokens_per_s": round(int((ids != PAD).sum()) / best),
                }
            )
        )


if __name__ == "__main__":
    main()
