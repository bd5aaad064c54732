"""bert_jax: BERT, RoBERTa, ALBERT and ELECTRA in JAX/Flax NNX."""

__version__ = "0.1.0"
