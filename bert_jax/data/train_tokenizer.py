"""Training a vocabulary from text files, for each tokenizer kind of the BERT family.

    bert-jax train-tokenizer --input FILES --model-type wordpiece|unigram|bpe|byte_bpe \\
        --vocab-size N --output DIR [--lowercase/--no-lowercase] [--overwrite]

This module owns turning a corpus into a tokenizer directory that both
`bert_jax.data.tokenizers.load_tokenizer` and `transformers` v5 load with the same ids:

    wordpiece  (BERT, ELECTRA)  `tokenizers` WordPiece trainer behind BERT's normalizer
               vocab.txt ([PAD] [UNK] [CLS] [SEP] [MASK] = 0..4), tokenizer.json,
               tokenizer_config.json (BertTokenizer, do_lower_case)
    unigram    (ALBERT)         sentencepiece unigram on ALBERT-normalized text
               spiece.model, spiece.vocab (<pad> <unk> [CLS] [SEP] [MASK] = 0..4),
               tokenizer_config.json (AlbertTokenizer, do_lower_case, keep_accents)
    bpe        (ALBERT-style)   sentencepiece BPE, files as for unigram plus a tokenizer.json
               that reproduces sentencepiece's BPE for AutoTokenizer (AlbertTokenizer itself
               only knows unigram)
    byte_bpe   (RoBERTa)        `tokenizers` byte-level BPE
               vocab.json + merges.txt (<s> <pad> </s> <unk> <mask> = 0..4), tokenizer.json,
               tokenizer_config.json (RobertaTokenizer, <mask> with lstrip as in roberta-base)

Input is streamed line by line (blank lines skipped): the `tokenizers` trainers keep word
counts, sentencepiece keeps a uniform sample of at most `max_sentences` lines. Training is
deterministic: the same files give the same vocabulary (wordpiece reads them twice for that).
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import sentencepiece as spm
import tokenizers
from tokenizers import AddedToken, decoders, normalizers, pre_tokenizers, processors, trainers
from tokenizers import models as tk_models

from bert_jax import storage
from bert_jax.data.tokenizers import load_tokenizer, sentencepiece_prenormalizer
from bert_jax.errors import UserError

MODEL_TYPES = ("wordpiece", "unigram", "bpe", "byte_bpe")

# Special tokens of each family, in id order.
WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SENTENCEPIECE_SPECIALS = ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]")
BYTE_BPE_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")

# Every file this module may write; overwrite=True removes them first, so that no file of an
# earlier kind decides what load_tokenizer finds.
OUTPUT_FILES = (
    "vocab.txt",
    "spiece.model",
    "spiece.vocab",
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def train_tokenizer(
    input_files: Sequence[str | os.PathLike],
    model_type: str,
    vocab_size: int,
    output_dir: str | os.PathLike,
    *,
    lowercase: bool | None = None,
    overwrite: bool = False,
    min_frequency: int = 2,
    character_coverage: float = 0.99995,
    max_sentences: int = 10_000_000,
    model_max_length: int = 512,
    seed: int = 0,
) -> dict:
    """Train a `model_type` vocabulary of `vocab_size` ids on `input_files`; write it to `output_dir`.

    lowercase: None picks the family's convention (uncased for wordpiece / unigram / bpe, cased
        for byte_bpe; byte-level BPE cannot be lowercased: RobertaTokenizer has no such step).
    overwrite: allow a non-empty `output_dir` (tokenizer files of any kind in it are replaced).
    min_frequency: pairs seen fewer times are not merged (wordpiece, byte_bpe).
    character_coverage: share of characters the model must cover (unigram, bpe; ALBERT's value).
    max_sentences: sentencepiece trains on a uniform sample of at most this many lines.
    model_max_length: written to tokenizer_config.json for transformers.
    seed: sentencepiece's sampling seed.

    Returns a summary: model_type, vocab_size (as trained; the `tokenizers` trainers may stop
    short of the request on a small corpus), lowercase, lines read, special-token ids, files
    written, output_dir and the vocab fingerprint. Raises UserError for: an unknown model_type;
    no input files or one that is missing, unreadable or not UTF-8; a corpus with no text; a
    vocab_size too small for the special tokens and the corpus's alphabet (or, for
    sentencepiece, too large for the corpus); a non-empty output_dir without overwrite.
    """
    if model_type not in MODEL_TYPES:
        raise UserError(f"model_type={model_type!r} is not one of: {', '.join(MODEL_TYPES)}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= 0:
        raise UserError(f"vocab_size must be a positive int, got {vocab_size!r}")
    if model_type == "byte_bpe":
        if lowercase:
            raise UserError(
                "lowercase=True is not possible for byte_bpe: RoBERTa's byte-level BPE is cased and "
                "RobertaTokenizer has no lowercasing step; lowercase the corpus itself instead"
            )
        lowercase = False
    elif lowercase is None:
        lowercase = True
    files = _check_inputs(input_files)
    output_dir = str(output_dir)
    _check_output_dir(output_dir, overwrite)

    reader = _LineReader(files)
    trainer = {
        "wordpiece": _train_wordpiece,
        "unigram": _train_sentencepiece,
        "bpe": _train_sentencepiece,
        "byte_bpe": _train_byte_bpe,
    }[model_type]
    outputs = trainer(
        reader,
        model_type=model_type,
        vocab_size=vocab_size,
        lowercase=lowercase,
        min_frequency=min_frequency,
        character_coverage=character_coverage,
        max_sentences=max_sentences,
        model_max_length=model_max_length,
        seed=seed,
    )

    # Each file lands whole (temporary name + rename, or one upload); tokenizer_config.json,
    # which the loader reads for options, goes last, and files of another kind are removed
    # only after the new ones are all in place.
    storage.makedirs(output_dir)
    for name in sorted(outputs, key=lambda n: n == "tokenizer_config.json"):
        storage.write_atomic(storage.join(output_dir, name), outputs[name])
    for name in OUTPUT_FILES:
        if name not in outputs:
            storage.remove(storage.join(output_dir, name))

    tokenizer = load_tokenizer(output_dir)
    return {
        "model_type": model_type,
        "vocab_size": tokenizer.vocab_size,
        "lowercase": lowercase,
        "lines": reader.lines,
        "special_ids": {
            "cls": tokenizer.cls_id,
            "sep": tokenizer.sep_id,
            "pad": tokenizer.pad_id,
            "mask": tokenizer.mask_id,
            "unk": tokenizer.unk_id,
        },
        "files": sorted(outputs),
        "output_dir": output_dir,
        "fingerprint": tokenizer.vocab_fingerprint(),
    }


# ---------------------------------------------------------------------------------------------
# Input


class _LineReader:
    """Non-blank lines of the input files, streamed; iterable once per `__iter__` call.

    An error while reading is kept in `error` and ends the stream (the trainers call back into
    Python from Rust / C++, where a raised exception would lose its message); `check()` raises it.
    """

    def __init__(self, files: list[Path]):
        self.files = files
        self.lines = 0
        self.error: UserError | None = None

    def __iter__(self) -> Iterator[str]:
        self.lines = 0
        for path in self.files:
            line_no = 0
            try:
                with open(path, encoding="utf-8") as f:
                    for line in f:
                        line_no += 1
                        line = line.strip()
                        if line:
                            self.lines += 1
                            yield line
            except UnicodeDecodeError as e:
                self.error = UserError(f"{path}: not UTF-8 text near line {line_no + 1}: {e.reason}")
                return
            except OSError as e:
                self.error = UserError(f"{path}: cannot read: {e}")
                return

    def check(self) -> None:
        if self.error is not None:
            raise self.error
        if self.lines == 0:
            raise UserError(f"empty corpus: no non-blank line in {', '.join(map(str, self.files))}")


def _check_inputs(input_files) -> list[Path]:
    if isinstance(input_files, (str, os.PathLike)):
        input_files = [input_files]
    files = [Path(storage.fetch(f)) for f in input_files]  # gs:// corpora are read from a local copy
    if not files:
        raise UserError("no input files: give at least one text file (one sentence or paragraph per line)")
    for path in files:
        if not path.is_file():
            raise UserError(f"{path}: no such input file")
    # Fail before training (minutes on a real corpus) if there is no text at all.
    reader = _LineReader(files)
    next(iter(reader), None)
    if reader.error is None and reader.lines == 0:
        reader.check()
    if reader.error is not None:
        raise reader.error
    return files


def _check_output_dir(output_dir: str, overwrite: bool) -> None:
    if storage.isfile(output_dir):
        raise UserError(f"{output_dir}: output_dir exists and is not a directory")
    if storage.isdir(output_dir) and storage.listdir(output_dir) and not overwrite:
        raise UserError(f"{output_dir}: output_dir is not empty; choose another or pass overwrite=True")


# ---------------------------------------------------------------------------------------------
# Trainers: each returns {file name: content}


def _train_wordpiece(reader, *, vocab_size, lowercase, min_frequency, model_max_length, **_):
    if vocab_size <= len(WORDPIECE_SPECIALS):
        raise UserError(
            f"vocab_size={vocab_size} leaves no room beside the {len(WORDPIECE_SPECIALS)} "
            f"special tokens {' '.join(WORDPIECE_SPECIALS)}"
        )
    unk = WORDPIECE_SPECIALS[1]

    def bert_tokenizer(vocab=None) -> tokenizers.Tokenizer:
        tk = tokenizers.Tokenizer(tk_models.WordPiece(vocab, unk_token=unk, max_input_chars_per_word=100))
        tk.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
        )
        tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tk.decoder = decoders.WordPiece(prefix="##")
        return tk

    def fit(size: int, fixed: list[str]) -> dict[str, int]:
        tk = bert_tokenizer()
        trainer = trainers.WordPieceTrainer(
            vocab_size=size,
            min_frequency=min_frequency,
            special_tokens=[*WORDPIECE_SPECIALS, *fixed],
            limit_alphabet=1000,
            continuing_subword_prefix="##",
            show_progress=False,
        )
        tk.train_from_iterator(iter(reader), trainer)
        reader.check()
        return tk.get_vocab()

    # The trainer numbers the "##x" symbols in hash-map order, and breaks ties between equally
    # frequent merges by those numbers: the same corpus would give a different vocabulary on
    # every run. A first pass (no merges) finds the symbols; fixing their order makes the
    # training deterministic (up to ties at the 1000-character alphabet limit).
    alphabet = fit(1, [])
    _check_trained_size(len(alphabet), vocab_size, "wordpiece")
    continuations = sorted(t for t in alphabet if t.startswith("##") and len(t) == 3)
    vocab = fit(vocab_size, continuations)
    _check_trained_size(len(vocab), vocab_size, "wordpiece")
    tokens = sorted(vocab, key=vocab.get)
    assert [vocab[t] for t in tokens] == list(range(len(tokens))), "trainer ids are not contiguous"

    # Rebuilt from the vocabulary, so that only the five real special tokens are special.
    tk = bert_tokenizer(vocab)
    tk.add_special_tokens([AddedToken(t, special=True) for t in WORDPIECE_SPECIALS])
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": lowercase,
        "strip_accents": None,
        "tokenize_chinese_chars": True,
        **dict(
            zip(
                ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"),
                WORDPIECE_SPECIALS,
                strict=True,
            )
        ),
        "model_max_length": model_max_length,
    }
    return {
        "vocab.txt": "".join(token + "\n" for token in tokens),
        "tokenizer.json": tk.to_str(pretty=True),
        "tokenizer_config.json": _json(config),
    }


def _train_byte_bpe(reader, *, vocab_size, min_frequency, model_max_length, **_):
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    needed = len(BYTE_BPE_SPECIALS) + len(alphabet)
    if vocab_size < needed:
        raise UserError(
            f"vocab_size={vocab_size} is too small for byte_bpe: the special tokens and the "
            f"256 byte symbols alone need {needed}"
        )
    tk = tokenizers.Tokenizer(tk_models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(BYTE_BPE_SPECIALS),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tk.train_from_iterator(iter(reader), trainer)
    reader.check()
    _check_trained_size(tk.get_vocab_size(), vocab_size, "byte_bpe")
    cls, pad, sep, unk, mask = BYTE_BPE_SPECIALS
    tk.post_processor = processors.RobertaProcessing(
        (sep, 2), (cls, 0), trim_offsets=True, add_prefix_space=False
    )
    spec = json.loads(tk.to_str())
    # roberta-base's <mask> swallows the space before it ("a <mask>" -> "a", "<mask>").
    for token in spec["added_tokens"]:
        token["lstrip"] = token["content"] == mask
    vocab = spec["model"]["vocab"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    flags = ("content", "lstrip", "rstrip", "normalized", "single_word", "special")
    added = {str(t["id"]): {k: t[k] for k in flags} for t in spec["added_tokens"]}
    config = {
        "tokenizer_class": "RobertaTokenizer",
        "add_prefix_space": False,
        "trim_offsets": True,
        "errors": "replace",
        "bos_token": cls,
        "eos_token": sep,
        "sep_token": sep,
        "cls_token": cls,
        "unk_token": unk,
        "pad_token": pad,
        "mask_token": mask,
        "added_tokens_decoder": added,
        "model_max_length": model_max_length,
    }
    return {
        "vocab.json": _json(vocab),
        "merges.txt": "#version: 0.2\n" + "".join(m + "\n" for m in merges),
        "tokenizer.json": _json(spec),
        "tokenizer_config.json": _json(config),
    }


def _train_sentencepiece(
    reader,
    *,
    model_type,
    vocab_size,
    lowercase,
    character_coverage,
    max_sentences,
    model_max_length,
    seed,
    **_,
):
    from sentencepiece import sentencepiece_model_pb2

    if vocab_size <= len(SENTENCEPIECE_SPECIALS):
        raise UserError(
            f"vocab_size={vocab_size} leaves no room beside the {len(SENTENCEPIECE_SPECIALS)} "
            f"special pieces {' '.join(SENTENCEPIECE_SPECIALS)}"
        )
    # The model learns pieces of text as AlbertTokenizer will hand it over.
    normalize = sentencepiece_prenormalizer(do_lower_case=lowercase, keep_accents=False).normalize_str
    model = io.BytesIO()
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=(normalize(line) for line in reader),
            model_writer=model,
            model_type=model_type,
            vocab_size=vocab_size,
            pad_id=0,
            unk_id=1,
            bos_id=-1,
            eos_id=-1,
            control_symbols=list(SENTENCEPIECE_SPECIALS[2:]),
            character_coverage=character_coverage,
            input_sentence_size=max_sentences,
            shuffle_input_sentence=True,
            max_sentence_length=1 << 16,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
    except RuntimeError as e:
        reader.check()
        # sentencepiece says what fits ("Vocabulary size is smaller than required_chars. 40 vs
        # 74. ..." or "Vocabulary size too high (100000). Please set it to a value <= 8123."),
        # after a prefix naming its source line and failed check.
        message = re.sub(r"^\w+: \S+\(\d+\) \[.*?\] ", "", str(e).strip())
        raise UserError(
            f"vocab_size={vocab_size} does not fit this corpus for a {model_type} "
            f"SentencePiece model: {message}"
        ) from None
    reader.check()
    model_proto = model.getvalue()
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_proto)
    pad, unk, cls, sep, mask = SENTENCEPIECE_SPECIALS
    config = {
        "tokenizer_class": "AlbertTokenizer",
        "do_lower_case": lowercase,
        "keep_accents": False,
        "remove_space": True,
        "bos_token": cls,
        "eos_token": sep,
        "unk_token": unk,
        "sep_token": sep,
        "pad_token": pad,
        "cls_token": cls,
        "mask_token": mask,
        "model_max_length": model_max_length,
    }
    outputs = {
        "spiece.model": model_proto,
        "spiece.vocab": "".join(f"{p.piece}\t{p.score:g}\n" for p in proto.pieces),
    }
    if model_type == "bpe":
        # AlbertTokenizer would read a BPE model as unigram: hand transformers a tokenizer.json.
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        outputs["tokenizer.json"] = _sentencepiece_bpe_json(proto, lowercase)
    outputs["tokenizer_config.json"] = _json(config)
    return outputs


def _sentencepiece_bpe_json(proto, lowercase: bool) -> str:
    """A `tokenizers` BPE that segments exactly as sentencepiece's BPE model `proto`.

    sentencepiece merges, at each step, the adjacent pair whose union is the highest-scoring
    piece; so every split of a piece into two pieces is a merge, ranked by that piece's score.
    """
    normal = 1
    kinds = {p.piece: p.type for p in proto.pieces}
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    ranked = []
    for i, p in enumerate(proto.pieces):
        if p.type != normal:
            continue
        for k in range(1, len(p.piece)):
            left, right = p.piece[:k], p.piece[k:]
            if kinds.get(left) == normal and kinds.get(right) == normal:
                ranked.append((-p.score, i, vocab[left], vocab[right], left, right))
    ranked.sort()
    pad, unk, cls, sep, mask = SENTENCEPIECE_SPECIALS
    tk = tokenizers.Tokenizer(
        tk_models.BPE(
            vocab=vocab,
            merges=[(r[4], r[5]) for r in ranked],
            unk_token=unk,
            fuse_unk=True,
            byte_fallback=False,
        )
    )
    # AlbertTokenizer's pipeline: ALBERT's pre-normalization, then the model's own (charsmap).
    tk.normalizer = normalizers.Sequence(
        [
            sentencepiece_prenormalizer(do_lower_case=lowercase, keep_accents=False),
            normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap),
        ]
    )
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always"),
        ]
    )
    tk.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tk.add_special_tokens([AddedToken(t, special=True) for t in SENTENCEPIECE_SPECIALS])
    tk.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
    )
    return tk.to_str(pretty=True)


def _check_trained_size(trained: int, vocab_size: int, model_type: str) -> None:
    """The trainers keep the whole alphabet even past `vocab_size`: refuse that."""
    if trained > vocab_size:
        raise UserError(
            f"vocab_size={vocab_size} is too small for {model_type} on this corpus: the special tokens "
            f"and the corpus's alphabet alone need {trained}"
        )


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2) + "\n"
