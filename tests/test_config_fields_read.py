"""Every config field is read by something (issue #12 item 7): a field nothing reads is a
setting the user changes for no effect (as `electra.rtd_weight` was).

For each leaf of every shipped config, its key must be read in bert_jax's source: as an
attribute (`.key`), an item (`["key"]`, `.get("key"`), or a field of the dataclass its
section is unpacked into (`MaskingConfig(**config.masking.to_dict())`). Leaves exempt from
this are listed with the reason."""

import dataclasses
import os
import re

import pytest

from bert_jax import config_files
from bert_jax.data.masking import MaskingConfig
from bert_jax.training import sharding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = [f"configs/pretrain/{f}.py:size=tiny" for f in ("bert", "roberta", "albert", "electra")] + [
    "configs/data/pretraining.py:bert",
    "configs/finetune/glue.py:task=sst2",
    "configs/finetune/squad.py:version=2.0",
    "configs/finetune/conll2003.py",
    "configs/finetune/files.py:kind=classification",
]
# Sections read whole, by a fixed set of names: a dataclass they are unpacked into, the
# mesh axes sharding.make_mesh looks up, the split names of task.files.
UNPACKED = {
    "masking": {f.name for f in dataclasses.fields(MaskingConfig)},
    "mesh": set(sharding.MESH_AXES),
    "files": {"train", "validation", "test"},
}
# Leaves read by other means, with the reason.
EXEMPT: dict[str, str] = {}


def _leaves(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _source() -> str:
    """bert_jax's source but config_files.py: it writes every field (`c.train.steps = 1000`), which
    says nothing of whether anything reads it."""
    text = []
    for root, _, names in os.walk(os.path.join(ROOT, "bert_jax")):
        paths = [os.path.join(root, n) for n in names if n.endswith(".py")]
        paths = [p for p in paths if not os.path.samefile(p, config_files.__file__)]
        text += [open(p, encoding="utf-8").read() for p in paths]
    return "\n".join(text)


SOURCE = _source()


def _read(path: str) -> bool:
    parts = path.split(".")
    for section, names in UNPACKED.items():
        if section in parts[:-1] and parts[-1] in names:
            return True
    key = re.escape(parts[-1])
    return re.search(rf"\.{key}\b|\[[\"']{key}[\"']\]|\.get\([\"']{key}[\"']", SOURCE) is not None


@pytest.mark.parametrize("spec", CONFIGS)
def test_every_config_leaf_is_read(spec):
    config = config_files.to_dict(config_files.load(os.path.join(ROOT, spec)))
    unread = [p for p in _leaves(config) if p not in EXEMPT and not _read(p)]
    assert not unread, f"{spec}: config fields nothing in bert_jax reads: {unread}"


def test_the_check_fails_on_an_unread_field():
    assert not _read("electra.rtd_weight_nobody_reads")
    assert _read("electra.rtd_weight")
    # Where the fields are defined is not where they are read.
    assert "c.electra.rtd_weight = " in open(config_files.__file__, encoding="utf-8").read()
    assert "c.electra.rtd_weight = " not in SOURCE


def test_data_configs_are_keyed_by_example_format():
    """configs/data/pretraining.py:<format>; a family name means the format it used."""

    def load(arg):
        return config_files.to_dict(config_files.load(f"{ROOT}/configs/data/pretraining.py:{arg}"))

    for family, fmt, kind, lower in (
        ("bert", "nsp", "wordpiece", True),
        ("albert", "sop", "unigram", True),
        ("roberta", "full_sentences", "byte_bpe", False),
        ("electra", "electra", "wordpiece", True),
    ):
        config = load(fmt)
        assert config["objective"] == fmt
        assert (config["train_tokenizer"]["model_type"], config["train_tokenizer"]["lowercase"]) == (
            kind,
            lower,
        )
        assert load(family) == config
    with pytest.raises(Exception, match="choose an example format .nsp, sop, full_sentences, electra"):
        load("mlm")
