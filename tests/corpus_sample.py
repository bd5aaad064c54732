"""A small pretraining corpus for tests: the first documents of the embedded corpus (stdlib
docstrings) written as a corpus file (format "sentences": one sentence a line, a blank line
between documents). Preparing data from it takes seconds; the whole embedded corpus takes a
parse of the standard library and, by default, a pool of worker processes."""

from __future__ import annotations

import itertools
import os


def write(path: str | os.PathLike, documents: int = 100) -> str:
    """Write the first `documents` documents of the embedded corpus to `path`; return it."""
    from bert_jax.data import corpora

    docs = itertools.islice(corpora.default_corpus(), documents)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n\n".join("\n".join(doc) for doc in docs) + "\n")
    return str(path)


def prepare_overrides(path: str | os.PathLike) -> list[str]:
    """The --config flags that make a pretraining run prepare its data from `path` in-process."""
    return [
        "--config.data.prepare.corpus.source=files",
        f"--config.data.prepare.corpus.files={path}",
        "--config.data.prepare.num_workers=1",
    ]
