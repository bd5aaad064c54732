"""One writer per workdir: `pretrain` and `finetune` hold `WORKDIR/writer.lock` while they run.

A second run on a workdir that a live run holds is refused with one line naming the holder
(host, pid, start time). The lock is an advisory `flock` on the file: the kernel releases it
when its process dies, so a holder killed with -9 never blocks the next run. The file stays
(removing it would race with a process that has it open) and holds the last holder's record.
Readers (encode, export, evaluate, --init) take no lock and write nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket

from bert_jax.errors import UserError

LOCK_FILE = "writer.lock"


class WriterLock:
    def __init__(self, workdir: str, command: str):
        self.path = os.path.join(workdir, LOCK_FILE)
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> WriterLock:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise UserError(
                f"{os.path.dirname(self.path)} is in use by a running {holder.get('command', 'bert-jax')} "
                f"(host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, started "
                f"{holder.get('started', '?')}); wait for it to end or use another --workdir") from None
        record = {"command": self.command, "host": socket.gethostname(), "pid": os.getpid(),
                  "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}


def hold(workdir: str, command: str) -> WriterLock | None:
    """Process 0 takes the workdir's lock; every process learns whether it did, so that all
    of them stop together. Returns the lock on process 0 (release it when done), else None."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    lock, error = None, ""
    if jax.process_index() == 0:
        try:
            lock = WriterLock(workdir, command).acquire()
        except UserError as e:
            error = str(e)
    if jax.process_count() > 1:
        refused = int(multihost_utils.broadcast_one_to_all(np.int32(bool(error))))
        if refused and not error:
            error = f"{workdir} is in use by another run (process 0 names it)"
    if error:
        raise UserError(error)
    return lock


@contextlib.contextmanager
def holding(workdir: str, command: str):
    """`hold` for the length of a `with` block (the trainers' whole run)."""
    lock = hold(workdir, command)
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
