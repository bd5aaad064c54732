"""Byte-level BPE (RoBERTa): vocab.json + merges.txt in Rust `tokenizers`, as RobertaTokenizer
builds it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import tokenizers
from tokenizers import AddedToken, pre_tokenizers
from tokenizers import models as tk_models

from bert_jax.data.tokenizers.base import (
    _SPECIAL_KEYS,
    ROBERTA_TEMPLATE,
    Tokenizer,
    _bool_option,
    _is_punctuation_only,
    _read_json,
    _rust_batch_ids,
    _special_added_tokens,
    _tokenizer_config,
    _tokens_by_id,
)
from bert_jax.errors import UserError

# Byte-level BPE writes the space byte as "Ġ".
_BYTE_SPACE = "\u0120"


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
        config = _tokenizer_config(config_path)
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
        config = _tokenizer_config(config_path)
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
