"""The interface every tokenizer kind implements, the two pair templates, and the file-reading
helpers the kinds share."""

from __future__ import annotations

import abc
import hashlib
import json
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tokenizers
from tokenizers import AddedToken

from bert_jax.errors import UserError

# The two pair templates of the family (`Tokenizer.family_tokens`).
BERT_TEMPLATE = "bert"  # [CLS] A [SEP] B [SEP], segments 0 ... 0 1 ... 1 (BERT, ALBERT, ELECTRA)
ROBERTA_TEMPLATE = "roberta"  # <s> A </s></s> B </s>, all segments 0 (RoBERTa)

# Order of the special-token attributes: (unk, cls, sep, pad, mask).
_SPECIAL_KEYS = ("unk_token", "cls_token", "sep_token", "pad_token", "mask_token")


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
        if not isinstance(max_length, (int, np.integer)) or max_length < 2:
            raise UserError(f"max_length must be an int >= 2 ([CLS] and [SEP]), got {max_length!r}")
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
        runs and machines."""
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


def _rust_batch_ids(rust: tokenizers.Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Content ids of `texts` from a Rust tokenizer, encoded in parallel."""
    if not texts:
        return []
    return [e.ids for e in rust.encode_batch_fast(list(texts), add_special_tokens=False)]


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


def _tokenizer_config(config_path: Path) -> dict:
    """The tokenizer_config.json at `config_path`; {} when there is none (defaults apply)."""
    return _read_json(config_path) if config_path.exists() else {}


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
    """Special-token names of a tokenizer_config.json, keyed like the constructors' arguments."""
    return {key: token.content for key, token in _special_added_tokens(config, path).items()}
