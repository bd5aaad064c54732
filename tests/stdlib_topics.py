"""A real-text classification set for fine-tuning tests and the README's CSV example: the
first sentences of Python standard-library docstrings, labelled by the topic of their
module (numbers, files, network, text). Deterministic for one Python version.

    python tests/stdlib_topics.py OUTPUT_DIR   # writes train.csv and dev.csv
"""

from __future__ import annotations

import csv
import importlib
import inspect
import os
import random
import re
import sys

GROUPS = {
    "numbers": ("math", "cmath", "statistics", "decimal", "fractions", "random", "numbers"),
    "files": ("os", "shutil", "pathlib", "glob", "tempfile", "zipfile", "tarfile", "filecmp", "fnmatch"),
    "network": (
        "socket",
        "ssl",
        "smtplib",
        "http.client",
        "urllib.request",
        "urllib.parse",
        "ftplib",
        "imaplib",
        "poplib",
    ),
    "text": ("string", "re", "textwrap", "difflib", "unicodedata", "codecs", "html", "csv"),
}


def _first_sentence(doc: str) -> str | None:
    doc = " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())
    m = re.match(r"(.+?[.!?])(\s|$)", doc)
    s = m.group(1) if m else doc
    # Skip signatures ("f(x, y) -> z") and fragments.
    return s if 4 <= len(s.split()) <= 40 and not re.match(r"^[\w.]+\(", s) else None


def sentences() -> dict[str, str]:
    """sentence -> topic, each sentence once (first topic wins)."""
    rows: dict[str, str] = {}
    for label, modules in GROUPS.items():
        for name in modules:
            mod = importlib.import_module(name)
            for attr in sorted(dir(mod)):
                if attr.startswith("_"):
                    continue
                obj = getattr(mod, attr)
                objs = [obj]
                if inspect.isclass(obj) and getattr(obj, "__module__", "").startswith(name.split(".")[0]):
                    objs += [getattr(obj, a) for a in sorted(vars(obj)) if not a.startswith("_")]
                for o in objs:
                    doc = getattr(o, "__doc__", None)
                    if isinstance(doc, str) and (inspect.isroutine(o) or inspect.isclass(o)):
                        s = _first_sentence(doc)
                        if s and s not in rows:
                            rows[s] = label
    return rows


def split(per_class_train: int = 100, per_class_dev: int = 40, seed: int = 0):
    """(train, dev) lists of (text, label), balanced over the topics."""
    by_label: dict[str, list[str]] = {}
    for s, label in sentences().items():
        by_label.setdefault(label, []).append(s)
    rng = random.Random(seed)
    train, dev = [], []
    for label in GROUPS:
        texts = by_label[label]
        rng.shuffle(texts)
        train += [(t, label) for t in texts[:per_class_train]]
        dev += [(t, label) for t in texts[per_class_train : per_class_train + per_class_dev]]
    rng.shuffle(train)
    rng.shuffle(dev)
    return train, dev


def write(output: str, **kwargs) -> tuple[str, str]:
    os.makedirs(output, exist_ok=True)
    paths = []
    for name, rows in zip(("train", "dev"), split(**kwargs), strict=True):
        path = os.path.join(output, f"{name}.csv")
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows(rows)
        paths.append(path)
    return paths[0], paths[1]


if __name__ == "__main__":
    print(write(sys.argv[1]))
