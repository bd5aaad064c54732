"""BERT WordPiece tokenization in pure Python, matching Hugging Face's `BertTokenizerFast`.

This module owns turning text into BERT input ids: reading a checkpoint's `vocab.txt` and
`tokenizer_config.json`, the BertNormalizer -> BertPreTokenizer -> WordPiece pipeline of the
Rust `tokenizers` library, `[CLS] ... [SEP]` framing, truncation and batch padding. It uses only
the standard library and numpy, so training and serving do not depend on `transformers`.

Public API:

    tok = WordPieceTokenizer.from_dir(path)              # vocab.txt (+ tokenizer_config.json)
    tok.tokenize(text) -> list[str]                      # wordpieces, no [CLS]/[SEP]
    tok.encode(text, max_length=None) -> list[int]       # [CLS] ids [SEP]
    tok.encode_with_info(text, max_length=None) -> (ids, truncated)
    tok.encode_batch(texts, max_length) -> (ids, mask, n_truncated)   # int32 [n, max_length]

As in Hugging Face, a special token written literally in the text (e.g. "[MASK]") is kept as
that special token rather than split into "[", "mask", "]".

Parity notes. The Rust side classifies characters with the `unicode_categories` crate, whose
tables are Unicode 8.0, decomposes with Unicode 9.0-era NFD tables and lowercases with Rust's
std (Unicode 16.0), while Python's `unicodedata` is Unicode 14.0 on Python 3.11. The tables
at the end of this file list every code point where they disagree; tests/test_tokenizers.py
re-checks all code points against `tokenizers`, so an upgrade that shifts them fails loudly.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bert_jax.errors import UserError

# Rust's `char::is_whitespace` minus \x0b, \x0c and \x85: those are control characters,
# which clean_text deletes before it maps whitespace to " ", so they never split words.
_WHITESPACE_CHARS = "\t\n\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_WHITESPACE = re.compile(f"[{_WHITESPACE_CHARS}]+")

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

# tokenizer_config.json keys naming special tokens (BERT defaults are in __init__).
_SPECIAL_KEYS = ("unk_token", "cls_token", "sep_token", "pad_token", "mask_token")


class WordPieceTokenizer:
    """BERT tokenizer: BertNormalizer, BertPreTokenizer and WordPiece, as HF's Rust code does.

    `vocab` is the list of tokens in id order (line i of vocab.txt has id i). A token listed
    twice maps to its last id, as in HF. `source` names the vocab in error messages.
    """

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
        specials = (unk_token, cls_token, sep_token, pad_token, mask_token)
        # An empty name would match everywhere when special tokens are split out of the text.
        missing = [repr(token) for token in specials if not token or token not in self._vocab]
        if missing:
            raise UserError(f"{source} lacks special token(s) {', '.join(missing)}")
        self.unk_id, self.cls_id, self.sep_id, self.pad_id, self.mask_id = (
            self._vocab[token] for token in specials
        )
        self.do_lower_case = do_lower_case
        self.tokenize_chinese_chars = tokenize_chinese_chars
        # BERT's convention: unset strip_accents follows lowercasing.
        self.strip_accents = do_lower_case if strip_accents is None else strip_accents
        # Longest alternative first, so overlapping names match leftmost-longest like HF.
        by_length = sorted(set(specials), key=len, reverse=True)
        self._special_split = re.compile("(" + "|".join(map(re.escape, by_length)) + ")")
        self._max_piece_chars = max(map(len, self._vocab))
        self._word_cache: dict[str, tuple[int, ...]] = {}

    @classmethod
    def from_dir(cls, path: str | Path) -> WordPieceTokenizer:
        """Load `vocab.txt` and, if present, `tokenizer_config.json` from a checkpoint dir.

        Raises UserError naming the file when vocab.txt is missing or unreadable, the config is
        malformed, or the vocab lacks one of the special tokens the config names.
        """
        path = Path(path)
        vocab_path = path / "vocab.txt"
        try:
            # Text mode + rstrip("\n") is exactly HF's `load_vocab`: other trailing
            # whitespace is part of the token.
            with open(vocab_path, encoding="utf-8") as f:
                vocab = [line.rstrip("\n") for line in f]
        except FileNotFoundError:
            raise UserError(f"{vocab_path}: no such file (a BERT vocab.txt is required)") from None
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{vocab_path}: cannot read as UTF-8 text: {e}") from None
        options = _read_config(path / "tokenizer_config.json")
        return cls(vocab, **options, source=str(vocab_path))

    @property
    def vocab_size(self) -> int:
        """Number of ids, i.e. lines of vocab.txt (the embedding table's row count)."""
        return len(self._tokens)

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

    def encode_batch(
        self, texts: Sequence[str], max_length: int
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Encode and right-pad to `max_length`.

        Returns `(ids, mask, n_truncated)`: int32 arrays of shape [len(texts), max_length],
        `ids` padded with the [PAD] id and `mask` 1 on real tokens; `n_truncated` counts the
        texts that were cut.
        """
        _check_max_length(max_length)
        ids = np.full((len(texts), max_length), self.pad_id, dtype=np.int32)
        mask = np.zeros((len(texts), max_length), dtype=np.int32)
        n_truncated = 0
        for row, text in enumerate(texts):
            seq, truncated = self.encode_with_info(text, max_length)
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
            n_truncated += truncated
        return ids, mask, n_truncated

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


def _read_config(config_path: Path) -> dict:
    """Tokenizer options from tokenizer_config.json; BERT defaults when it is absent."""
    if not config_path.exists():
        return {}
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{config_path}: cannot read as JSON: {e}") from None
    if not isinstance(config, dict):
        raise UserError(f"{config_path}: expected a JSON object")
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
    for key in _SPECIAL_KEYS:
        value = config.get(key)
        # Newer configs store special tokens as serialized AddedToken objects.
        if isinstance(value, dict):
            value = value.get("content")
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise UserError(f"{config_path}: {key} must be a non-empty string, got {value!r}")
        options[key] = value
    return options


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
_HF_NOT_FORMAT = _code_points((0x890, 0x891), (0x8E2, 0x8E2), (0x110CD, 0x110CD),
                              (0x13430, 0x13438))

# Stripped as Mn by HF, though Python says Mc (U+1734 changed category in Unicode 14).
_HF_EXTRA_MARKS = _code_points((0x1734, 0x1734))

# Mn in Python, but not stripped by HF (code points that NFD decomposes are left out).
_HF_NOT_MARKS = _code_points(
    (0x7FD, 0x7FD), (0x898, 0x89F), (0x8CA, 0x8E1), (0x9FE, 0x9FE), (0xAFA, 0xAFF),
    (0xB55, 0xB55), (0xC04, 0xC04), (0xC3C, 0xC3C), (0xD00, 0xD00), (0xD3B, 0xD3C),
    (0xD81, 0xD81), (0xEBA, 0xEBA), (0x180F, 0x180F), (0x1885, 0x1886), (0x1ABF, 0x1ACE),
    (0x1DF6, 0x1DFB), (0xA82C, 0xA82C), (0xA8C5, 0xA8C5), (0xA8FF, 0xA8FF), (0xA9BD, 0xA9BD),
    (0x10D24, 0x10D27), (0x10EAB, 0x10EAC), (0x10F46, 0x10F50), (0x10F82, 0x10F85),
    (0x11070, 0x11070), (0x11073, 0x11074), (0x110C2, 0x110C2), (0x111C9, 0x111C9),
    (0x111CF, 0x111CF), (0x1123E, 0x1123E), (0x1133B, 0x1133B), (0x11438, 0x1143F),
    (0x11442, 0x11444), (0x11446, 0x11446), (0x1145E, 0x1145E), (0x1182F, 0x11837),
    (0x11839, 0x1183A), (0x1193B, 0x1193C), (0x1193E, 0x1193E), (0x11943, 0x11943),
    (0x119D4, 0x119D7), (0x119DA, 0x119DB), (0x119E0, 0x119E0), (0x11A01, 0x11A0A),
    (0x11A33, 0x11A38), (0x11A3B, 0x11A3E), (0x11A47, 0x11A47), (0x11A51, 0x11A56),
    (0x11A59, 0x11A5B), (0x11A8A, 0x11A96), (0x11A98, 0x11A99), (0x11C30, 0x11C36),
    (0x11C38, 0x11C3D), (0x11C3F, 0x11C3F), (0x11C92, 0x11CA7), (0x11CAA, 0x11CB0),
    (0x11CB2, 0x11CB3), (0x11CB5, 0x11CB6), (0x11D31, 0x11D36), (0x11D3A, 0x11D3A),
    (0x11D3C, 0x11D3D), (0x11D3F, 0x11D45), (0x11D47, 0x11D47), (0x11D90, 0x11D91),
    (0x11D95, 0x11D95), (0x11D97, 0x11D97), (0x11EF3, 0x11EF4), (0x16F4F, 0x16F4F),
    (0x16FE4, 0x16FE4), (0x1CF00, 0x1CF2D), (0x1CF30, 0x1CF46), (0x1E000, 0x1E006),
    (0x1E008, 0x1E018), (0x1E01B, 0x1E021), (0x1E023, 0x1E024), (0x1E026, 0x1E02A),
    (0x1E130, 0x1E136), (0x1E2AE, 0x1E2AE), (0x1E2EC, 0x1E2EF), (0x1E944, 0x1E94A),
)

# Punctuation to HF, not to Python (U+166D became So, U+111C9 became Mn).
_HF_EXTRA_PUNCTUATION = _code_points((0x166D, 0x166D), (0x111C9, 0x111C9))

# Punctuation to Python, not to HF.
_HF_NOT_PUNCTUATION = _code_points(
    (0x61D, 0x61D), (0x9FD, 0x9FD), (0xA76, 0xA76), (0xC77, 0xC77), (0xC84, 0xC84),
    (0x1B7D, 0x1B7E), (0x2E43, 0x2E4F), (0x2E52, 0x2E5D), (0x10EAD, 0x10EAD),
    (0x10F55, 0x10F59), (0x10F86, 0x10F89), (0x1144B, 0x1144F), (0x1145A, 0x1145B),
    (0x1145D, 0x1145D), (0x11660, 0x1166C), (0x116B9, 0x116B9), (0x1183B, 0x1183B),
    (0x11944, 0x11946), (0x119E2, 0x119E2), (0x11A3F, 0x11A46), (0x11A9A, 0x11A9C),
    (0x11A9E, 0x11AA2), (0x11C41, 0x11C45), (0x11C70, 0x11C71), (0x11EF7, 0x11EF8),
    (0x11FFF, 0x11FFF), (0x12FF1, 0x12FF2), (0x16E97, 0x16E9A), (0x16FE2, 0x16FE2),
    (0x1E95E, 0x1E95F),
)

# Combining marks (and the decomposable U+11938) newer than HF's NFD tables (Unicode 9.0).
_HF_NFD_UNKNOWN = re.compile("([" + "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in (
    (0x7FD, 0x7FD), (0x898, 0x89F), (0x8CA, 0x8D3), (0x9FE, 0x9FE), (0xC3C, 0xC3C),
    (0xD3B, 0xD3C), (0xEBA, 0xEBA), (0x1715, 0x1715), (0x1ABF, 0x1ACE), (0x1DF6, 0x1DFA),
    (0xA82C, 0xA82C), (0x10D24, 0x10D27), (0x10EAB, 0x10EAC), (0x10F46, 0x10F50),
    (0x10F82, 0x10F85), (0x11070, 0x11070), (0x1133B, 0x1133B), (0x1145E, 0x1145E),
    (0x11839, 0x1183A), (0x11938, 0x11938), (0x1193D, 0x1193E), (0x11943, 0x11943),
    (0x119E0, 0x119E0), (0x11A34, 0x11A34), (0x11A47, 0x11A47), (0x11A99, 0x11A99),
    (0x11D42, 0x11D42), (0x11D44, 0x11D45), (0x11D97, 0x11D97), (0x16FF0, 0x16FF1),
    (0x1E130, 0x1E136), (0x1E2AE, 0x1E2AE), (0x1E2EC, 0x1E2EF),
)) + "])")

# Unicode 16.0 case pairs that Rust's std knows and Python 3.11's unicodedata does not.
_HF_EXTRA_LOWER = {
    **{chr(cp): chr(cp + 0x20) for cp in range(0x10D50, 0x10D66)},  # Garay
    **{chr(cp): chr(cp + 0x1B) for cp in range(0x16EA0, 0x16EB9)},  # Kirat Rai
    **{chr(cp): chr(lower) for cp, lower in (
        (0x1C89, 0x1C8A), (0xA7CB, 0x264), (0xA7CC, 0xA7CD), (0xA7CE, 0xA7CF),
        (0xA7D2, 0xA7D3), (0xA7D4, 0xA7D5), (0xA7DA, 0xA7DB), (0xA7DC, 0x19B),
    )},
}
