"""Bad input gives one line and exit 2 (issue #12 item 5): a config file that raises, a
non-integer BERT_JAX_NUM_PROCESSES."""

import os
import subprocess
import sys

import pytest

from bert_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "body,message",
    [
        ("import nonexistent_module_xyz\n", "ModuleNotFoundError: No module named 'nonexistent_module_xyz'"),
        ("def get_config(arg=''):\n    return {}['x']\n", "get_config raised"),
        ("def get_config(arg=''):\n    return 1 / 0\n", "ZeroDivisionError"),
        ("def get_config(:\n", "SyntaxError"),
    ],
)
def test_config_file_raising_anything_is_one_line(tmp_path, capsys, body, message):
    config = tmp_path / "bad_config.py"
    config.write_text(body)
    assert cli.main(["pretrain", "--config", str(config), "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(config) in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "w").exists()


def test_non_integer_process_count_is_one_line(tmp_path):
    env = {**os.environ, "BERT_JAX_COORDINATOR": "127.0.0.1:1", "BERT_JAX_NUM_PROCESSES": "two"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bert_jax.cli",
            "pretrain",
            "--config",
            f"{ROOT}/configs/pretrain/bert.py:size=tiny",
            "--workdir",
            str(tmp_path / "w"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr
    assert "BERT_JAX_NUM_PROCESSES='two' is not an integer" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_program_exits_with_mains_code_and_its_objects_frozen(monkeypatch):
    """`bert-jax` (setup.cfg's entry point) and `python -m bert_jax.cli` run cli.run: main's
    exit code, with gc.freeze() first so the final collections skip TensorFlow's and JAX's
    objects (a 2 s exit, cli.py), also when main raises."""
    import configparser
    import gc

    entry = configparser.ConfigParser()
    entry.read(os.path.join(ROOT, "setup.cfg"))
    assert "bert-jax = bert_jax.cli:run" in entry["options.entry_points"]["console_scripts"]
    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    monkeypatch.setattr(cli, "main", lambda: 2)
    with pytest.raises(SystemExit) as exit_:
        cli.run()
    assert exit_.value.code == 2 and frozen == [True]

    def boom():
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "main", boom)
    with pytest.raises(RuntimeError, match="boom"):
        cli.run()
    assert frozen == [True, True]
