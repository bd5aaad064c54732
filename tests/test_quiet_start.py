"""A CPU run prints only bert_jax's own lines: TensorFlow's CUDA probing lines are filtered
at its import (bert_jax/tf_setup.py), and host malloc tuning is for CPU hosts only."""

import os
import subprocess
import sys

from bert_jax import host_malloc, tf_setup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tensorflow_starts_without_cuda_lines():
    code = (
        "from bert_jax import tf_setup; tf_setup.start()\n"
        "import tensorflow as tf\n"
        "print(int(tf.constant(1) + 1), tf.config.get_visible_devices('GPU'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2 []"
    for noise in ("cuInit", "cudart_stub", "absl::InitializeLog", "E0000", "I0000"):
        assert noise not in out.stderr, out.stderr


def test_tensorflow_starts_without_keras_and_keras_stays_importable():
    code = (
        "import sys\n"
        "from bert_jax import tf_setup; tf_setup.start()\n"
        "assert 'keras' not in sys.modules and 'sklearn' not in sys.modules, 'keras loaded'\n"
        "import tensorflow as tf\n"
        "print([int(x) for x in tf.data.Dataset.range(3).map(lambda x: x * 2)])\n"
        "import tensorflow_text\n"  # needs tf.keras: the lazy loader imports Keras now
        "print(tf.keras.layers.Dense.__name__, 'keras' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[0, 2, 4]", "Dense True"]


def test_noise_filter_keeps_other_lines():
    seen = [
        "I0000 00:00:1 123 cudart_stub.cc:31] Could not find cuda drivers on your machine",
        "E0000 00:00:1 123 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    ]
    assert all(tf_setup.NOISE.search(line) for line in seen)
    assert not tf_setup.NOISE.search("E0000 ... dataset.cc:12] Failed to open gs://b/x: NOT_FOUND")


def test_malloc_tuning_only_for_cpu(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    assert not host_malloc.runs_on_cpu()
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert host_malloc.runs_on_cpu()
    monkeypatch.delenv("JAX_PLATFORMS")
    assert host_malloc.runs_on_cpu()  # this machine: jax without accelerator plugins
