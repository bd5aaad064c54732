"""Data preparation for pretraining: corpus, tokenizer, objective, rows.

Run (offline, on the embedded default corpus, training an 8k WordPiece vocabulary first):
    bert-jax prepare-data --config configs/data/pretraining.py:bert --output data/bert
Other families: `:roberta` (full sentences), `:albert` (sentence order), `:electra`.
A real corpus, with an existing vocabulary:
    bert-jax prepare-data --config configs/data/pretraining.py:bert --output data/wiki \
        --config.corpus.source=tfds --config.corpus.tfds_name=wikipedia/20230601.en \
        --config.tokenizer=/path/to/bert-base-uncased
"""

import ml_collections

# The example format each family was pretrained on.
OBJECTIVES = {"bert": "nsp", "roberta": "full_sentences", "albert": "sop", "electra": "electra"}
# The vocabulary trained when no tokenizer is given: the family's own kind.
TOKENIZER_KINDS = {"bert": "wordpiece", "roberta": "byte_bpe", "albert": "unigram", "electra": "wordpiece"}


def get_config(family: str = "bert") -> ml_collections.ConfigDict:
    if family not in OBJECTIVES:
        raise ValueError(f"configs/data/pretraining.py:{family}: choose one of {', '.join(OBJECTIVES)}")
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
    c.train_tokenizer.model_type = TOKENIZER_KINDS[family]
    c.train_tokenizer.vocab_size = 8192
    c.train_tokenizer.lowercase = family != "roberta"  # RoBERTa's byte-level BPE is cased
    # nsp | sop | full_sentences | electra (see bert_jax/data/prepare.py).
    c.objective = OBJECTIVES[family]
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
