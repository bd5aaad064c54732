"""SentencePiece (ALBERT): a unigram or BPE model behind ALBERT's pre-normalization."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm
import tokenizers
from tokenizers import normalizers

from bert_jax.data.tokenizers.base import (
    BERT_TEMPLATE,
    Tokenizer,
    _bool_option,
    _is_punctuation_only,
    _special_names,
    _tokenizer_config,
)
from bert_jax.errors import UserError

# Rust's `char::is_whitespace` (Unicode White_Space), where HF's WhitespaceSplit splits words.
_WHITESPACE_CHARS = "\t\n\x0b\x0c\r \x85\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"

# SentencePiece marks a word's start with U+2581.
_SP_SPACE = "\u2581"

# sentencepiece_model.proto enums.
_SP_MODEL_TYPES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}
_SP_UNKNOWN, _SP_CONTROL, _SP_USER_DEFINED, _SP_BYTE = 2, 3, 4, 6


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
    steps.append(normalizers.Replace(tokenizers.Regex(f"[{_WHITESPACE_CHARS}]"), " "))
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
        config = _tokenizer_config(config_path)
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


def _special_pattern(tokens: Iterable[str]) -> re.Pattern:
    """Splits text around special tokens; longest first, so overlapping names match
    leftmost-longest like HF."""
    by_length = sorted(set(tokens), key=len, reverse=True)
    return re.compile("(" + "|".join(map(re.escape, by_length)) + ")")
