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

# The example formats, each with the vocabulary trained when no tokenizer is given (the kind
# of the family that was pretrained on it) and whether that vocabulary is lowercased.
FORMATS = {
    "nsp": ("wordpiece", True),
    "sop": ("unigram", True),
    "full_sentences": ("byte_bpe", False),  # RoBERTa's byte-level BPE is cased
    "electra": ("wordpiece", True),
}
# The format each family was pretrained on.
FAMILY_FORMATS = {"bert": "nsp", "albert": "sop", "roberta": "full_sentences", "electra": "electra"}


def get_config(example_format: str = "nsp") -> ml_collections.ConfigDict:
    example_format = FAMILY_FORMATS.get(example_format, example_format)
    if example_format not in FORMATS:
        raise ValueError(
            f"configs/data/pretraining.py:{example_format}: choose an example format "
            f"({', '.join(FORMATS)}) or a family ({', '.join(FAMILY_FORMATS)})"
        )
    tokenizer_kind, lowercase = FORMATS[example_format]
    c = ml_collections.ConfigDict()
    c.corpus = ml_collections.ConfigDict()
    # Where text comes from: "default" (embedded, offline), "tfds" or "files".
    c.corpus.source = "default"
    # TFDS dataset name (with config/version), its split and the text feature to read.
    c.corpus.tfds_name = "wikipedia/20230601.en"
    c.corpus.split = "train"
    c.corpus.text_feature = "text"
    # TFDS data_dir ("" = TFDS's default, ~/tensorflow_datasets).
    c.corpus.tfds_data_dir = ""
    # Local files: comma-separated globs, and their format: "sentences" (one sentence a
    # line, blank line between documents, as google-research/bert) or "documents" (one a line).
    c.corpus.files = ""
    c.corpus.format = "sentences"
    # Longer lines are cut here (and counted), so one enormous line cannot exhaust memory.
    c.corpus.max_line_chars = 1_000_000
    # Tokenizer directory or file (vocab.txt, spiece.model, vocab.json + merges.txt).
    # Empty: train one on the corpus first, into OUTPUT/tokenizer, as below.
    c.tokenizer = ""
    c.train_tokenizer = ml_collections.ConfigDict()
    c.train_tokenizer.model_type = tokenizer_kind
    c.train_tokenizer.vocab_size = 8192
    c.train_tokenizer.lowercase = lowercase
    # nsp | sop | full_sentences | electra (see bert_jax/data/prepare.py).
    c.objective = example_format
    # Tokens per row, special tokens included.
    c.max_seq_length = 128
    # Probability that an example targets a random shorter length (BERT: 0.1).
    c.short_seq_prob = 0.1
    # Pack several short examples into one row (full_sentences / electra only).
    c.pack = False
    # Seed of every random choice of the preparation (not of the masking: that is online).
    c.seed = 12345
    # Documents per unit of work; NSP draws its random segments within a chunk.
    c.docs_per_chunk = 256
    # Rows per ArrayRecord shard.
    c.rows_per_shard = 100_000
    # Worker processes (0 = one per core). The output does not depend on it.
    c.num_workers = 0
    return c
