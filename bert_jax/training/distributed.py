"""Multi-process start-up: jax.distributed from flags or environment, with a timeout.

Sources, first found wins: the config (`distributed.*`, set from the CLI flags), then
BERT_JAX_COORDINATOR / BERT_JAX_NUM_PROCESSES / BERT_JAX_PROCESS_ID. With none and on a
Cloud TPU VM, `jax.distributed.initialize()` auto-detects the slice. Otherwise one process.
`Preemption`: SIGTERM, agreed on by every process at a step boundary.
On CPU, BERT_JAX_LOCAL_DEVICES=K gives each process K devices and gloo collectives (how
tests and launch/local.sh run N processes on one machine).
"""

from __future__ import annotations

import glob
import os
import signal
import socket
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from bert_jax.errors import UserError


def _on_cloud_tpu() -> bool:
    """A TPU host (VM or GKE node): JAX reads the slice from the metadata server or the env.
    The device files are what JAX itself checks; GKE also sets TPU_WORKER_HOSTNAMES."""
    return bool(
        os.environ.get("TPU_WORKER_HOSTNAMES") or glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")
    )


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None


def initialize(cfg) -> None:
    """Call once, before anything touches a JAX device."""
    local_devices = _env_int("BERT_JAX_LOCAL_DEVICES", 0)
    if local_devices:
        jax.config.update("jax_num_cpu_devices", local_devices)
    coordinator = cfg.coordinator or os.environ.get("BERT_JAX_COORDINATOR", "")
    num = cfg.num_processes or _env_int("BERT_JAX_NUM_PROCESSES", 0)
    pid = cfg.process_id if cfg.process_id >= 0 else _env_int("BERT_JAX_PROCESS_ID", -1)
    if not coordinator:
        if num > 1:
            raise UserError(
                f"{num} processes requested but no coordinator: set "
                "--coordinator-address HOST:PORT or BERT_JAX_COORDINATOR"
            )
        if _on_cloud_tpu():
            jax.distributed.initialize()
        return
    if num < 1 or not 0 <= pid < num:
        raise UserError(
            f"distributed run with coordinator {coordinator}: need the process count "
            f"and this process's id in [0, count): got num_processes={num}, "
            f"process_id={pid}"
        )
    if ":" not in coordinator:
        raise UserError(f"coordinator address {coordinator!r}: expected HOST:PORT")
    if local_devices or jax.config.jax_platforms in (None, "", "cpu"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if pid != 0:
        # JAX aborts the whole process (a C++ fatal error) when it cannot reach the
        # coordinator; check first, so the user gets a sentence instead of a stack dump.
        _wait_for(coordinator, float(cfg.timeout_seconds), pid, num)
    else:
        print(
            f"jax.distributed: coordinating {num} processes at {coordinator}; waiting up to "
            f"{cfg.timeout_seconds}s for them to join",
            flush=True,
        )
    try:
        jax.distributed.initialize(
            coordinator, num_processes=num, process_id=pid, initialization_timeout=int(cfg.timeout_seconds)
        )
    except Exception as e:  # noqa: BLE001 - jax raises XlaRuntimeError / RuntimeError here
        raise UserError(
            f"jax.distributed could not start (coordinator {coordinator}, process "
            f"{pid} of {num}, timeout {cfg.timeout_seconds}s): "
            f"{str(e).splitlines()[0][:300]}"
        ) from None


def _wait_for(coordinator: str, timeout: float, pid: int, num: int) -> None:
    host, _, port = coordinator.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return
        except (OSError, ValueError) as e:
            if time.monotonic() >= deadline:
                raise UserError(
                    f"jax.distributed could not start (coordinator {coordinator}, process "
                    f"{pid} of {num}, timeout {timeout:g}s): no coordinator answered there "
                    f"({e}); start process 0 first, or check the address"
                ) from None
            time.sleep(0.5)


def on_lead(fn, what: str):
    """Run `fn` on process 0 while the others wait; if it raises a UserError, every process
    raises one (process 0 with its message), instead of the others waiting forever."""

    result, error = None, ""
    if jax.process_index() == 0:
        try:
            result = fn()
        except UserError as e:
            error = str(e)
            if jax.process_count() == 1:
                raise
    if jax.process_count() > 1:
        failed = int(multihost_utils.broadcast_one_to_all(np.int32(bool(error))))
        if failed:
            raise UserError(error or f"{what} failed on process 0 (its log names the cause)")
    return result


class Preemption:
    """SIGTERM sets a flag; the loop saves at the next step boundary and exits 0."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    # Processes agree through an all-gather, a host sync: only every few steps, so the loop
    # keeps dispatching ahead. Preemption notices give tens of seconds; this costs a few steps.
    CHECK_EVERY = 10

    def agreed(self, step: int) -> bool:
        """Every process must stop at the same step: agree through a tiny all-gather."""
        if jax.process_count() == 1:
            return self.requested
        if step % self.CHECK_EVERY:
            return False
        flags = multihost_utils.process_allgather(np.asarray(self.requested, np.int32))
        return bool(np.any(flags))

    def restore(self):
        signal.signal(signal.SIGTERM, self._previous)
