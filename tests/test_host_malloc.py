"""bert_jax.host_malloc: the CLI's glibc settings stop XLA:CPU's temporaries from being
page-faulted in again on every call (measured as minor page faults, not time)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A jitted function with a 64 MiB temporary (cumsum) and output, called 10 times.
PROBE = """
import resource, sys
from bert_jax import host_malloc
applied = host_malloc.tune()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: (jnp.cumsum(x * 2.0) * 3).sum())
x = jnp.ones((16 * 2**20,), jnp.float32)
f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    f(x).block_until_ready()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def probe(setting: str) -> tuple[bool, int]:
    env = {
        **os.environ,
        "BERT_JAX_HOST_MALLOC": setting,
        "PYTHONPATH": ROOT,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
    }
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_tuned_malloc_stops_per_call_page_faults():
    applied, tuned = probe("tuned")
    skipped, default = probe("default")
    assert applied and not skipped
    # Untuned, every call faults its 64 MiB temporaries in again (~490k faults for 10 calls
    # here); tuned, the heap keeps them (16k-180k seen, from the output buffers).
    assert default > 10 * 16 * 2**20 // 4096, default
    assert tuned < default / 2, (tuned, default)


CLI_PROBE = """
import contextlib, io, sys
from bert_jax import cli, host_malloc
calls = []
host_malloc.tune = lambda: calls.append("jax" in sys.modules)
with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):
    cli.main([sys.argv[1], "--help"])
print(calls)
"""


@pytest.mark.parametrize("command,want", [("bench", "[False]"), ("pretrain", "[False]"), ("finetune", "[]")])
def test_cli_tunes_before_jax_starts(command, want):
    """Tuned once, before anything imported JAX; fine-tuning keeps glibc's defaults."""
    out = subprocess.run(
        [sys.executable, "-c", CLI_PROBE, command],
        env={**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == want


# 2,000 blocks of 64 KiB (under glibc's mmap threshold: heap memory) freed, all but the last
# (which pins the heap's top, so free() alone cannot shrink it); RSS in MiB around trim().
TRIM_PROBE = """
import ctypes, sys
from bert_jax import host_malloc
if sys.argv[1] == "tuned":
    host_malloc.tune()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024
blocks = [libc.malloc(64 * 1024) for _ in range(2000)]
for b in blocks:
    ctypes.memset(b, 1, 64 * 1024)
for b in blocks[:-1]:
    libc.free(b)
before = rss()
trimmed = host_malloc.trim()
print(trimmed, before, rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
@pytest.mark.parametrize("setting", ["default", "tuned"])
def test_trim_gives_free_heap_back_unless_tuned(setting):
    """Fine-tuning (glibc defaults) trims after compiling and after each evaluation and save;
    under the tuning the heap is kept on purpose and trim() leaves it."""
    env = {**os.environ, "PYTHONPATH": ROOT, "BERT_JAX_HOST_MALLOC": ""}
    out = subprocess.run(
        [sys.executable, "-c", TRIM_PROBE, setting], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    trimmed, before, after = out[0] == "True", int(out[1]), int(out[2])
    if setting == "default":
        assert trimmed and after < before - 100, (before, after)  # ~125 MiB were free in the heap
    else:
        assert not trimmed and after > before - 10, (before, after)
