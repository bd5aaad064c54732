"""One writer per workdir: a live holder refuses a second writer by name; a holder killed
with -9 does not block the next one. Locally (flock) and on gs:// (a lease, on an emulator)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from bert_jax.errors import UserError
from bert_jax.writer_lock import LOCK_FILE, STALE_ENV, WriterLock

HOLDER = """
import sys, time
from bert_jax.writer_lock import WriterLock
WriterLock(sys.argv[1], "pretrain").acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_live_holder_refuses_and_killed_holder_does_not_block(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "w")], stdout=subprocess.PIPE, text=True
    )
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
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER.replace('"pretrain"', '"prepare-data"'), str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"in use by a running prepare-data .*pid {holder.pid}"):
            prepare.prepare(cfg, str(tmp_path / "data"), log=lambda *a: None)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["writer.lock"]  # nothing written


# --- a gs:// workdir: a lease object with a heartbeat, on a local Cloud Storage emulator ----------


@pytest.fixture(scope="module")
def gcs():
    """The emulator for this module's gs:// tests; yields a gcsfs filesystem pointed at it."""
    import gcsfs
    from gcs_emulator import emulator

    with emulator() as env, pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)  # children (the holder processes) inherit it too
        mp.delenv(STALE_ENV, raising=False)
        gcsfs.GCSFileSystem.clear_instance_cache()
        try:
            yield gcsfs.GCSFileSystem()
        finally:
            gcsfs.GCSFileSystem.clear_instance_cache()


def _workdir(request) -> str:
    from gcs_emulator import BUCKET

    return f"gs://{BUCKET}/{request.node.name}"


def _stored(fs, workdir: str) -> dict:
    return json.loads(fs.cat_file(f"{workdir}/{LOCK_FILE}"))


def _put(fs, workdir: str, **record) -> None:
    fs.pipe_file(f"{workdir}/{LOCK_FILE}", json.dumps(record).encode())


def test_gcs_live_holder_refuses_and_release_frees(gcs, request):
    workdir = _workdir(request)
    first = WriterLock(workdir, "pretrain").acquire()
    try:
        record = _stored(gcs, workdir)
        assert record["host"] == socket.gethostname() and record["pid"] == os.getpid()
        assert {"started", "heartbeat", "token"} <= set(record) and record["command"] == "pretrain"
        with pytest.raises(UserError) as e:
            WriterLock(workdir, "finetune").acquire()
        msg = str(e.value)
        assert msg.startswith(f"{workdir} is in use by a running pretrain") and "\n" not in msg
        assert f"host {socket.gethostname()}" in msg and f"pid {os.getpid()}" in msg
        assert f"started {record['started']}" in msg
        assert _stored(gcs, workdir)["token"] == record["token"]  # the refused one wrote nothing
    finally:
        first.release()
    assert not gcs.exists(f"{workdir}/{LOCK_FILE}")  # released: the object is gone
    with WriterLock(workdir, "finetune"):
        assert _stored(gcs, workdir)["command"] == "finetune"
        with pytest.raises(UserError, match="in use by a running finetune"):
            WriterLock(workdir, "pretrain").acquire()
    with WriterLock(workdir, "pretrain"):
        pass


def test_gcs_holder_killed_on_this_host_does_not_block(gcs, request):
    workdir = _workdir(request)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, workdir], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"in use by a running pretrain .*pid {proc.pid}"):
            WriterLock(workdir, "pretrain").acquire()  # alive: refused
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _stored(gcs, workdir)["pid"] == proc.pid  # the dead holder's lease is still there, fresh
    with WriterLock(workdir, "finetune"):  # ... but its pid is gone on this host: taken over at once
        assert _stored(gcs, workdir)["pid"] == os.getpid()


def test_gcs_other_host_fresh_refuses_stale_is_taken_over(gcs, request, monkeypatch):
    workdir = _workdir(request)
    monkeypatch.setenv(STALE_ENV, "30")
    other = {
        "command": "pretrain",
        "host": "tpu-vm-7",
        "pid": 4242,
        "started": "2030-01-02T03:04:05+00:00",
        "token": "theirs",
    }
    _put(gcs, workdir, **other, heartbeat=time.time() - 5)
    with pytest.raises(UserError) as e:
        WriterLock(workdir, "finetune").acquire()
    assert "host tpu-vm-7, pid 4242, started 2030-01-02T03:04:05+00:00" in str(e.value)
    assert _stored(gcs, workdir)["token"] == "theirs"

    _put(gcs, workdir, **other, heartbeat=time.time() - 60)  # older than the 30 s limit
    with WriterLock(workdir, "finetune"):
        record = _stored(gcs, workdir)
        assert record["host"] == socket.gethostname() and record["token"] != "theirs"


def test_gcs_heartbeat_advances_and_stops_when_taken_over(gcs, request, monkeypatch, capsys):
    workdir = _workdir(request)
    monkeypatch.setenv(STALE_ENV, "4")  # a beat every second
    lock = WriterLock(workdir, "pretrain").acquire()
    try:
        first = _stored(gcs, workdir)["heartbeat"]
        time.sleep(2.5)
        second = _stored(gcs, workdir)
        assert second["heartbeat"] > first and second["token"] == _stored(gcs, workdir)["token"]
        # Another run takes over (as if this one had stalled past the limit): this one stops renewing.
        _put(
            gcs,
            workdir,
            command="finetune",
            host="tpu-vm-7",
            pid=7,
            started="x",
            token="theirs",
            heartbeat=123.0,
        )
        time.sleep(2.5)
        assert _stored(gcs, workdir) == {
            "command": "finetune",
            "host": "tpu-vm-7",
            "pid": 7,
            "started": "x",
            "token": "theirs",
            "heartbeat": 123.0,
        }
        assert "was taken over by finetune (host tpu-vm-7, pid 7)" in capsys.readouterr().err
    finally:
        lock.release()
    assert _stored(gcs, workdir)["token"] == "theirs"  # release leaves a lease that is not ours


def test_gcs_racing_creator_is_caught_by_the_read_back(gcs, request, monkeypatch):
    """The emulator (like some backends) ignores ifGenerationMatch=0: a writer that lands its
    record right after ours wins, and the read-back sees that the token is not ours."""
    from bert_jax import writer_lock

    workdir = _workdir(request)
    write = writer_lock._Lease._write

    def racer_lands_after_us(self, if_generation_match):
        generation = write(self, if_generation_match)
        _put(
            gcs,
            workdir,
            command="pretrain",
            host="tpu-vm-9",
            pid=99,
            started="s",
            token="racer",
            heartbeat=time.time(),
        )
        return generation

    monkeypatch.setattr(writer_lock._Lease, "_write", racer_lands_after_us)
    with pytest.raises(UserError, match="in use by a running pretrain \\(host tpu-vm-9, pid 99"):
        WriterLock(workdir, "finetune").acquire()
    assert _stored(gcs, workdir)["token"] == "racer"
