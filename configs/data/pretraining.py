"""Data preparation for pretraining: corpus, tokenizer, example format, rows.

Run (offline, on the embedded default corpus, training an 8k WordPiece vocabulary first):
    bert-jax prepare-data --config configs/data/pretraining.py:nsp --output data/bert
The argument is the example format (bert_jax/data/prepare.py): `nsp` (BERT), `sop` (ALBERT),
`full_sentences` (RoBERTa), `electra`; a family name (`bert`, `albert`, `roberta`,
`electra`) means the format it was pretrained on.
A real corpus, with an existing vocabulary:
    bert-jax prepare-data --config configs/data/pretraining.py:nsp --output data/wiki \
        --config.corpus.source=tfds --config.corpus.tfds_name=wikipedia/20230601.en \
        --config.tokenizer=/path/to/bert-base-uncased
"""

import ml_collections

from bert_jax import config_files


def get_config(example_format: str = "nsp") -> ml_collections.ConfigDict:
    return config_files.data_config(example_format)
