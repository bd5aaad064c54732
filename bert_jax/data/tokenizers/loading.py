"""`load_tokenizer`: which tokenizer kind a directory or file holds, loaded."""

from __future__ import annotations

from pathlib import Path

from bert_jax.data.tokenizers.base import Tokenizer, _read_json
from bert_jax.data.tokenizers.byte_bpe import ByteLevelBPETokenizer
from bert_jax.data.tokenizers.sentencepiece import SentencePieceTokenizer
from bert_jax.data.tokenizers.wordpiece import WordPieceTokenizer
from bert_jax.errors import UserError


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer stored at `path`, a checkpoint/tokenizer directory or one file.

    A directory is searched in this order (with tokenizer_config.json read for options):
      vocab.txt                    -> WordPieceTokenizer       (BERT, ELECTRA)
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
        return WordPieceTokenizer.from_dir(path)
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
        return WordPieceTokenizer.from_vocab_file(path)
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
        return WordPieceTokenizer.from_tokenizer_json(path)
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
