"""Every tokenizer the BERT family needs, behind one interface.

This package owns turning text into subword ids: reading a checkpoint's vocabulary files, the
exact pipelines of Hugging Face's tokenizers (so ids match `transformers` v5), the pair template
of each family, the word-start table that whole-word masking needs, and a fingerprint of the
vocabulary that the data pipeline stores with what it writes.

Public API:

    tok = load_tokenizer(path)           # a directory or file; see `load_tokenizer`
    tok.encode_batch_ids(texts) -> list[list[int]]     # subword ids: no special tokens, no truncation
    tok.encode_ids(text) -> list[int]
    tok.tokenize(text) -> list[str]
    tok.build_pair(a_ids, b_ids=None) -> (ids, segment_ids)            # the family's template
    tok.encode_batch(texts, max_length) -> (ids, mask, n_truncated)    # int32 [n, max_length]
    tok.word_start_table() -> bool [vocab_size]
    tok.vocab_fingerprint() -> str       # SHA-256 hex
    tok.tf_tokenize(strings) -> tf.RaggedTensor       # WordPiece only: inside a tf.data map
    tok.kind, tok.family_tokens, tok.vocab_size, tok.special_ids,
    tok.cls_id, tok.sep_id, tok.pad_id, tok.mask_id, tok.unk_id

The implementations, one module each, and the `transformers` v5 class each one reproduces id
for id:

    WordPieceTokenizer      Rust `tokenizers`; TensorFlow ops too         BertTokenizer(Fast)
    SentencePieceTokenizer  `sentencepiece` + ALBERT's pre-normalization  AlbertTokenizer (unigram);
                            (unigram or BPE models)                       sentencepiece itself (BPE)
    ByteLevelBPETokenizer   Rust `tokenizers`, vocab.json + merges.txt    RobertaTokenizer(Fast)

Batch encoding runs in Rust or C++ on all cores (rayon / sentencepiece's thread pool).

As in Hugging Face, a special token written literally in the text (e.g. "[MASK]") is kept as
that special token rather than split into "[", "mask", "]".
"""

from bert_jax.data.tokenizers.base import BERT_TEMPLATE, ROBERTA_TEMPLATE, Tokenizer
from bert_jax.data.tokenizers.byte_bpe import BYTE_DECODER, ByteLevelBPETokenizer
from bert_jax.data.tokenizers.loading import load_tokenizer
from bert_jax.data.tokenizers.sentencepiece import SentencePieceTokenizer, sentencepiece_prenormalizer
from bert_jax.data.tokenizers.wordpiece import WordPieceTokenizer

__all__ = [
    "BERT_TEMPLATE",
    "BYTE_DECODER",
    "ROBERTA_TEMPLATE",
    "ByteLevelBPETokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "WordPieceTokenizer",
    "load_tokenizer",
    "sentencepiece_prenormalizer",
]
