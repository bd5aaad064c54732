"""One writer per workdir: a live holder refuses a second writer by name; a holder killed
with -9 does not block the next one."""

import os
import signal
import socket
import subprocess
import sys

import pytest

from bert_jax.errors import UserError
from bert_jax.training.writer_lock import WriterLock

HOLDER = """
import sys, time
from bert_jax.training.writer_lock import WriterLock
WriterLock(sys.argv[1], "pretrain").acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_live_holder_refuses_and_killed_holder_does_not_block(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "w")], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(UserError) as e:
            WriterLock(str(tmp_path / "w"), "finetune").acquire()
        msg = str(e.value)
        assert f"pid {proc.pid}" in msg and f"host {socket.gethostname()}" in msg
        assert "running pretrain" in msg and "started 20" in msg and "\n" not in msg
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with WriterLock(str(tmp_path / "w"), "pretrain"):  # the kernel dropped the dead holder's lock
        with pytest.raises(UserError, match="in use by a running pretrain"):
            WriterLock(str(tmp_path / "w"), "pretrain").acquire()  # also within one process
    with WriterLock(str(tmp_path / "w"), "pretrain"):  # released on exit
        pass


def test_prepare_data_takes_the_output_lock(tmp_path):
    """Two prepare-data runs on one output never interleave shards: the second is refused."""
    from bert_jax import config_files
    from bert_jax.data import prepare

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = config_files.to_dict(config_files.load(f"{root}/configs/data/pretraining.py:bert"))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER.replace('"pretrain"', '"prepare-data"'),
                               str(tmp_path / "data")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"in use by a running prepare-data .*pid {holder.pid}"):
            prepare.prepare(cfg, str(tmp_path / "data"), log=lambda *a: None)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["writer.lock"]  # nothing written
