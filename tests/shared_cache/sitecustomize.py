"""Test-only: the processes of a multi-process test run share compiled programs.

conftest.py puts this directory on PYTHONPATH, so every Python process the tests start runs
this at start-up. It only installs an import hook; JAX is patched when it is first imported.

The tests share one persistent XLA compilation cache (conftest.py). On CPU, JAX's cache key
includes the topology's fingerprint, and a CPU topology's fingerprint differs per process, so
in a 2-process run process 1 never found process 0's entries (and JAX writes entries from
process 0 only): every start of process 1 compiled each program again, about 20 s of CPU per
2-process start. Here, for CPU devices only, the key hashes the device kinds and global ids
instead: the program compiled for the same global devices, with the same HLO and options, is
then found by both processes. Pods (TPU, GPU) are untouched; JAX's own GPU keys already drop
the process-dependent part. Results are compared with 1-process runs by the tests themselves,
so an executable that did not fit would fail them rather than pass silently. Process 1 also
writes its own entries (_patch_compiler).

If a JAX upgrade moves these internals, the hook says so once on stderr and patches nothing:
the tests stay correct, only slower.
"""

import importlib.abc
import importlib.machinery
import sys


def _patch_cache_key(module):
    original = getattr(module, "_hash_accelerator_config", None)
    hash_string = getattr(module, "_hash_string", None)
    if original is None or hash_string is None:
        print("tests/shared_cache: jax._src.cache_key changed; CPU keys left per process", file=sys.stderr)
        return

    def hash_accelerator_config(hash_obj, accelerators):
        devices = list(accelerators.flat)
        if devices and all(d.platform == "cpu" for d in devices):
            for d in devices:
                hash_string(hash_obj, f"{d.device_kind}:{d.id}")
            return
        original(hash_obj, accelerators)

    module._hash_accelerator_config = hash_accelerator_config


def _patch_compiler(module):
    """Process 1 writes its CPU entries too (JAX writes from process 0 only, to spare shared
    file systems; ours is a local directory): its own programs, such as a checkpoint's
    fingerprint over its local devices, are compiled once per test run, not once per start."""
    original = getattr(module, "_cache_write", None)
    put = getattr(getattr(module, "compilation_cache", None), "put_executable_and_time", None)
    if original is None or put is None:
        print("tests/shared_cache: jax._src.compiler changed; process 0 writes alone", file=sys.stderr)
        return

    def cache_write(cache_key, compile_time_secs, module_name, backend, executable, host_callbacks):
        args = (cache_key, compile_time_secs, module_name, backend, executable, host_callbacks)
        if module.distributed.global_state.process_id == 0 or host_callbacks or backend.platform != "cpu":
            return original(*args)
        if compile_time_secs >= module.config.persistent_cache_min_compile_time_secs.value:
            put(cache_key, module_name, executable, backend, int(compile_time_secs))

    module._cache_write = cache_write


_PATCHES = {"jax._src.cache_key": _patch_cache_key, "jax._src.compiler": _patch_compiler}


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in _PATCHES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _PATCHES[name](module)

        spec.loader.exec_module = exec_and_patch
        return spec


sys.meta_path.insert(0, _PatchAfterImport())
