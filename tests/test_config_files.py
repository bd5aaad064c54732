"""One door for configs (issue #14 item 4): every ConfigDict is built in bert_jax/config_files.py;
the files under configs/ are thin get_config(arg)s that load without importlib or sys.path edits;
the task defaults are defined once (bert_jax/data/finetuning/settings.py's DEFAULTS)."""

import inspect
import pathlib
import re
import sys

import ml_collections
import pytest

from bert_jax import config_files
from bert_jax.data.finetuning.settings import DEFAULTS
from bert_jax.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG_FILES = sorted(p for p in (ROOT / "configs").rglob("*.py") if "def get_config" in p.read_text())


def test_configs_neither_import_by_path_nor_edit_sys_path():
    texts = {str(p.relative_to(ROOT)): p.read_text() for p in (ROOT / "configs").rglob("*") if p.is_file()}
    assert len(texts) >= 10
    found = [(path, w) for path, text in texts.items() for w in ("importlib", "sys.path") if w in text]
    assert not found


def test_every_python_file_under_configs_is_a_config():
    every = sorted((ROOT / "configs").rglob("*.py"))
    assert CONFIG_FILES == every
    assert {p.relative_to(ROOT).parts[1] for p in every} == {"data", "pretrain", "finetune"}


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_config_loads_through_the_door_as_a_locked_configdict(path):
    before = list(sys.path)
    config = config_files.load(str(path))  # get_config's default argument
    assert sys.path == before
    assert isinstance(config, ml_collections.ConfigDict) and config.is_locked
    with pytest.raises(AttributeError):
        config.no_such_field = 1
    with pytest.raises(UserError, match="config has no field 'no_such_field'"):
        config_files.load(str(path), ["--config.no_such_field=1"])


@pytest.mark.parametrize(
    "spec", ["glue.py:task=sst2", "glue.py:task=stsb", "conll2003.py", "files.py:kind=classification"]
)
def test_the_task_section_is_the_task_defaults(spec):
    task = config_files.load(f"{ROOT}/configs/finetune/{spec}").task
    named = {"source": task.source, "name": task.name, "kind": task.kind}
    assert config_files.to_dict(task) == {**DEFAULTS, **named}
    assert all(type(task[k]) is type(DEFAULTS[k]) for k in DEFAULTS if k != "files")
    assert isinstance(task.files, ml_collections.ConfigDict)


def test_the_fine_tuning_builders_write_no_task_default():
    source = inspect.getsource(config_files.task_config) + inspect.getsource(config_files.finetune_config)
    written = [k for k in DEFAULTS if re.search(rf"\.{k}\s*=[^=]|[\"']{k}[\"']\s*:", source)]
    # The task's own source, name and kind; files made a ConfigDict of DEFAULTS["files"].
    assert written == ["source", "name", "kind", "files"]


def test_a_saved_config_comes_back_locked_with_overrides():
    spec = f"{ROOT}/configs/pretrain/bert.py:size=tiny"
    overrides = ["--config.train.steps=7", "--config.optim.learning_rate=2"]
    saved = config_files.to_dict(config_files.load(spec))
    config = config_files.from_dict(saved, overrides)
    assert config.is_locked and config.train.steps == 7 and config.optim.learning_rate == 2.0
    assert config_files.to_dict(config) == config_files.to_dict(config_files.load(spec, overrides))
    with pytest.raises(UserError, match="config has no field 'train.stepz'"):
        config_files.from_dict(saved, ["--config.train.stepz=3"])
