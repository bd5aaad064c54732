"""Every test runs on 8 fake CPU devices (STYLE rule 9). This must happen before any test
module touches a JAX device; conftest.py is imported before test modules are collected."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# gcsfs probes a bucket's type over gRPC first (tests/gcs_emulator.py); read at import.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

# One persistent XLA compilation cache for the run (in-process tests and the CLI processes
# they start): a program compiled once, e.g. the tiny model's train step that a resumed or
# second process compiles again, is read back instead of compiled. The same executable, so
# results are unchanged. A directory set by the caller is kept; ours is removed at exit.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="bert-jax-tests-xla-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

# The processes of a multi-process test run read and write each other's CPU entries in that
# cache (a CPU key differs per process otherwise): tests/shared_cache/sitecustomize.py.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (os.path.join(os.path.dirname(__file__), "shared_cache"), os.environ.get("PYTHONPATH")) if p
)

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)


# The longest test files start first, so the two workers (pyproject.toml: -n 2 --dist
# loadfile) finish together rather than one waiting on a long file started last.
LONGEST_FIRST = (
    "test_pretrain.py",
    "test_gcs.py",
    "test_finetune.py",
    "test_export.py",
    "test_preset_parity.py",
    "test_encode.py",
)


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a file is kept
