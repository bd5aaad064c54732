"""Every tokenizer the BERT family needs, behind one interface.

This module owns turning text into subword ids: reading a checkpoint's vocabulary files, the
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

The implementations, and the `transformers` v5 class each one reproduces id for id:

    WordPieceTokenizer      pure Python (stdlib + numpy), the reference   BertTokenizer(Fast)
    FastWordPieceTokenizer  the same pipeline in Rust `tokenizers`        BertTokenizer(Fast)
    SentencePieceTokenizer  `sentencepiece` + ALBERT's pre-normalization  AlbertTokenizer (unigram);
                            (unigram or BPE models)                       sentencepiece itself (BPE)
    ByteLevelBPETokenizer   Rust `tokenizers`, vocab.json + merges.txt    RobertaTokenizer(Fast)

Batch encoding runs in Rust or C++ on all cores (rayon / sentencepiece's thread pool).

As in Hugging Face, a special token written literally in the text (e.g. "[MASK]") is kept as
that special token rather than split into "[", "mask", "]".

Parity notes (pure-Python WordPiece). The Rust side classifies characters with the
`unicode_categories` crate, whose tables are Unicode 8.0, decomposes with Unicode 9.0-era NFD
tables and lowercases with Rust's std (Unicode 16.0), while Python's `unicodedata` is Unicode 14.0
on Python 3.11. The tables at the end of this file list every code point where they disagree;
tests/test_tokenizers.py re-checks all code points against `tokenizers`, so an upgrade that shifts
them fails loudly.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import sentencepiece as spm
import tokenizers
from tokenizers import AddedToken, normalizers, pre_tokenizers
from tokenizers import models as tk_models

from bert_jax.errors import UserError

# Rust's `char::is_whitespace` minus \x0b, \x0c and \x85: those are control characters,
# which clean_text deletes before it maps whitespace to " ", so they never split words.
_WHITESPACE_CHARS = "\t\n\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_WHITESPACE = re.compile(f"[{_WHITESPACE_CHARS}]+")
# All of Rust's `char::is_whitespace` (Unicode White_Space), where HF's WhitespaceSplit splits.
_RUST_WHITESPACE_CHARS = _WHITESPACE_CHARS + "\x0b\x0c\x85"

# WordPiece gives up on longer words (HF `max_input_chars_per_word`).
_MAX_WORD_CHARS = 100
_CONTINUATION = "##"

# Words seen so far are cached; the cap keeps memory bounded on an open-ended corpus.
_CACHE_LIMIT = 1 << 18

# `tokenizers`' BertNormalizer ranges; note 0x2B920, not the 0x2B820 of Google's BERT code.
_CHINESE_RANGES = (
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B81F),
    (0x2B920, 0x2CEAF),
    (0x2F800, 0x2FA1F),
)

# Order of the special-token attributes: (unk, cls, sep, pad, mask).
_SPECIAL_KEYS = ("unk_token", "cls_token", "sep_token", "pad_token", "mask_token")

# SentencePiece marks a word's start with U+2581; byte-level BPE writes the space byte as "Ġ".
_SP_SPACE = "\u2581"
_BYTE_SPACE = "\u0120"

# The two pair templates of the family (`Tokenizer.family_tokens`).
BERT_TEMPLATE = "bert"  # [CLS] A [SEP] B [SEP], segments 0 ... 0 1 ... 1 (BERT, ALBERT, ELECTRA)
ROBERTA_TEMPLATE = "roberta"  # <s> A </s></s> B </s>, all segments 0 (RoBERTa)


class Tokenizer(abc.ABC):
    """What the data pipeline needs from any tokenizer of the BERT family.

    Subclasses set `kind`, `family_tokens`, the five special ids and `_tokens` (token string of
    each id, "" for an id no token maps to) and implement `encode_batch_ids`.
    """

    kind: str  # "wordpiece" | "sentencepiece" | "byte_bpe"
    family_tokens: str  # BERT_TEMPLATE or ROBERTA_TEMPLATE
    unk_id: int
    cls_id: int
    sep_id: int
    pad_id: int
    mask_id: int
    _tokens: list[str]

    @abc.abstractmethod
    def encode_batch_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Subword ids of each text: no special tokens added, no truncation."""

    @abc.abstractmethod
    def _fingerprint_payload(self) -> dict:
        """Everything that decides the ids, as JSON-able data (see `vocab_fingerprint`)."""

    @abc.abstractmethod
    def _is_word_start(self, token_id: int) -> bool:
        """Whether the token begins a word (special tokens aside, which always do)."""

    @property
    def vocab_size(self) -> int:
        """Number of ids: the embedding table's row count."""
        return len(self._tokens)

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids of the special tokens ([CLS], [SEP], [PAD], [MASK], [UNK] or their equivalents)."""
        return frozenset((self.unk_id, self.cls_id, self.sep_id, self.pad_id, self.mask_id))

    def encode_ids(self, text: str) -> list[int]:
        """Subword ids of one text (no special tokens, no truncation)."""
        return self.encode_batch_ids([text])[0]

    def id_to_token(self, token_id: int) -> str:
        return self._tokens[token_id]

    def tokenize(self, text: str) -> list[str]:
        """Subword strings of `text`, without special tokens added."""
        return [self._tokens[i] for i in self.encode_ids(text)]

    def build_pair(
        self, a_ids: Sequence[int], b_ids: Sequence[int] | None = None
    ) -> tuple[list[int], list[int]]:
        """`(ids, segment_ids)` of one or two id sequences framed by the family's template.

        BERT / ALBERT / ELECTRA: `[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]`, segments 0 up to and
        including the first [SEP], then 1. RoBERTa: `<s> A </s>` or `<s> A </s></s> B </s>`, all
        segments 0. The same as `transformers`' `tokenizer(a, b)`.
        """
        a_ids = list(a_ids)
        ids = [self.cls_id, *a_ids, self.sep_id]
        if b_ids is None:
            return ids, [0] * len(ids)
        b_ids = list(b_ids)
        if self.family_tokens == ROBERTA_TEMPLATE:
            ids += [self.sep_id, *b_ids, self.sep_id]
            return ids, [0] * len(ids)
        n_a = len(ids)
        ids += [*b_ids, self.sep_id]
        return ids, [0] * n_a + [1] * (len(b_ids) + 1)

    def encode_batch(self, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Frame each text with the single-sequence template, truncate and right-pad.

        Returns `(ids, mask, n_truncated)`: int32 arrays of shape [len(texts), max_length],
        `ids` padded with the pad id and `mask` 1 on real tokens; `n_truncated` counts the texts
        whose content was cut (the closing [SEP] / </s> is always kept).
        """
        _check_max_length(max_length)
        ids = np.full((len(texts), max_length), self.pad_id, dtype=np.int32)
        mask = np.zeros((len(texts), max_length), dtype=np.int32)
        n_truncated = 0
        for row, content in enumerate(self.encode_batch_ids(texts)):
            n_truncated += len(content) > max_length - 2
            seq = [self.cls_id, *content[: max_length - 2], self.sep_id]
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        return ids, mask, n_truncated

    def word_start_table(self) -> np.ndarray:
        """bool [vocab_size]: True where a token begins a new word, for whole-word masking.

        Special tokens and standalone punctuation count as words of their own. The table is per
        token, so a text's very first token is a start whatever the table says (a byte-level BPE
        text starts without "Ġ").
        """
        table = np.fromiter(
            (self._is_word_start(i) for i in range(self.vocab_size)), dtype=bool, count=self.vocab_size
        )
        table[sorted(self.special_ids)] = True
        return table

    def vocab_fingerprint(self) -> str:
        """SHA-256 hex of the vocabulary and every option that changes the ids; stable across
        runs, machines and the implementation (pure-Python and Rust WordPiece agree)."""
        payload = json.dumps(
            self._fingerprint_payload(), sort_keys=True, ensure_ascii=False, separators=(",", ":")
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def tf_tokenize(self, strings):
        """Ids as a `tf.RaggedTensor`, inside a tf.data map (WordPiece only)."""
        raise UserError(
            f"tf_tokenize is only available for WordPiece vocabularies, not {self.kind}: "
            f"tokenize offline with encode_batch_ids (prepare-data) instead"
        )


# ---------------------------------------------------------------------------------------------
# WordPiece (BERT, ELECTRA)


class WordPieceTokenizer(Tokenizer):
    """BERT tokenizer: BertNormalizer, BertPreTokenizer and WordPiece, as HF's Rust code does,
    in pure Python. The reference for `FastWordPieceTokenizer` and the fallback without Rust.

    `vocab` is the list of tokens in id order (line i of vocab.txt has id i). A token listed
    twice maps to its last id, as in HF. `source` names the vocab in error messages.
    """

    kind = "wordpiece"
    family_tokens = BERT_TEMPLATE

    def __init__(
        self,
        vocab: Sequence[str],
        *,
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        unk_token: str = "[UNK]",
        cls_token: str = "[CLS]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        mask_token: str = "[MASK]",
        source: str = "vocab",
    ):
        self._tokens = list(vocab)
        self._vocab = {token: i for i, token in enumerate(self._tokens)}
        self._special_tokens = (unk_token, cls_token, sep_token, pad_token, mask_token)
        # An empty name would match everywhere when special tokens are split out of the text.
        missing = [repr(t) for t in self._special_tokens if not t or t not in self._vocab]
        if missing:
            raise UserError(f"{source} lacks special token(s) {', '.join(missing)}")
        self.unk_id, self.cls_id, self.sep_id, self.pad_id, self.mask_id = (
            self._vocab[token] for token in self._special_tokens
        )
        self.do_lower_case = do_lower_case
        self.tokenize_chinese_chars = tokenize_chinese_chars
        # BERT's convention: unset strip_accents follows lowercasing.
        self.strip_accents = do_lower_case if strip_accents is None else strip_accents
        self._special_split = _special_pattern(self._special_tokens)
        self._max_piece_chars = max(map(len, self._vocab))
        self._word_cache: dict[str, tuple[int, ...]] = {}
        self._tf_fn = None

    @classmethod
    def from_dir(cls, path: str | Path):
        """Load `vocab.txt` and, if present, `tokenizer_config.json` from a checkpoint dir.

        Raises UserError naming the file when vocab.txt is missing or unreadable, the config is
        malformed, or the vocab lacks one of the special tokens the config names.
        """
        return cls.from_vocab_file(Path(path) / "vocab.txt")

    @classmethod
    def from_vocab_file(cls, vocab_path: str | Path):
        """Load a vocab.txt, with the tokenizer_config.json next to it if there is one."""
        vocab_path = Path(vocab_path)
        try:
            # Text mode + rstrip("\n") is exactly HF's `load_vocab`: other trailing
            # whitespace is part of the token.
            with open(vocab_path, encoding="utf-8") as f:
                vocab = [line.rstrip("\n") for line in f]
        except FileNotFoundError:
            raise UserError(f"{vocab_path}: no such file (a BERT vocab.txt is required)") from None
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{vocab_path}: cannot read as UTF-8 text: {e}") from None
        options = _read_config(vocab_path.parent / "tokenizer_config.json")
        return cls(vocab, **options, source=str(vocab_path))

    @classmethod
    def from_tokenizer_json(cls, json_path: str | Path):
        """Load a `tokenizers` tokenizer.json whose model is WordPiece with BERT's normalizer and
        pre-tokenizer; special-token names come from a tokenizer_config.json next to it."""
        json_path = Path(json_path)
        spec = _read_json(json_path)
        model, normalizer = spec.get("model") or {}, spec.get("normalizer") or {}
        if model.get("type") != "WordPiece" or model.get("continuing_subword_prefix", "##") != "##":
            raise UserError(f"{json_path}: expected a WordPiece model with '##' continuations")
        if normalizer.get("type") != "BertNormalizer" or not normalizer.get("clean_text", True):
            raise UserError(
                f"{json_path}: normalizer must be BertNormalizer with clean_text, got "
                f"{normalizer.get('type')!r}"
            )
        if (spec.get("pre_tokenizer") or {}).get("type") != "BertPreTokenizer":
            raise UserError(f"{json_path}: pre_tokenizer must be BertPreTokenizer")
        if model.get("max_input_chars_per_word", _MAX_WORD_CHARS) != _MAX_WORD_CHARS:
            raise UserError(f"{json_path}: max_input_chars_per_word must be {_MAX_WORD_CHARS}")
        tokens = _tokens_by_id(model.get("vocab") or {}, spec.get("added_tokens") or [], json_path)
        options = _read_config(json_path.parent / "tokenizer_config.json")
        # The tokenizer.json itself decides normalization; the config only names special tokens.
        options.update(
            do_lower_case=bool(normalizer.get("lowercase", True)),
            strip_accents=normalizer.get("strip_accents"),
            tokenize_chinese_chars=bool(normalizer.get("handle_chinese_chars", True)),
        )
        options.setdefault("unk_token", model.get("unk_token", "[UNK]"))
        return cls(tokens, **options, source=str(json_path))

    def encode_batch_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [self._content_ids(text) for text in texts]

    def normalize(self, text: str) -> str:
        """HF's BertNormalizer: clean text, pad CJK, strip accents, lowercase, in that order."""
        if text.isascii() and text.isprintable():
            # Nothing to clean, pad or strip; ASCII lowercasing is the same in Rust and Python.
            return text.lower() if self.do_lower_case else text
        text = "".join(map(_clean_char, text))
        if self.tokenize_chinese_chars:
            text = "".join(map(_pad_chinese_char, text))
        if self.strip_accents:
            text = "".join(c for c in _nfd(text) if not _is_nonspacing_mark(c))
        if self.do_lower_case:
            text = "".join(map(_lower_char, text))
        return text

    @staticmethod
    def pre_tokenize(normalized: str) -> list[str]:
        """HF's BertPreTokenizer on normalized text: split on spaces, isolate punctuation."""
        words = []
        for chunk in _WHITESPACE.split(normalized):
            start = 0
            for i, c in enumerate(chunk):
                if _is_punctuation(c):
                    if start < i:
                        words.append(chunk[start:i])
                    words.append(c)
                    start = i + 1
            if start < len(chunk):
                words.append(chunk[start:])
        return words

    def tokenize(self, text: str) -> list[str]:
        """Wordpiece strings of `text`, without [CLS]/[SEP] (special tokens written in the text
        are kept as such)."""
        return [self._tokens[i] for i in self._content_ids(text)]

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """`[CLS] ids [SEP]`, truncated to at most `max_length` ids (the [SEP] is kept)."""
        return self.encode_with_info(text, max_length)[0]

    def encode_with_info(self, text: str, max_length: int | None = None) -> tuple[list[int], bool]:
        """Like `encode`, plus whether content was cut to fit `max_length`."""
        ids = self._content_ids(text)
        truncated = False
        if max_length is not None:
            _check_max_length(max_length)
            truncated = len(ids) > max_length - 2
            ids = ids[: max_length - 2]
        return [self.cls_id, *ids, self.sep_id], truncated

    def _is_word_start(self, token_id: int) -> bool:
        return not self._tokens[token_id].startswith(_CONTINUATION)

    def _fingerprint_payload(self) -> dict:
        return {
            "kind": self.kind,
            "vocab": self._tokens,
            "special_tokens": list(self._special_tokens),
            "do_lower_case": self.do_lower_case,
            "strip_accents": self.strip_accents,
            "tokenize_chinese_chars": self.tokenize_chinese_chars,
            "max_input_chars_per_word": _MAX_WORD_CHARS,
        }

    def tf_tokenize(self, strings):
        """The ids of `encode_batch_ids` computed by TensorFlow ops, for use inside `tf.data`.

        `strings`: tf.string of shape [batch] -> tf.RaggedTensor int64 [batch, (ids)]; a scalar
        string gives a 1-D int64 Tensor. The first call builds the ops (about a second). Built
        from tensorflow_text's FastWordpieceTokenizer, with BertNormalizer and BertPreTokenizer
        written as regex/ICU ops whose character classes come from this module's tables (so they
        follow HF's Unicode 8.0 categories).
        tf_text's own FastBertNormalizer is not used: it applies NFKC case folding, which turns
        "ß" into "ss", "ﬁ" into "fi", "½" into "1⁄2", "…" into "...", and it turns control
        and private-use characters, which HF deletes, into [UNK] or word breaks.

        Agrees with `encode_batch_ids` / BertTokenizerFast on prose in any script, punctuation,
        numbers, accents, CJK, emoji, control and format characters, literal special tokens and
        the 100-character word limit. Compared on every Unicode code point (as "a{c}b {c}{c}",
        tokenizers 0.23.3 vs tensorflow-text 2.21.1), it differs only where TensorFlow's ICU
        and HF's Unicode tables disagree, on these characters of scripts encoded in Unicode
        13-16 (tests/test_tokenizers.py pins the list):
          * do_lower_case: capitals that HF lowercases and ICU leaves as they are (95 code
            points): U+1C89, U+2C2F, U+A7C0, U+A7CB-A7CC, U+A7CE, U+A7D0, U+A7D2, U+A7D4,
            U+A7D6, U+A7D8, U+A7DA, U+A7DC, U+10570-1057A, U+1057C-1058A, U+1058C-10592,
            U+10594-10595 (Vithkuqi), U+10D50-10D65 (Garay), U+16EA0-16EB8 (Kirat Rai);
          * strip_accents: letters that ICU's NFD decomposes and HF's does not (21 code
            points): U+105C9, U+105E4 (Todhri), U+11383, U+11385, U+1138E, U+11391, U+113C5,
            U+113C7-113C8 (Tulu-Tigalari), U+11938 (Dives Akuru), U+16121-16128 (Gurung
            Khema), U+16D68-16D6A (Kirat Rai).
        """
        import tensorflow as tf

        if self._tf_fn is None:
            # Eagerly, even when first called while tf.data traces a map function: the
            # tokenizer's model buffer must not belong to that one graph.
            with tf.init_scope():
                self._tf_fn = self._build_tf_fn()
        strings = tf.convert_to_tensor(strings, dtype=tf.string)
        if strings.shape.rank == 0:
            return self._tf_fn(strings[tf.newaxis])[0]
        return self._tf_fn(strings)

    def _build_tf_fn(self):
        import tensorflow as tf
        import tensorflow_text as tf_text

        classes = _tf_char_classes()
        # A token listed twice keeps its last id (as HF); earlier copies, and empty lines, get
        # a placeholder with a space, which no word can contain after pre-tokenization.
        vocab = [
            token if token and self._vocab[token] == i else f" {i}" for i, token in enumerate(self._tokens)
        ]
        wordpiece = tf_text.FastWordpieceTokenizer(
            vocab=vocab,
            suffix_indicator=_CONTINUATION,
            # Words over _MAX_WORD_CHARS characters are replaced below; UTF-8 needs <= 4 bytes
            # per character, so this byte limit never cuts a word HF would tokenize.
            max_bytes_per_word=4 * _MAX_WORD_CHARS,
            token_out_type=tf.int64,
            unknown_token=self._tokens[self.unk_id],
            no_pretokenization=True,
        )
        specials = "|".join(_re2_escape(t) for t in sorted(set(self._special_tokens), key=len, reverse=True))
        unk_token = self._tokens[self.unk_id]
        lower, strip, chinese = self.do_lower_case, self.strip_accents, self.tokenize_chinese_chars

        def normalize(s):  # tf.string [pieces]
            s = tf.strings.regex_replace(s, classes["whitespace"], " ")
            s = tf.strings.regex_replace(s, classes["deleted"], "")
            if chinese:
                s = tf.strings.regex_replace(s, f"({classes['chinese']})", r" \1 ")
            if strip:
                s = tf_text.normalize_utf8(s, "NFD")
                s = tf.strings.regex_replace(s, classes["nonspacing_mark"], "")
            if lower:
                # ICU lowercases a word-final capital sigma to "ς"; Rust, char by char, to "σ".
                s = tf.strings.regex_replace(s, "\u03a3", "\u03c3")
                s = tf.strings.lower(s, encoding="utf-8")
            return s

        def tokenize(strings):  # tf.string [batch]
            # regex_split and lower stop at NUL; \x01 is deleted by normalization just as NUL is.
            strings = tf.strings.regex_replace(strings, r"\x00", "\x01")
            # Special tokens are matched in the raw text, as HF matches its added tokens.
            pieces = tf_text.regex_split(strings, specials, keep_delim_regex_pattern=specials)
            flat = pieces.flat_values  # [pieces]
            is_special = tf.strings.regex_full_match(flat, specials)
            words = tf_text.regex_split(
                normalize(tf.where(is_special, "", flat)),
                f" |{classes['punctuation']}",
                keep_delim_regex_pattern=classes["punctuation"],
            )  # [pieces, (words)]
            # A special token is one word that WordPiece maps to its own id, whole.
            special_words = tf.RaggedTensor.from_row_lengths(
                tf.boolean_mask(flat, is_special), tf.cast(is_special, tf.int64)
            )
            words = tf.concat([words, special_words], axis=1)
            too_long = tf.strings.length(words.flat_values, unit="UTF8_CHAR") > _MAX_WORD_CHARS
            words = words.with_flat_values(tf.where(too_long, unk_token, words.flat_values))
            ids = wordpiece.tokenize(words)  # [pieces, (words), (ids)]
            return pieces.with_flat_values(ids.merge_dims(1, 2)).merge_dims(1, 2)  # [batch, (ids)]

        return tokenize

    def _content_ids(self, text: str) -> list[int]:
        ids: list[int] = []
        # re.split with a group alternates plain text (even) and special tokens (odd).
        for k, chunk in enumerate(self._special_split.split(text)):
            if k % 2:
                ids.append(self._vocab[chunk])
                continue
            # Whitespace splits words before and after normalization alike, so words can be
            # normalized and cached one at a time.
            for word in _WHITESPACE.split(chunk):
                if word:
                    ids.extend(self._word_ids(word))
        return ids

    def _word_ids(self, word: str) -> tuple[int, ...]:
        ids = self._word_cache.get(word)
        if ids is None:
            pieces = self.pre_tokenize(self.normalize(word))
            ids = tuple(i for piece in pieces for i in self._wordpiece(piece))
            if len(self._word_cache) >= _CACHE_LIMIT:
                self._word_cache.clear()
            self._word_cache[word] = ids
        return ids

    def _wordpiece(self, word: str) -> tuple[int, ...]:
        """Greedy longest-match-first; the whole word is [UNK] if any part has no match."""
        if len(word) > _MAX_WORD_CHARS:
            return (self.unk_id,)
        ids = []
        start = 0
        while start < len(word):
            prefix = _CONTINUATION if start else ""
            for end in range(min(len(word), start + self._max_piece_chars), start, -1):
                token_id = self._vocab.get(prefix + word[start:end])
                if token_id is not None:
                    ids.append(token_id)
                    start = end
                    break
            else:
                return (self.unk_id,)
        return tuple(ids)


class FastWordPieceTokenizer(WordPieceTokenizer):
    """`WordPieceTokenizer` with encoding done by the Rust `tokenizers` library: the pipeline
    BertTokenizerFast builds (BertNormalizer, BertPreTokenizer, WordPiece, special tokens
    matched in the raw text), and batches encoded in parallel. Same constructor and loaders."""

    def __init__(self, vocab: Sequence[str], **options):
        super().__init__(vocab, **options)
        model = tk_models.WordPiece(
            self._vocab,
            unk_token=self._tokens[self.unk_id],
            max_input_chars_per_word=_MAX_WORD_CHARS,
            continuing_subword_prefix=_CONTINUATION,
        )
        rust = tokenizers.Tokenizer(model)
        rust.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=self.tokenize_chinese_chars,
            strip_accents=self.strip_accents,
            lowercase=self.do_lower_case,
        )
        rust.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        rust.add_special_tokens([AddedToken(t, special=True) for t in dict.fromkeys(self._special_tokens)])
        self._rust = rust

    def encode_batch_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return _rust_batch_ids(self._rust, texts)

    def _content_ids(self, text: str) -> list[int]:
        return self._rust.encode(text, add_special_tokens=False).ids


