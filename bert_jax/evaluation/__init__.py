"""Scoring fine-tuned models, in plain NumPy and the standard library.

metrics: classification and regression scores (accuracy, F1, macro F1, MCC, Pearson,
Spearman), `score` by name, and `summarize` over fine-tuning seeds, each computed as
scikit-learn / SciPy compute it. squad: the official SQuAD v1.1 / v2.0 evaluation rules and
BERT's n-best span search over one window. ner: entity-level precision / recall / F1 as
seqeval's default (conlleval) mode computes them.
"""
