"""TensorFlow is for input only (tf.data, TFDS, tf.summary): import it once, quietly, with
every accelerator hidden from it, before JAX or the data pipeline touch it.

A CUDA build of TensorFlow probes for GPUs when it is imported and when it first lists
devices, and prints what it finds through absl before its log level applies: on a machine
with CUDA libraries but no GPU that is `cudart_stub ... Could not find cuda drivers` (twice)
and `E0000 ... failed call to cuInit: ... UNKNOWN ERROR (303)`. None of it concerns bert_jax
(JAX owns the accelerators), so those lines are filtered; anything else TensorFlow prints
while starting is passed through.

Keras is kept out of that import. `import tensorflow` eagerly imports Keras 3 (and, through
its scikit-learn wrappers, scikit-learn): about 4 of the 9 seconds TensorFlow takes to import
on a 2-core CPU, paid by every pretraining process, for a library bert_jax never calls.
TensorFlow treats a Keras that cannot be imported as absent (its import is in a try); `tf.keras`
stays a lazy loader, so code that does use it later (tensorflow_text does) still imports Keras
then. A process that imported Keras before TensorFlow keeps it.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

NOISE = re.compile(
    r"cudart_stub\.cc|cuda_platform\.cc|cuda_executor\.cc|cuda_diagnostics|cuda_dnn\.cc|cuda_fft\.cc|"
    r"cuda_blas\.cc|All log messages before absl::InitializeLog\(\) is called|"
    r"Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered|"
    r"This TensorFlow binary is optimized to use available CPU instructions|"
    r"rebuild TensorFlow with the appropriate compiler flags|TF-TRT Warning|"
    r"oneDNN custom operations are on"
)


def start() -> None:
    """Import TensorFlow with its accelerator probing lines filtered and its devices hidden."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # On AVX-512 CPUs TensorFlow turns on its oneDNN kernels and says so (an I0000 line at
    # import and another at its first op). bert_jax's TensorFlow work is input only (string,
    # integer and gather ops), which oneDNN does not speed up: off, and quiet.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        keep_keras_out = "keras" not in sys.modules
        if keep_keras_out:
            sys.modules["keras"] = None  # `import keras` raises ImportError while set
        try:
            try:
                import tensorflow as tf
            finally:
                if keep_keras_out:
                    del sys.modules["keras"]

            for kind in ("GPU", "TPU"):
                try:
                    tf.config.set_visible_devices([], kind)
                except (RuntimeError, ValueError):  # already initialised, or no such kind
                    pass
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        text = captured.read().decode("utf-8", "replace")
    kept = [line for line in text.splitlines() if line.strip() and not NOISE.search(line)]
    if kept:
        print("\n".join(kept), file=sys.stderr)
