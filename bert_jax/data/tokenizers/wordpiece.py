"""WordPiece (BERT, ELECTRA): HF's pipeline in Rust `tokenizers`, and the same ids from
TensorFlow ops for use inside tf.data."""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Iterator, Sequence
from pathlib import Path

import tokenizers
from tokenizers import AddedToken, normalizers, pre_tokenizers
from tokenizers import models as tk_models

from bert_jax.data.tokenizers.base import (
    BERT_TEMPLATE,
    Tokenizer,
    _read_json,
    _rust_batch_ids,
    _special_names,
    _tokenizer_config,
    _tokens_by_id,
)
from bert_jax.errors import UserError

# WordPiece gives up on longer words (HF `max_input_chars_per_word`).
_MAX_WORD_CHARS = 100
_CONTINUATION = "##"


class WordPieceTokenizer(Tokenizer):
    """BERT's tokenizer as BertTokenizerFast builds it in Rust `tokenizers`: BertNormalizer,
    BertPreTokenizer, WordPiece, and special tokens matched in the raw text; batches are
    encoded in parallel.

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
        model = tk_models.WordPiece(
            self._vocab,
            unk_token=unk_token,
            max_input_chars_per_word=_MAX_WORD_CHARS,
            continuing_subword_prefix=_CONTINUATION,
        )
        rust = tokenizers.Tokenizer(model)
        rust.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=tokenize_chinese_chars,
            strip_accents=self.strip_accents,
            lowercase=do_lower_case,
        )
        rust.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        rust.add_special_tokens([AddedToken(t, special=True) for t in dict.fromkeys(self._special_tokens)])
        self._rust = rust
        self._tf_fn = None

    @classmethod
    def from_dir(cls, path: str | Path) -> WordPieceTokenizer:
        """Load `vocab.txt` and, if present, `tokenizer_config.json` from a checkpoint dir.

        Raises UserError naming the file when vocab.txt is missing or unreadable, the config is
        malformed, or the vocab lacks one of the special tokens the config names.
        """
        return cls.from_vocab_file(Path(path) / "vocab.txt")

    @classmethod
    def from_vocab_file(cls, vocab_path: str | Path) -> WordPieceTokenizer:
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
        options = _options(vocab_path.parent / "tokenizer_config.json")
        return cls(vocab, **options, source=str(vocab_path))

    @classmethod
    def from_tokenizer_json(cls, json_path: str | Path) -> WordPieceTokenizer:
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
        options = _options(json_path.parent / "tokenizer_config.json")
        # The tokenizer.json itself decides normalization; the config only names special tokens.
        options.update(
            do_lower_case=bool(normalizer.get("lowercase", True)),
            strip_accents=normalizer.get("strip_accents"),
            tokenize_chinese_chars=bool(normalizer.get("handle_chinese_chars", True)),
        )
        options.setdefault("unk_token", model.get("unk_token", "[UNK]"))
        return cls(tokens, **options, source=str(json_path))

    def encode_batch_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return _rust_batch_ids(self._rust, texts)

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
        written as regex/ICU ops whose character classes are read off the Rust pipeline itself
        (`_tf_char_classes`), so they follow HF's Unicode 8.0 categories, not TF's.
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


def _options(config_path: Path) -> dict:
    """WordPiece options from a tokenizer_config.json; BERT defaults when it is absent."""
    config = _tokenizer_config(config_path)
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
    """RE2 character classes of the TensorFlow pipeline, each the code points that HF's Rust
    BertNormalizer / BertPreTokenizer treat that way: "whitespace" (becomes " "), "deleted"
    (clean_text drops it), "chinese" (padded with spaces), "nonspacing_mark" (strip_accents
    drops it, or all of its NFD) and "punctuation" (split off as a word of its own).

    Asking `tokenizers` keeps TF's newer Unicode tables out; a few batched calls over all code
    points take under a second.
    """

    def bert_normalizer(**option):
        off = dict(clean_text=False, handle_chinese_chars=False, strip_accents=False, lowercase=False)
        return normalizers.BertNormalizer(**{**off, **option}).normalize_str

    def where(chars, flags) -> Iterator[int]:
        return map(ord, itertools.compress(chars, flags))

    clean = bert_normalizer(clean_text=True)
    pad_chinese = bert_normalizer(handle_chinese_chars=True)
    strip_marks = bert_normalizer(strip_accents=True)
    split = pre_tokenizers.BertPreTokenizer().pre_tokenize_str
    members = {name: [] for name in ("whitespace", "deleted", "chinese", "nonspacing_mark", "punctuation")}
    for chars in _code_point_blocks():
        cleaned = _per_char(clean, chars)
        members["whitespace"] += where(chars, map(" ".__eq__, cleaned))
        members["deleted"] += where(chars, map("".__eq__, cleaned))
        members["chinese"] += where(chars, map(operator.ne, _per_char(pad_chinese, chars), chars))
        members["nonspacing_mark"] += where(chars, map("".__eq__, _per_char(strip_marks, chars)))
        # Punctuation comes out as one-character pieces; so does a lone other character between
        # two of them, which "a" + it tells apart (it merges with the "a").
        for piece, _ in split("".join(chars)):
            if len(piece) == 1 and len(split(f"a{piece}")) == 2:
                members["punctuation"].append(ord(piece))
    return {name: _re2_class(code_points) for name, code_points in members.items()}


def _per_char(normalize, chars: list[str]) -> list[str]:
    """`normalize` of each character, in one call for a block of non-ASCII characters: "#" passes
    the BertNormalizer steps used here unchanged and no non-ASCII character becomes "#"."""
    if len(chars) == 1:
        return [normalize(chars[0])]
    out = normalize("#".join(chars)).split("#")
    assert len(out) == len(chars), f"'#' does not separate U+{ord(chars[0]):04X}.."
    return out


def _code_point_blocks(size: int = 1 << 12):
    """Lists of characters covering every code point but the surrogates: ASCII one at a time,
    the rest `size` at a time (pipelines' offset bookkeeping grows with the text)."""
    for cp in range(0x80):
        yield [chr(cp)]
    for lo, hi in ((0x80, 0xD800), (0xE000, 0x110000)):
        for start in range(lo, hi, size):
            yield [chr(cp) for cp in range(start, min(start + size, hi))]


def _re2_class(code_points: list[int]) -> str:
    """An RE2 class of sorted `code_points`, as ranges."""
    ranges: list[list[int]] = []
    for cp in code_points:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return "[" + "".join(f"\\x{{{lo:x}}}-\\x{{{hi:x}}}" for lo, hi in ranges) + "]"
