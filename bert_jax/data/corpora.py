"""Text sources for pretraining, each an iterator of documents (a document = its sentences).

- `default`: the embedded corpus, English that ships inside every Python installation:
  the standard library's docstrings (read with `ast`, nothing imported) and the language
  reference topics of `pydoc_data`. About 2 MB; the demo and the tests run on it offline.
- `tfds`: any TFDS text dataset by name and split (`wikipedia/20230601.en`, `c4/en`, ...),
  with a configurable text feature; paragraphs split on newlines, then into sentences.
- `files`: local text files, either google-research/bert's format (`sentences`: one
  sentence per line, a blank line between documents) or one document per line
  (`documents`).

Bad bytes never crash a run: undecodable UTF-8 is replaced and counted; lines longer than
`max_line_chars` are cut and counted. Counts go into `stats`, which prepare-data writes to
its metadata.
"""

from __future__ import annotations

import ast
import collections
import os
import re
import sysconfig
from collections.abc import Iterator

from bert_jax import storage
from bert_jax.errors import UserError

Document = list[str]
SOURCES = ("default", "tfds", "files")
FILE_FORMATS = ("sentences", "documents")
# Sentence ends: . ! ? (optionally closed by quotes/brackets) then space and an upper-case
# letter, digit or opening quote. A heuristic, as google-research/bert's corpora used.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_SKIP_DIRS = {
    "test",
    "tests",
    "idlelib",
    "site-packages",
    "lib2to3",
    "__pycache__",
    "turtledemo",
    "tkinter",
    "ensurepip",
    "pydoc_data",
}


def split_sentences(paragraph: str) -> list[str]:
    return [s for s in (p.strip() for p in _SENTENCE_END.split(paragraph)) if s]


def text_to_document(text: str) -> Document:
    """Paragraphs (lines) of a text into one list of sentences."""
    sentences: Document = []
    for line in text.splitlines():
        line = line.strip()
        if line:
            sentences += split_sentences(line)
    return sentences


def _prose(docstring: str) -> str:
    """A docstring's paragraphs joined into lines, doctest and code lines dropped."""
    paragraphs, current = [], []
    for line in docstring.splitlines():
        s = line.strip()
        if not s or s.startswith((">>>", "...", "$ ", "|")):
            if current:
                paragraphs.append(" ".join(current))
                current = []
            continue
        current.append(s)
    if current:
        paragraphs.append(" ".join(current))
    return "\n".join(paragraphs)


def default_corpus() -> Iterator[Document]:
    """The embedded corpus: stdlib docstrings (one document per module) + pydoc topics."""
    root = sysconfig.get_paths()["stdlib"]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            try:
                with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                    tree = ast.parse(f.read())
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            texts = [
                ast.get_docstring(node, clean=True)
                for node in ast.walk(tree)
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            ]
            doc = text_to_document("\n".join(_prose(t) for t in texts if t))
            if doc:
                yield doc
    from pydoc_data import topics

    for key in sorted(topics.topics):
        doc = text_to_document(_prose(topics.topics[key]))
        if doc:
            yield doc


def _decode(raw: bytes, stats: collections.Counter, max_chars: int, cut: bool = False) -> str:
    if cut:  # a line cut at a byte limit may end inside a character: drop that tail
        tail = len(raw)
        while tail > 0 and tail > len(raw) - 4 and (raw[tail - 1] & 0xC0) == 0x80:
            tail -= 1
        if tail > 0 and raw[tail - 1] >= 0xC0:
            raw = raw[: tail - 1]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        stats["lines_with_invalid_utf8"] += 1
    if cut or len(text) > max_chars:
        stats["lines_cut_to_max_line_chars"] += 1
    return text[:max_chars]


def _lines(f, max_chars: int) -> Iterator[tuple[bytes, bool]]:
    """(line, was_cut) for each line of a binary file, read with bounded memory: a line
    longer than 4 * max_chars bytes is cut there and the rest of it skipped unread."""
    limit = 4 * max_chars  # a UTF-8 character is at most 4 bytes
    while raw := f.readline(limit):
        cut = len(raw) == limit and not raw.endswith(b"\n")
        if cut:
            while (rest := f.readline(limit)) and not rest.endswith(b"\n"):
                pass
        yield raw.rstrip(b"\r\n"), cut


def _file_paths(patterns: list[str]) -> list[str]:
    return sorted({p for pattern in patterns for p in storage.glob(pattern)})


def _file_patterns(corpus) -> list[str]:
    files = corpus.get("files")
    if isinstance(files, str):
        files = [f for f in files.split(",") if f]
    return list(files or [])


def identity(corpus) -> list:
    """What the corpus's content is, cheaply: for files, each path with its size and mtime
    (a changed file changes the prepared data's fingerprint); TFDS names its version; the
    embedded corpus is this package's."""
    if corpus.get("source") == "files":
        return [[p, *storage.stat(p)] for p in _file_paths(_file_patterns(corpus)) if storage.isfile(p)]
    return []


def file_corpus(
    patterns: list[str], file_format: str, stats: collections.Counter, max_line_chars: int = 1_000_000
) -> Iterator[Document]:
    if file_format not in FILE_FORMATS:
        raise UserError(f"corpus.format={file_format!r}; choose one of: {', '.join(FILE_FORMATS)}")
    paths = _file_paths(patterns)
    if not paths:
        raise UserError(f"corpus.files={patterns!r} matches no file")
    for path in paths:
        if not storage.isfile(path):
            raise UserError(f"corpus file {path} is not a regular file")
        with storage.open(path, "rb") as f:
            doc: Document = []
            for raw, cut in _lines(f, max_line_chars):
                text = _decode(raw, stats, max_line_chars, cut).strip()
                if file_format == "documents":
                    if text:
                        yield text_to_document(text)
                elif text:
                    doc.append(text)
                elif doc:
                    yield doc
                    doc = []
            if doc:
                yield doc


def tfds_corpus(
    name: str,
    split: str,
    text_feature: str,
    stats: collections.Counter,
    data_dir: str | None = None,
    max_line_chars: int = 1_000_000,
) -> Iterator[Document]:
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # tfds raises several types for an unknown name
        raise UserError(f"corpus.tfds_name={name!r}: {e}") from None
    features = builder.info.features
    if text_feature not in features:
        raise UserError(
            f"corpus.text_feature={text_feature!r} is not a feature of {name}; it has: {', '.join(features)}"
        )
    ds = builder.as_dataset(split=split, shuffle_files=False)
    for example in tfds.as_numpy(ds):
        text = _decode(example[text_feature], stats, max_line_chars)
        doc = text_to_document(text)
        if doc:
            yield doc


def documents(corpus, stats: collections.Counter) -> Iterator[Document]:
    """The documents of a corpus config (a ConfigDict or dict with the fields below).

    corpus.source: default | tfds | files; tfds_name, split, text_feature, tfds_data_dir;
    files (list of globs), format (sentences | documents); max_line_chars.
    """
    source = corpus["source"]
    max_line_chars = corpus.get("max_line_chars", 1_000_000)
    if source == "default":
        yield from default_corpus()
    elif source == "tfds":
        yield from tfds_corpus(
            corpus["tfds_name"],
            corpus.get("split", "train"),
            corpus.get("text_feature", "text"),
            stats,
            corpus.get("tfds_data_dir") or None,
            max_line_chars,
        )
    elif source == "files":
        yield from file_corpus(
            _file_patterns(corpus), corpus.get("format", "sentences"), stats, max_line_chars
        )
    else:
        raise UserError(f"corpus.source={source!r}; choose one of: {', '.join(SOURCES)}")
