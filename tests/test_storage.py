"""Outputs are written whole or not at all, and names read from files stay in their directory."""

import json
import os

import pytest

from bert_jax import storage
from bert_jax.errors import UserError
from bert_jax.training.workdir import best_seed_dir


def test_write_atomic_leaves_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    storage.write_json(str(path), {"steps": 1})

    def disk_full(*args):
        raise OSError("No space left on device")

    monkeypatch.setattr(storage.os, "replace", disk_full)  # fails after the data is written
    with pytest.raises(OSError, match="No space"):
        storage.write_json(str(path), {"steps": 2})
    assert json.loads(path.read_text()) == {"steps": 1}
    assert os.listdir(tmp_path) == ["summary.json"]  # no temporary file left behind


def test_best_checkpoint_must_stay_inside_the_workdir(tmp_path):
    (tmp_path / "seed_3").mkdir()
    (tmp_path / "results.json").write_text(json.dumps({"best_checkpoint": "seed_3"}))
    assert best_seed_dir(str(tmp_path)) == str(tmp_path / "seed_3")
    for bad in ("../elsewhere", "/etc", "seed_3/../../x", "."):
        (tmp_path / "results.json").write_text(json.dumps({"best_checkpoint": bad}))
        with pytest.raises(UserError, match="best_checkpoint names"):
            best_seed_dir(str(tmp_path))
    (tmp_path / "results.json").write_text("{broken")
    with pytest.raises(UserError, match="no readable best_checkpoint"):
        best_seed_dir(str(tmp_path))


def test_train_tokenizer_outputs_are_whole_or_old(tmp_path, monkeypatch):
    """A failure while writing a retrained vocabulary leaves the old files whole (issue #12 item 9)."""
    from bert_jax.data.train_tokenizer import train_tokenizer

    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"the word{i} and more text number {i}\n" for i in range(300)))
    out = tmp_path / "vocab"
    train_tokenizer([str(corpus)], "wordpiece", 200, str(out))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def disk_full(*args):
        raise OSError("No space left on device")

    monkeypatch.setattr(storage.os, "replace", disk_full)  # every file fails after its bytes are written
    with pytest.raises(OSError, match="No space"):
        train_tokenizer([str(corpus)], "wordpiece", 150, str(out), overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing truncated, no temp file