# ---------------------------------------------------------------------------------------------
# SentencePiece (ALBERT)


def sentencepiece_prenormalizer(do_lower_case: bool = True, keep_accents: bool = False):
    """What ALBERT does to text before SentencePiece sees it, as HF's AlbertTokenizer does it:
    `` and '' become ", then NFKD and accent stripping (unless keep_accents), then lowercasing;
    and every whitespace character becomes a space, since HF splits words on all of them
    (sentencepiece's charsmap would keep e.g. U+0085 and U+1680 as unknown characters).
    A `tokenizers` normalizer; `train_tokenizer` feeds the trainer text through the same one."""
    steps = [normalizers.Replace("``", '"'), normalizers.Replace("''", '"')]
    if not keep_accents:
        steps += [normalizers.NFKD(), normalizers.StripAccents()]
    if do_lower_case:
        steps.append(normalizers.Lowercase())
    steps.append(normalizers.Replace(tokenizers.Regex(f"[{_RUST_WHITESPACE_CHARS}]"), " "))
    return normalizers.Sequence(steps)


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model (unigram or BPE) with ALBERT's conventions.

    Text goes through `sentencepiece_prenormalizer(do_lower_case, keep_accents)`, then the
    model itself (its own NFKC-style normalization, whitespace handling and segmentation) in
    sentencepiece's C++ thread pool. For unigram models, ALBERT's kind, the ids equal
    `transformers`' AlbertTokenizer (tested on real text). HF has no ALBERT class for BPE
    models (AlbertTokenizer would read one as unigram): the ids are sentencepiece's own, and
    `train_tokenizer` writes a tokenizer.json that reproduces them for AutoTokenizer.

    Special tokens default to ALBERT's: <pad> <unk> [CLS] [SEP] [MASK]; all must be pieces
    of the model. Written literally in the text they are kept as such, as in HF.
    """

    kind = "sentencepiece"
    family_tokens = BERT_TEMPLATE

    def __init__(
        self,
        model_proto: bytes,
        *,
        do_lower_case: bool = True,
        keep_accents: bool = False,
        unk_token: str = "<unk>",
        cls_token: str = "[CLS]",
        sep_token: str = "[SEP]",
        pad_token: str = "<pad>",
        mask_token: str = "[MASK]",
        source: str = "spiece.model",
    ):
        from sentencepiece import sentencepiece_model_pb2

        self._sp = spm.SentencePieceProcessor()
        proto = sentencepiece_model_pb2.ModelProto()
        try:
            self._sp.LoadFromSerializedProto(model_proto)
            proto.ParseFromString(model_proto)
        except Exception as e:  # sentencepiece raises RuntimeError, protobuf DecodeError
            raise UserError(f"{source}: not a SentencePiece model: {e}") from None
        self._tokens = [p.piece for p in proto.pieces]
        self._piece_types = [p.type for p in proto.pieces]
        self._proto = proto
        vocab = {piece: i for i, piece in enumerate(self._tokens)}
        self._special_tokens = (unk_token, cls_token, sep_token, pad_token, mask_token)
        missing = [repr(t) for t in self._special_tokens if not t or t not in vocab]
        if missing:
            raise UserError(f"{source} lacks special piece(s) {', '.join(missing)}")
        self.unk_id, self.cls_id, self.sep_id, self.pad_id, self.mask_id = (
            vocab[t] for t in self._special_tokens
        )
        self._vocab = vocab
        self.do_lower_case = do_lower_case
        self.keep_accents = keep_accents
        self.model_type = _SP_MODEL_TYPES.get(proto.trainer_spec.model_type, "other")
        self._prenormalizer = sentencepiece_prenormalizer(do_lower_case, keep_accents)
        self._special_split = _special_pattern(self._special_tokens)

    @classmethod
    def from_file(cls, model_path: str | Path) -> SentencePieceTokenizer:
        """Load a .model file, with the tokenizer_config.json next to it if there is one
        (do_lower_case, keep_accents and special-token names, as AlbertTokenizer reads them)."""
        model_path = Path(model_path)
        try:
            model_proto = model_path.read_bytes()
        except OSError as e:
            raise UserError(f"{model_path}: cannot read SentencePiece model: {e}") from None
        config_path = model_path.parent / "tokenizer_config.json"
        config = _read_json(config_path) if config_path.exists() else {}
        options = {
            key: _bool_option(config, key, config_path)
            for key in ("do_lower_case", "keep_accents")
            if key in config
        }
        options.update(_special_names(config, config_path))
        return cls(model_proto, **options, source=str(model_path))

    def encode_batch_ids(self, texts: Sequence[str]) -> list[list[int]]:
        # Plain-text chunks of every text, encoded in one C++ batch; `layout` remembers which
        # chunk or special id goes where.
        chunks: list[str] = []
        layout: list[list[int]] = []  # per text: >= 0 chunk index, < 0 special id as -1 - id
        normalize = self._prenormalizer.normalize_str
        for text in texts:
            parts = self._special_split.split(text) if self._special_split.search(text) else [text]
            row = []
            for k, part in enumerate(parts):
                if k % 2:
                    row.append(-1 - self._vocab[part])
                elif part:
                    row.append(len(chunks))
                    chunks.append(normalize(part))
            layout.append(row)
        encoded = self._sp.encode(chunks, out_type=int, num_threads=-1) if chunks else []
        out = []
        for row in layout:
            if len(row) == 1 and row[0] >= 0:
                out.append(encoded[row[0]])
                continue
            ids = []
            for k in row:
                if k >= 0:
                    ids.extend(encoded[k])
                else:
                    ids.append(-1 - k)
            out.append(ids)
        return out

    @property
    def special_ids(self) -> frozenset[int]:
        # Control pieces (ALBERT's [CLS] [SEP] [MASK]) and <unk> are special whatever their names.
        extra = (i for i, t in enumerate(self._piece_types) if t in (_SP_CONTROL, _SP_UNKNOWN))
        return super().special_ids | frozenset(extra)

    def _is_word_start(self, token_id: int) -> bool:
        piece = self._tokens[token_id]
        if self._piece_types[token_id] in (_SP_CONTROL, _SP_UNKNOWN, _SP_USER_DEFINED):
            return True
        if self._piece_types[token_id] == _SP_BYTE:
            return False
        return piece.startswith(_SP_SPACE) or _is_punctuation_only(piece)

    def _fingerprint_payload(self) -> dict:
        # The pieces and the normalizer, not the whole proto: its trainer_spec records paths.
        spec = self._proto.normalizer_spec
        return {
            "kind": self.kind,
            "model_type": self._proto.trainer_spec.model_type,
            "pieces": [[p.piece, p.score, p.type] for p in self._proto.pieces],
            "normalizer": {
                "name": spec.name,
                "precompiled_charsmap_sha256": hashlib.sha256(spec.precompiled_charsmap).hexdigest(),
                "add_dummy_prefix": spec.add_dummy_prefix,
                "remove_extra_whitespaces": spec.remove_extra_whitespaces,
                "escape_whitespaces": spec.escape_whitespaces,
            },
            "special_tokens": list(self._special_tokens),
            "do_lower_case": self.do_lower_case,
            "keep_accents": self.keep_accents,
        }


# sentencepiece_model.proto enums.
_SP_MODEL_TYPES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}
_SP_UNKNOWN, _SP_CONTROL, _SP_USER_DEFINED, _SP_BYTE = 2, 3, 4, 6


# ---------------------------------------------------------------------------------------------
# Byte-level BPE (RoBERTa)


class ByteLevelBPETokenizer(Tokenizer):
    """RoBERTa's byte-level BPE, built exactly as `transformers`' RobertaTokenizer builds its
    Rust backend: BPE(vocab, merges) behind a ByteLevel pre-tokenizer (no prefix space unless
    configured), special tokens <s> </s> <pad> <unk> <mask> matched in the raw text with the
    lstrip/rstrip flags of tokenizer_config.json."""

    kind = "byte_bpe"
    family_tokens = ROBERTA_TEMPLATE

    def __init__(
        self,
        vocab: dict[str, int],
        merges: list[tuple[str, str]],
        *,
        add_prefix_space: bool = False,
        special_tokens: dict[str, AddedToken] | None = None,
        source: str = "vocab.json",
    ):
        names = {
            "unk_token": "<unk>",
            "cls_token": "<s>",
            "sep_token": "</s>",
            "pad_token": "<pad>",
            "mask_token": "<mask>",
        }
        added = {key: AddedToken(name, special=True) for key, name in names.items()}
        added.update(special_tokens or {})
        self._special_tokens = tuple(added[key].content for key in _SPECIAL_KEYS)
        missing = [repr(t) for t in self._special_tokens if t not in vocab]
        if missing:
            raise UserError(f"{source} lacks special token(s) {', '.join(missing)}")
        self.unk_id, self.cls_id, self.sep_id, self.pad_id, self.mask_id = (
            vocab[t] for t in self._special_tokens
        )
        self._tokens = _tokens_by_id(vocab, [], source)
        self._merges = [f"{a} {b}" for a, b in merges]
        self.add_prefix_space = add_prefix_space
        rust = tokenizers.Tokenizer(
            tk_models.BPE(
                vocab=vocab,
                merges=merges,
                dropout=None,
                continuing_subword_prefix="",
                end_of_word_suffix="",
                fuse_unk=False,
            )
        )
        rust.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
        rust.add_special_tokens(list(added.values()))
        self._rust = rust

    @classmethod
    def from_files(cls, vocab_path: str | Path, merges_path: str | Path) -> ByteLevelBPETokenizer:
        """Load vocab.json + merges.txt, with the tokenizer_config.json next to vocab.json (the
        add_prefix_space option and special tokens, as RobertaTokenizer reads them)."""
        vocab_path, merges_path = Path(vocab_path), Path(merges_path)
        for path in (vocab_path, merges_path):
            if not path.is_file():
                raise UserError(f"{path}: no such file (byte-level BPE needs vocab.json and merges.txt)")
        try:
            vocab, merges = tk_models.BPE.read_file(str(vocab_path), str(merges_path))
        except Exception as e:  # the Rust reader raises plain Exception
            raise UserError(f"{vocab_path} / {merges_path}: cannot read BPE vocabulary: {e}") from None
        config_path = vocab_path.parent / "tokenizer_config.json"
        config = _read_json(config_path) if config_path.exists() else {}
        options = {}
        if "add_prefix_space" in config:
            options["add_prefix_space"] = _bool_option(config, "add_prefix_space", config_path)
        special = _special_added_tokens(config, config_path)
        return cls(vocab, merges, **options, special_tokens=special, source=str(vocab_path))

    @classmethod
    def from_tokenizer_json(cls, json_path: str | Path) -> ByteLevelBPETokenizer:
        """Vocab and merges of a byte-level BPE tokenizer.json (rebuilt as RobertaTokenizer
        rebuilds it), options and special tokens from the tokenizer_config.json next to it."""
        json_path = Path(json_path)
        spec = _read_json(json_path)
        model = spec.get("model") or {}
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
        if any(len(m) != 2 for m in merges):
            raise UserError(f"{json_path}: model.merges must be pairs of tokens")
        config_path = json_path.parent / "tokenizer_config.json"
        config = _read_json(config_path) if config_path.exists() else {}
        pre = spec.get("pre_tokenizer") or {}
        add_prefix_space = bool(pre.get("add_prefix_space", False))
        if "add_prefix_space" in config:
            add_prefix_space = _bool_option(config, "add_prefix_space", config_path)
        special = _special_added_tokens(config, config_path)
        vocab = dict(model.get("vocab") or {})
        for token in spec.get("added_tokens") or []:
            vocab.setdefault(token["content"], token["id"])
        return cls(
            vocab, merges, add_prefix_space=add_prefix_space, special_tokens=special, source=str(json_path)
        )

    def encode_batch_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return _rust_batch_ids(self._rust, texts)

    def _is_word_start(self, token_id: int) -> bool:
        token = self._tokens[token_id]
        if token.startswith(_BYTE_SPACE):
            return True
        try:
            text = bytes(BYTE_DECODER[c] for c in token).decode("utf-8")
        except (KeyError, UnicodeDecodeError):  # not byte-level text, or part of a character
            return False
        return _is_punctuation_only(text) or (text != "" and text.isspace())

    def _fingerprint_payload(self) -> dict:
        return {
            "kind": self.kind,
            "vocab": self._tokens,
            "merges": self._merges,
            "special_tokens": list(self._special_tokens),
            "add_prefix_space": self.add_prefix_space,
        }


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map that byte-level BPE vocabularies are written in."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    mapping = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + n)
            n += 1
    return mapping


BYTE_DECODER = {c: b for b, c in _bytes_to_unicode().items()}


# ---------------------------------------------------------------------------------------------
# Loading


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer stored at `path`, a checkpoint/tokenizer directory or one file.

    A directory is searched in this order (with tokenizer_config.json read for options):
      vocab.txt                    -> FastWordPieceTokenizer   (BERT, ELECTRA)
      spiece.model, or one *.model -> SentencePieceTokenizer   (ALBERT)
      vocab.json + merges.txt      -> ByteLevelBPETokenizer    (RoBERTa)
      tokenizer.json               -> WordPiece or byte-level BPE, by its model
    A file is read as its name says: *.txt (WordPiece vocab), *.model, vocab.json (with
    merges.txt beside it), or *.json (a tokenizers file). Anything else raises UserError.
    """
    from bert_jax import storage

    if storage.is_remote(path):  # tokenizer libraries read local files: load from a local copy
        if not storage.exists(path):
            raise UserError(f"{path}: no such tokenizer file or directory")
        with storage.local_copy(path) as local:
            return load_tokenizer(local)
    path = Path(path)
    if path.is_file():
        return _load_file(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such tokenizer file or directory")
    if (path / "vocab.txt").is_file():
        return FastWordPieceTokenizer.from_dir(path)
    models = sorted(path.glob("*.model"))
    if (path / "spiece.model").is_file():
        return SentencePieceTokenizer.from_file(path / "spiece.model")
    if len(models) == 1:
        return SentencePieceTokenizer.from_file(models[0])
    if len(models) > 1:
        raise UserError(
            f"{path}: several SentencePiece models ({', '.join(m.name for m in models)}); "
            f"pass the file to use, or name it spiece.model"
        )
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        return ByteLevelBPETokenizer.from_files(path / "vocab.json", path / "merges.txt")
    if (path / "tokenizer.json").is_file():
        return _load_tokenizer_json(path / "tokenizer.json")
    raise UserError(
        f"{path}: no tokenizer found; looked for vocab.txt (WordPiece), spiece.model or *.model "
        f"(SentencePiece), vocab.json + merges.txt (byte-level BPE) and tokenizer.json"
    )


def _load_file(path: Path) -> Tokenizer:
    if path.suffix == ".model":
        return SentencePieceTokenizer.from_file(path)
    if path.suffix == ".txt":
        return FastWordPieceTokenizer.from_vocab_file(path)
    if path.name == "vocab.json":
        return ByteLevelBPETokenizer.from_files(path, path.parent / "merges.txt")
    if path.suffix == ".json":
        return _load_tokenizer_json(path)
    raise UserError(
        f"{path}: unknown tokenizer file; expected vocab.txt (WordPiece), *.model (SentencePiece), "
        f"vocab.json (byte-level BPE, with merges.txt) or tokenizer.json"
    )


def _load_tokenizer_json(path: Path) -> Tokenizer:
    spec = _read_json(path)
    model = spec.get("model")
    model_type = model.get("type") if isinstance(model, dict) else None
    if model_type == "WordPiece":
        return FastWordPieceTokenizer.from_tokenizer_json(path)
    if model_type == "BPE" and _is_byte_level(spec.get("pre_tokenizer")):
        return ByteLevelBPETokenizer.from_tokenizer_json(path)
    raise UserError(
        f"{path}: model {model_type!r} is not supported from tokenizer.json; expected WordPiece or "
        f"byte-level BPE (a SentencePiece tokenizer loads from its .model file)"
    )


def _is_byte_level(pre_tokenizer) -> bool:
    if not isinstance(pre_tokenizer, dict):
        return False
    if pre_tokenizer.get("type") == "Sequence":
        return any(_is_byte_level(p) for p in pre_tokenizer.get("pretokenizers", []))
    return pre_tokenizer.get("type") == "ByteLevel"


# ---------------------------------------------------------------------------------------------
# Helpers


def _rust_batch_ids(rust: tokenizers.Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    if not texts:
        return []
    return [e.ids for e in rust.encode_batch_fast(list(texts), add_special_tokens=False)]


def _special_pattern(tokens: Iterable[str]) -> re.Pattern:
    """Splits text around special tokens; longest first, so overlapping names match
    leftmost-longest like HF."""
    by_length = sorted(set(tokens), key=len, reverse=True)
    return re.compile("(" + "|".join(map(re.escape, by_length)) + ")")


def _is_punctuation_only(text: str) -> bool:
    return text != "" and all(unicodedata.category(c)[0] in "PS" for c in text)


def _tokens_by_id(vocab: dict[str, int], added_tokens: list[dict], source) -> list[str]:
    """Token of each id 0..max; "" where no token has the id."""
    by_id = dict(sorted((i, t) for t, i in vocab.items()))
    for token in added_tokens:
        by_id.setdefault(token["id"], token["content"])
    if not by_id:
        raise UserError(f"{source}: empty vocabulary")
    if min(by_id) < 0:
        raise UserError(f"{source}: negative token id {min(by_id)}")
    tokens = [""] * (max(by_id) + 1)
    for i, token in by_id.items():
        tokens[i] = token
    return tokens


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot read as JSON: {e}") from None
    if not isinstance(value, dict):
        raise UserError(f"{path}: expected a JSON object")
    return value


def _bool_option(config: dict, key: str, path: Path) -> bool:
    if not isinstance(config[key], bool):
        raise UserError(f"{path}: {key} must be true or false, got {config[key]!r}")
    return config[key]


def _special_added_tokens(config: dict, path: Path) -> dict[str, AddedToken]:
    """Special tokens named in a tokenizer_config.json, with their matching flags."""
    out = {}
    decoder = config.get("added_tokens_decoder") or {}
    flags_by_content = {t.get("content"): t for t in decoder.values() if isinstance(t, dict)}
    for key in _SPECIAL_KEYS:
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, dict):
            spec = value
        elif isinstance(value, str):
            spec = flags_by_content.get(value, {"content": value})
        else:
            spec = {"content": value}
        content = spec.get("content")
        if not isinstance(content, str) or not content:
            raise UserError(f"{path}: {key} must be a non-empty string, got {value!r}")
        out[key] = AddedToken(
            content,
            single_word=bool(spec.get("single_word", False)),
            lstrip=bool(spec.get("lstrip", False)),
            rstrip=bool(spec.get("rstrip", False)),
            normalized=bool(spec.get("normalized", False)),
            special=True,
        )
    return out


def _special_names(config: dict, path: Path) -> dict[str, str]:
    return {key: token.content for key, token in _special_added_tokens(config, path).items()}


def _read_config(config_path: Path) -> dict:
    """WordPiece options from tokenizer_config.json; BERT defaults when it is absent."""
    if not config_path.exists():
        return {}
    config = _read_json(config_path)
    options = {}
    for key, allowed, expected in (
        ("do_lower_case", (bool,), "true or false"),
        ("tokenize_chinese_chars", (bool,), "true or false"),
        ("strip_accents", (bool, type(None)), "true, false or null"),
    ):
        if key in config:
            if not isinstance(config[key], allowed):
                raise UserError(f"{config_path}: {key} must be {expected}, got {config[key]!r}")
            options[key] = config[key]
    # Newer configs store special tokens as serialized AddedToken objects.
    options.update(_special_names(config, config_path))
    return options


def _re2_escape(text: str) -> str:
    """`text` as a literal in an RE2 pattern."""
    return "".join(c if c.isalnum() else f"\\x{{{ord(c):x}}}" for c in text)


@functools.cache
def _tf_char_classes() -> dict[str, str]:
    """RE2 character classes for the TensorFlow WordPiece pipeline, from this module's tables
    (which match HF's), so that TF's newer Unicode tables do not leak in."""
    chars = [chr(cp) for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF]

    def char_class(predicate) -> str:
        ranges = []
        for c in chars:
            cp = ord(c)
            if predicate(c):
                if ranges and ranges[-1][1] == cp - 1:
                    ranges[-1][1] = cp
                else:
                    ranges.append([cp, cp])
        return "[" + "".join(f"\\x{{{lo:x}}}-\\x{{{hi:x}}}" for lo, hi in ranges) + "]"

    whitespace = frozenset(c for c in chars if _WHITESPACE.fullmatch(c))
    return {
        "whitespace": char_class(whitespace.__contains__),
        "deleted": char_class(lambda c: _clean_char(c) == ""),
        "chinese": char_class(lambda c: _pad_chinese_char(c) != c),
        "nonspacing_mark": char_class(_is_nonspacing_mark),
        "punctuation": char_class(_is_punctuation),
    }


def _check_max_length(max_length: int) -> None:
    if not isinstance(max_length, (int, np.integer)) or max_length < 2:
        raise UserError(f"max_length must be an int >= 2 ([CLS] and [SEP]), got {max_length!r}")


def _nfd(text: str) -> str:
    # A character HF's normalization tables do not know is a plain starter to HF: it is not
    # decomposed and nothing is reordered across it. Splitting there reproduces that.
    parts = _HF_NFD_UNKNOWN.split(text)
    return "".join(p if k % 2 else unicodedata.normalize("NFD", p) for k, p in enumerate(parts))


def _clean_char(c: str) -> str:
    """clean_text: map whitespace to " "; delete NUL, U+FFFD and what Rust's `is_other` calls
    control: Cc, Cf and private-use Co (unassigned Cn is kept)."""
    if _WHITESPACE.fullmatch(c):
        return " "
    cp = ord(c)
    if cp in (0, 0xFFFD):
        return ""
    if unicodedata.category(c) in ("Cc", "Cf", "Co") and cp not in _HF_NOT_FORMAT:
        return ""
    return c


def _pad_chinese_char(c: str) -> str:
    cp = ord(c)
    if any(lo <= cp <= hi for lo, hi in _CHINESE_RANGES):
        return f" {c} "
    return c


def _is_nonspacing_mark(c: str) -> bool:
    cp = ord(c)
    if cp in _HF_EXTRA_MARKS:
        return True
    return unicodedata.category(c) == "Mn" and cp not in _HF_NOT_MARKS


def _lower_char(c: str) -> str:
    # Rust lowercases char by char, so unlike str.lower() a final Σ becomes σ, not ς.
    return _HF_EXTRA_LOWER.get(c) or c.lower()


def _is_punctuation(c: str) -> bool:
    cp = ord(c)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    if cp in _HF_EXTRA_PUNCTUATION:
        return True
    return unicodedata.category(c).startswith("P") and cp not in _HF_NOT_PUNCTUATION


def _code_points(*ranges: tuple[int, int]) -> frozenset[int]:
    return frozenset(cp for lo, hi in ranges for cp in range(lo, hi + 1))


# Where HF's Unicode 8.0 category tables and Python's (14.0) disagree. Found by comparing
# every code point with tokenizers 0.23; mostly characters assigned after Unicode 8.0.

# Cf in Python, but kept by HF's clean_text.
_HF_NOT_FORMAT = _code_points((0x890, 0x891), (0x8E2, 0x8E2), (0x110CD, 0x110CD), (0x13430, 0x13438))

# Stripped as Mn by HF, though Python says Mc (U+1734 changed category in Unicode 14).
_HF_EXTRA_MARKS = _code_points((0x1734, 0x1734))

# Mn in Python, but not stripped by HF (code points that NFD decomposes are left out).
_HF_NOT_MARKS = _code_points(
    (0x7FD, 0x7FD),
    (0x898, 0x89F),
    (0x8CA, 0x8E1),
    (0x9FE, 0x9FE),
    (0xAFA, 0xAFF),
    (0xB55, 0xB55),
    (0xC04, 0xC04),
    (0xC3C, 0xC3C),
    (0xD00, 0xD00),
    (0xD3B, 0xD3C),
    (0xD81, 0xD81),
    (0xEBA, 0xEBA),
    (0x180F, 0x180F),
    (0x1885, 0x1886),
    (0x1ABF, 0x1ACE),
    (0x1DF6, 0x1DFB),
    (0xA82C, 0xA82C),
    (0xA8C5, 0xA8C5),
    (0xA8FF, 0xA8FF),
    (0xA9BD, 0xA9BD),
    (0x10D24, 0x10D27),
    (0x10EAB, 0x10EAC),
    (0x10F46, 0x10F50),
    (0x10F82, 0x10F85),
    (0x11070, 0x11070),
    (0x11073, 0x11074),
    (0x110C2, 0x110C2),
    (0x111C9, 0x111C9),
    (0x111CF, 0x111CF),
    (0x1123E, 0x1123E),
    (0x1133B, 0x1133B),
    (0x11438, 0x1143F),
    (0x11442, 0x11444),
    (0x11446, 0x11446),
    (0x1145E, 0x1145E),
    (0x1182F, 0x11837),
    (0x11839, 0x1183A),
    (0x1193B, 0x1193C),
    (0x1193E, 0x1193E),
    (0x11943, 0x11943),
    (0x119D4, 0x119D7),
    (0x119DA, 0x119DB),
    (0x119E0, 0x119E0),
    (0x11A01, 0x11A0A),
    (0x11A33, 0x11A38),
    (0x11A3B, 0x11A3E),
    (0x11A47, 0x11A47),
    (0x11A51, 0x11A56),
    (0x11A59, 0x11A5B),
    (0x11A8A, 0x11A96),
    (0x11A98, 0x11A99),
    (0x11C30, 0x11C36),
    (0x11C38, 0x11C3D),
    (0x11C3F, 0x11C3F),
    (0x11C92, 0x11CA7),
    (0x11CAA, 0x11CB0),
    (0x11CB2, 0x11CB3),
    (0x11CB5, 0x11CB6),
    (0x11D31, 0x11D36),
    (0x11D3A, 0x11D3A),
    (0x11D3C, 0x11D3D),
    (0x11D3F, 0x11D45),
    (0x11D47, 0x11D47),
    (0x11D90, 0x11D91),
    (0x11D95, 0x11D95),
    (0x11D97, 0x11D97),
    (0x11EF3, 0x11EF4),
    (0x16F4F, 0x16F4F),
    (0x16FE4, 0x16FE4),
    (0x1CF00, 0x1CF2D),
    (0x1CF30, 0x1CF46),
    (0x1E000, 0x1E006),
    (0x1E008, 0x1E018),
    (0x1E01B, 0x1E021),
    (0x1E023, 0x1E024),
    (0x1E026, 0x1E02A),
    (0x1E130, 0x1E136),
    (0x1E2AE, 0x1E2AE),
    (0x1E2EC, 0x1E2EF),
    (0x1E944, 0x1E94A),
)

# Punctuation to HF, not to Python (U+166D became So, U+111C9 became Mn).
_HF_EXTRA_PUNCTUATION = _code_points((0x166D, 0x166D), (0x111C9, 0x111C9))

# Punctuation to Python, not to HF.
_HF_NOT_PUNCTUATION = _code_points(
    (0x61D, 0x61D),
    (0x9FD, 0x9FD),
    (0xA76, 0xA76),
    (0xC77, 0xC77),
    (0xC84, 0xC84),
    (0x1B7D, 0x1B7E),
    (0x2E43, 0x2E4F),
    (0x2E52, 0x2E5D),
    (0x10EAD, 0x10EAD),
    (0x10F55, 0x10F59),
    (0x10F86, 0x10F89),
    (0x1144B, 0x1144F),
    (0x1145A, 0x1145B),
    (0x1145D, 0x1145D),
    (0x11660, 0x1166C),
    (0x116B9, 0x116B9),
    (0x1183B, 0x1183B),
    (0x11944, 0x11946),
    (0x119E2, 0x119E2),
    (0x11A3F, 0x11A46),
    (0x11A9A, 0x11A9C),
    (0x11A9E, 0x11AA2),
    (0x11C41, 0x11C45),
    (0x11C70, 0x11C71),
    (0x11EF7, 0x11EF8),
    (0x11FFF, 0x11FFF),
    (0x12FF1, 0x12FF2),
    (0x16E97, 0x16E9A),
    (0x16FE2, 0x16FE2),
    (0x1E95E, 0x1E95F),
)

# Combining marks (and the decomposable U+11938) newer than HF's NFD tables (Unicode 9.0).
_HF_NFD_UNKNOWN = re.compile(
    "(["
    + "".join(
        f"{chr(lo)}-{chr(hi)}"
        for lo, hi in (
            (0x7FD, 0x7FD),
            (0x898, 0x89F),
            (0x8CA, 0x8D3),
            (0x9FE, 0x9FE),
            (0xC3C, 0xC3C),
            (0xD3B, 0xD3C),
            (0xEBA, 0xEBA),
            (0x1715, 0x1715),
            (0x1ABF, 0x1ACE),
            (0x1DF6, 0x1DFA),
            (0xA82C, 0xA82C),
            (0x10D24, 0x10D27),
            (0x10EAB, 0x10EAC),
            (0x10F46, 0x10F50),
            (0x10F82, 0x10F85),
            (0x11070, 0x11070),
            (0x1133B, 0x1133B),
            (0x1145E, 0x1145E),
            (0x11839, 0x1183A),
            (0x11938, 0x11938),
            (0x1193D, 0x1193E),
            (0x11943, 0x11943),
            (0x119E0, 0x119E0),
            (0x11A34, 0x11A34),
            (0x11A47, 0x11A47),
            (0x11A99, 0x11A99),
            (0x11D42, 0x11D42),
            (0x11D44, 0x11D45),
            (0x11D97, 0x11D97),
            (0x16FF0, 0x16FF1),
            (0x1E130, 0x1E136),
            (0x1E2AE, 0x1E2AE),
            (0x1E2EC, 0x1E2EF),
        )
    )
    + "])"
)

# Unicode 16.0 case pairs that Rust's std knows and Python 3.11's unicodedata does not.
_HF_EXTRA_LOWER = {
    **{chr(cp): chr(cp + 0x20) for cp in range(0x10D50, 0x10D66)},  # Garay
    **{chr(cp): chr(cp + 0x1B) for cp in range(0x16EA0, 0x16EB9)},  # Kirat Rai
    **{
        chr(cp): chr(lower)
        for cp, lower in (
            (0x1C89, 0x1C8A),
            (0xA7CB, 0x264),
            (0xA7CC, 0xA7CD),
            (0xA7CE, 0xA7CF),
            (0xA7D2, 0xA7D3),
            (0xA7D4, 0xA7D5),
            (0xA7DA, 0xA7DB),
            (0xA7DC, 0x19B),
        )
    },
}
