"""One writer per workdir: `pretrain` and `finetune` hold `WORKDIR/writer.lock` while they run.

A second run on a workdir that a live run holds is refused with one line naming the holder
(host, pid, start time). Readers (encode, export, evaluate, --init) take no lock and write nothing.

Local workdir: an advisory `flock` on the file. The kernel releases it when its process dies, so a
holder killed with -9 never blocks the next run. The file stays (removing it would race with a
process that has it open) and holds the last holder's record.

Cloud workdir (`gs://`): a lease. The object holds the holder's record plus a `heartbeat` (unix
time, rewritten by a daemon thread every stale/4 s) and a random `token`. It is created with
`ifGenerationMatch=0` (a concurrent creator gets 412) and read back to check the token is ours
(which also catches a racing writer where preconditions are ignored). A holder is dead, and its
object may be deleted and taken over, when its heartbeat is older than the stale limit (120 s;
env BERT_JAX_LOCK_STALE_S; hosts' clocks must agree to well within it) or it was written on this
host (and PID namespace) by a pid that no longer exists, so a kill -9 here does not block at all.
Renewals and deletes are conditional on the object's generation; a holder that finds its token
gone stops renewing with a warning. Release deletes the object if it is still ours.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
import threading
import time
import uuid

from bert_jax import storage
from bert_jax.errors import UserError

LOCK_FILE = "writer.lock"
STALE_ENV = "BERT_JAX_LOCK_STALE_S"
DEFAULT_STALE_S = 120.0


class WriterLock:
    def __init__(self, workdir: str, command: str):
        workdir = str(workdir)
        self.remote = storage.is_remote(workdir)
        self.workdir = workdir.rstrip("/") if self.remote else workdir
        self.path = storage.join(self.workdir, LOCK_FILE) if self.remote else os.path.join(workdir, LOCK_FILE)
        self.command = command
        self._fd: int | None = None
        self._lease: _Lease | None = None

    def _record(self) -> dict:
        return {
            "command": self.command,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        }

    def _refuse(self, holder: dict, directory: str) -> UserError:
        return UserError(
            f"{directory} is in use by a running {holder.get('command', 'bert-jax')} "
            f"(host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, started "
            f"{holder.get('started', '?')}); wait for it to end or use another --workdir"
        )

    def acquire(self) -> WriterLock:
        if self.remote:
            record = dict(self._record(), pidns=_pid_namespace())
            self._lease = _Lease(self.path, record, lambda h: self._refuse(h, self.workdir))
            self._lease.acquire()
            return self
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise self._refuse(holder, os.path.dirname(self.path)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self._record()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None
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


def stale_seconds() -> float:
    """How old a cloud lock's heartbeat may get before its holder counts as dead."""
    value = os.environ.get(STALE_ENV, "")
    try:
        return float(value) if value else DEFAULT_STALE_S
    except ValueError:
        raise UserError(f"{STALE_ENV}={value!r} is not a number of seconds") from None


def _pid_namespace() -> str | None:
    """Which pid space our pid is in: containers sharing a host name may not share it."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _dead(holder: dict, stale: float) -> bool:
    """Whether a cloud lock record's holder may be taken over."""
    try:
        heartbeat = float(holder.get("heartbeat") or 0)
    except (TypeError, ValueError):
        heartbeat = 0.0
    if time.time() - heartbeat > stale:
        return True
    if holder.get("host") == socket.gethostname() and holder.get("pidns") == _pid_namespace():
        try:
            os.kill(int(holder.get("pid")), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, TypeError, ValueError, OverflowError):
            pass  # alive under another user, or no usable pid: trust the heartbeat
    return False


