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
