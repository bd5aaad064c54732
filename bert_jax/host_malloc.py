"""Keep XLA:CPU's per-step buffers in the heap instead of fresh pages every step.

XLA on CPU allocates each step's temporaries (activations, stacked residuals, gradients)
with malloc and frees them at the end of the step. glibc serves blocks over its mmap
threshold (128 KiB, rising to at most 32 MiB) with mmap and returns them to the kernel on
free, and its per-thread arenas cannot hold blocks larger than their 64 MiB heaps either;
so every step page-faults its temporaries in again: ~150k minor faults and ~250 ms of
kernel time per BERT-Mini step (S=128, B=32) on a 2-core machine, 12% of the step.

`tune()` raises the mmap threshold, disables trimming below 2 GiB of free heap, and keeps
one malloc arena, so the same memory serves every step. All three are needed; any one
alone leaves the faults. The CLI calls it first (before JAX starts its threads); a library
user can call it before importing JAX, or set the same through the environment:
GLIBC_TUNABLES=glibc.malloc.mmap_threshold=2147483647:glibc.malloc.trim_threshold=2147483647:glibc.malloc.arena_max=1
Set BERT_JAX_HOST_MALLOC=default to leave malloc alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_LIMIT = 2**31 - 1  # mallopt takes an int
_applied = False  # tune() took effect in this process


def runs_on_cpu() -> bool:
    """Whether JAX will compute on the host CPU, decided without starting JAX: JAX_PLATFORMS
    says so, or no accelerator plugin (CUDA, ROCm, TPU) is installed. The malloc settings
    are for XLA:CPU's buffers; on an accelerator host they only cost memory."""
    import importlib.util

    platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return platforms.split(",")[0] == "cpu"
    plugins = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")
    return not any(importlib.util.find_spec(p) is not None for p in plugins)


def tune() -> bool:
    """Apply the settings above on Linux/glibc; True if they were applied."""
    if os.environ.get("BERT_JAX_HOST_MALLOC", "").lower() == "default":
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    global _applied
    _applied = all(
        mallopt(param, value) == 1
        for param, value in ((_M_MMAP_THRESHOLD, _LIMIT), (_M_TRIM_THRESHOLD, _LIMIT), (_M_ARENA_MAX, 1))
    )
    return _applied


def trim() -> bool:
    """Give the heap's free pages back to the kernel (glibc's malloc_trim(0)); True if any
    were. Under glibc's default settings XLA's compiler and a checkpoint's host copies leave
    hundreds of MB free but mapped in malloc's arenas, counted in the process's RSS until
    something reuses them. A no-op where the tuning above keeps the heap on purpose, and off
    glibc."""
    if not sys.platform.startswith("linux") or _applied:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        malloc_trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim.argtypes, malloc_trim.restype = (ctypes.c_size_t,), ctypes.c_int
    return malloc_trim(0) == 1