class _Lease:
    """The cloud lock object (`gs://...`), through gcsfs with generation preconditions."""

    def __init__(self, path: str, record: dict, refuse):
        import gcsfs

        self.fs = gcsfs.GCSFileSystem()
        self.path = path
        self.bucket, self.key = path.split("://", 1)[1].split("/", 1)
        self.record = dict(record, token=uuid.uuid4().hex)
        self.refuse = refuse
        self.stale = stale_seconds()
        self.generation: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- object operations -------------------------------------------------------------------
    def _read(self) -> tuple[str | None, dict | None]:
        """(generation, record) of the object, (None, None) when there is none. The content is
        read after the metadata, so it is that generation or newer."""
        try:
            meta = self.fs.call("GET", "b/{}/o/{}", self.bucket, self.key, json_out=True)
            _, content = self.fs.call("GET", "b/{}/o/{}", self.bucket, self.key, alt="media")
        except FileNotFoundError:
            return None, None
        try:
            record = json.loads(content.decode() or "{}")
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = {}
        return str(meta.get("generation")), record if isinstance(record, dict) else {}

    def _write(self, if_generation_match: str) -> str:
        """Upload our record (heartbeat now) if the object's generation is `if_generation_match`
        ("0": only if there is none); returns the new generation. FileExistsError on 412."""
        from urllib.parse import quote

        data = json.dumps(dict(self.record, heartbeat=time.time())).encode()
        body = (
            b"--==0==\nContent-Type: application/json; charset=UTF-8\n\n"
            + json.dumps({"name": self.key}).encode()
            + b"\n--==0==\nContent-Type: application/json\n\n"
            + data
            + b"\n--==0==--"
        )
        out = self.fs.call(
            "POST",
            f"{self.fs._location}/upload/storage/v1/b/{quote(self.bucket)}/o",
            uploadType="multipart",
            ifGenerationMatch=str(if_generation_match),
            headers={"Content-Type": 'multipart/related; boundary="==0=="'},
            data=body,
            json_out=True,
        )
        return str(out.get("generation"))

    def _delete(self, generation: str) -> None:
        """Delete the object if it is still `generation` (gone or replaced: nothing to do)."""
        with contextlib.suppress(FileNotFoundError, FileExistsError):
            self.fs.call("DELETE", "b/{}/o/{}", self.bucket, self.key, ifGenerationMatch=generation)

    def _ours(self, record: dict | None) -> bool:
        return record is not None and record.get("token") == self.record["token"]

    # --- the lease ---------------------------------------------------------------------------
    def acquire(self) -> None:
        for _ in range(3):  # a holder may vanish between our reads; then look again
            generation, holder = self._read()
            if holder is not None:
                if not _dead(holder, self.stale):
                    raise self.refuse(holder)
                self._delete(generation)
            with contextlib.suppress(FileExistsError):  # 412: someone created it first
                self._write(if_generation_match="0")
            generation, holder = self._read()  # the precondition may be ignored: check the token
            if self._ours(holder):
                self.generation = generation
                self._thread = threading.Thread(target=self._beat, name="writer-lock-heartbeat", daemon=True)
                self._thread.start()
                return
            if holder is not None:
                raise self.refuse(holder)
        raise UserError(f"could not take {self.path}: it keeps changing; is another run starting?")

    def _beat(self) -> None:
        interval = max(1.0, self.stale / 4)
        while not self._stop.wait(interval):
            try:
                generation, holder = self._read()
                if self._ours(holder):
                    try:
                        self.generation = self._write(if_generation_match=self.generation)
                    except FileExistsError:  # 412: changed since our last write (or a retried
                        generation, holder = self._read()  # write of ours landed twice)
                        if self._ours(holder):
                            self.generation = generation
                    if self._ours(holder):
                        continue
            except Exception as e:  # a network error: keep the lease and try again
                print(f"warning: could not renew {self.path}: {e}", file=sys.stderr, flush=True)
                continue
            by = (
                f" by {holder.get('command', '?')} (host {holder.get('host', '?')}, pid "
                f"{holder.get('pid', '?')})"
                if holder
                else ""
            )
            print(
                f"warning: {self.path} was taken over{by}; this run no longer holds its workdir",
                file=sys.stderr,
                flush=True,
            )
            return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            generation, holder = self._read()
            if self._ours(holder):
                self._delete(generation)
        except Exception as e:  # not worth failing a finished run for: the lease goes stale
            print(f"warning: could not remove {self.path}: {e}", file=sys.stderr, flush=True)


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
