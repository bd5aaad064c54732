"""Every test runs on 8 fake CPU devices (STYLE rule 9). This must happen before any test
module touches a JAX device; conftest.py is imported before test modules are collected."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# gcsfs probes a bucket's type over gRPC first (tests/gcs_emulator.py); read at import.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
