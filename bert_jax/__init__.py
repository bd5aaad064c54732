"""bert_jax: BERT, RoBERTa, ALBERT and ELECTRA in JAX/Flax NNX."""

import os as _os

__version__ = "0.1.0"

# Cloud paths go through etils.epath (ours and Orbax's) over gcsfs, not TensorFlow's GCS client:
# set before anything imports epath. See bert_jax/storage.py.
_os.environ.setdefault("EPATH_USE_TF", "false")
# Hosts see each other's files: no per-process cache of cloud directory listings.
_os.environ.setdefault("FSSPEC_GCS_USE_LISTINGS_CACHE", "false")
