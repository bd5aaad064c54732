"""train_tokenizer: every model type trains on Python standard-library docstrings (a few hundred
KB), and the directory it writes loads in transformers v5 (AutoTokenizer and the family's own
class) with exactly the ids of our load_tokenizer."""

import json
import os

# Must be set before transformers is imported: the tests never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
from test_tokenizers import stdlib_docs  # noqa: E402 - the real text the parity tests use

from bert_jax.data.tokenizers import (  # noqa: E402
    ByteLevelBPETokenizer,
    SentencePieceTokenizer,
    WordPieceTokenizer,
    load_tokenizer,
)
from bert_jax.data.train_tokenizer import train_tokenizer  # noqa: E402
from bert_jax.errors import UserError  # noqa: E402

# Beyond the corpus: accents, other scripts, numbers, literal special tokens, odd whitespace.
EXTRA_TEXTS = [
    "Café crème brûlée, naïve façade, résumé — ``quoted'' and 'single' 1,000,000 ≈ 3.14159…",
    "Über die Brücke; Straße und Fußgänger. ΟΔΟΣ ΣΟΦΙΑΣ and İstanbul.",
    "北京是中华人民共和国的首都。東京タワー。한국어 문장. Привет, мир! مرحبا",
    "Emoji 😀🎉👍🏽 and ½ ² ① ﬁ ｆｕｌｌ width.",
    "Special tokens written out: [CLS] x [SEP] y [MASK] z <s> <mask> </s> <pad> <unk> [mask]",
    "Tabs\tand\nnewlines\r\nand\u00a0no-break\u2003em\u3000spaces\x85NEL\u1680ogham.",
    "Control \x00 \x07 chars \ufffd and zero\u200bwidth.",
    "",
    "   ",
]

# model_type -> (vocab_size, the transformers class that must load the directory)
CASES = {
    "wordpiece": (2000, "BertTokenizerFast"),
    "unigram": (1500, "AlbertTokenizer"),
    "bpe": (1500, "PreTrainedTokenizerFast"),
    "byte_bpe": (2000, "RobertaTokenizerFast"),
}
OUR_CLASS = {
    "wordpiece": WordPieceTokenizer,
    "unigram": SentencePieceTokenizer,
    "bpe": SentencePieceTokenizer,
    "byte_bpe": ByteLevelBPETokenizer,
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two training files (even paragraphs, with blank lines between some) and held-out text."""
    path = tmp_path_factory.mktemp("corpus")
    train = stdlib_docs()[::2]
    half = len(train) // 2
    files = [path / "a.txt", path / "b.txt"]
    files[0].write_text("\n\n".join(train[:half]) + "\n", encoding="utf-8")
    files[1].write_text("\n".join(train[half:]) + "\n", encoding="utf-8")
    return files, [*stdlib_docs()[1::2], *EXTRA_TEXTS]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus):
    files, _ = corpus
    out = {}
    for model_type, (vocab_size, _) in CASES.items():
        output_dir = tmp_path_factory.mktemp(model_type) / "tok"
        out[model_type] = (
            output_dir,
            train_tokenizer([str(f) for f in files], model_type, vocab_size, str(output_dir)),
        )
    return out


@pytest.mark.parametrize("model_type", list(CASES))
def test_trained_directory_matches_transformers(trained, corpus, model_type):
    import transformers

    output_dir, summary = trained[model_type]
    _, held_out = corpus
    ours = load_tokenizer(output_dir)
    assert type(ours) is OUR_CLASS[model_type]
    expected = ours.encode_batch_ids(held_out)
    for hf in (
        transformers.AutoTokenizer.from_pretrained(str(output_dir)),
        getattr(transformers, CASES[model_type][1]).from_pretrained(str(output_dir)),
    ):
        got = hf(held_out, add_special_tokens=False)["input_ids"]
        for text, theirs, mine in zip(held_out, got, expected, strict=True):
            if theirs != mine and model_type == "unigram":
                # A Viterbi tie: the same pieces in another order ("a"+"aa" = "aa"+"a"), equal
                # scores; sentencepiece and HF's Unigram break ties differently. The training
                # (multithreaded) decides whether a corpus has one.
                assert sorted(theirs) == sorted(mine) and "".join(
                    hf.convert_ids_to_tokens(theirs)
                ) == "".join(hf.convert_ids_to_tokens(mine)), (type(hf).__name__, text)
            else:
                assert theirs == mine, (type(hf).__name__, text)
        assert hf.convert_ids_to_tokens(expected[0]) == ours.tokenize(held_out[0])
        assert frozenset(hf.all_special_ids) == ours.special_ids
        a, b = held_out[0], held_out[1]
        pair = hf(a, b, return_token_type_ids=True)
        assert ours.build_pair(ours.encode_ids(a), ours.encode_ids(b)) == (
            pair["input_ids"],
            pair["token_type_ids"],
        )
    if model_type == "unigram":  # AlbertTokenizer reads spiece.model itself (no tokenizer.json)
        assert not (output_dir / "tokenizer.json").exists()


def test_summary_and_special_tokens_first(trained, corpus):
    files, _ = corpus
    n_lines = sum(1 for f in files for line in f.read_text(encoding="utf-8").splitlines() if line.strip())
    expected_files = {
        "wordpiece": ["tokenizer.json", "tokenizer_config.json", "vocab.txt"],
        "unigram": ["spiece.model", "spiece.vocab", "tokenizer_config.json"],
        "bpe": ["spiece.model", "spiece.vocab", "tokenizer.json", "tokenizer_config.json"],
        "byte_bpe": ["merges.txt", "tokenizer.json", "tokenizer_config.json", "vocab.json"],
    }
    for model_type, (output_dir, summary) in trained.items():
        tok = load_tokenizer(output_dir)
        assert summary["model_type"] == model_type
        assert summary["vocab_size"] == tok.vocab_size == CASES[model_type][0]
        assert summary["lines"] == n_lines
        assert summary["files"] == expected_files[model_type] == sorted(p.name for p in output_dir.iterdir())
        assert summary["fingerprint"] == tok.vocab_fingerprint()
        assert summary["lowercase"] is (model_type != "byte_bpe")
        first5 = [tok.id_to_token(i) for i in range(5)]
        ids = summary["special_ids"]
        assert [ids[k] for k in ("cls", "sep", "pad", "mask", "unk")] == [
            tok.cls_id,
            tok.sep_id,
            tok.pad_id,
            tok.mask_id,
            tok.unk_id,
        ]
        if model_type == "wordpiece":
            assert first5 == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            assert (output_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()[:5] == first5
        elif model_type == "byte_bpe":
            assert first5 == ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
            assert json.loads((output_dir / "vocab.json").read_text(encoding="utf-8"))["<mask>"] == 4
        else:
            assert first5 == ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
            assert tok.model_type == model_type
        assert tok.special_ids == frozenset(range(5))


def test_training_is_deterministic(tmp_path, trained, corpus):
    files, _ = corpus
    for model_type in CASES:
        summary = train_tokenizer(files, model_type, CASES[model_type][0], tmp_path / model_type)
        assert summary["fingerprint"] == trained[model_type][1]["fingerprint"]


@pytest.mark.parametrize("model_type", ["wordpiece", "unigram"])
def test_cased(tmp_path, corpus, model_type):
    import transformers

    files, held_out = corpus
    summary = train_tokenizer(files, model_type, CASES[model_type][0], tmp_path, lowercase=False)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert summary["lowercase"] is False and config["do_lower_case"] is False
    tok = load_tokenizer(tmp_path)
    assert tok.encode_ids("The") != tok.encode_ids("the")
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert hf(held_out, add_special_tokens=False)["input_ids"] == tok.encode_batch_ids(held_out)


def test_overwrite(tmp_path, corpus):
    files, _ = corpus
    out = tmp_path / "tok"
    train_tokenizer(files, "wordpiece", 500, out)
    (out / "README.md").write_text("mine", encoding="utf-8")
    with pytest.raises(UserError, match=f"{out}: output_dir is not empty.*overwrite=True"):
        train_tokenizer(files, "unigram", 500, out)
    assert type(load_tokenizer(out)) is WordPieceTokenizer  # untouched
    train_tokenizer(files, "unigram", 500, out, overwrite=True)
    # The old vocab.txt is gone (it would win in load_tokenizer); other files stay.
    assert not (out / "vocab.txt").exists() and (out / "README.md").read_text(encoding="utf-8") == "mine"
    assert type(load_tokenizer(out)) is SentencePieceTokenizer


def _write(path, text: str | bytes):
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "model_type, vocab_size, match",
    [
        ("wordpiece", 5, r"vocab_size=5 leaves no room beside the 5 special tokens"),
        ("wordpiece", 40, r"vocab_size=40 is too small for wordpiece on this corpus: .* alone need \d+"),
        (
            "unigram",
            40,
            r"vocab_size=40 does not fit this corpus for a unigram SentencePiece model: "
            r"Vocabulary size is smaller than required_chars\. 40 vs \d+",
        ),
        ("bpe", 5, r"vocab_size=5 leaves no room beside the 5 special pieces"),
        (
            "unigram",
            100_000,
            r"vocab_size=100000 does not fit .*: Vocabulary size too high \(100000\)\. "
            r"Please set it to a value <= \d+",
        ),
        ("byte_bpe", 260, r"vocab_size=260 is too small for byte_bpe: .* need 261"),
        ("wordpiece", 0, r"vocab_size must be a positive int, got 0"),
        ("spm", 100, r"model_type='spm' is not one of: wordpiece, unigram, bpe, byte_bpe"),
    ],
)
def test_bad_vocab_size_or_type(tmp_path, corpus, model_type, vocab_size, match):
    files, _ = corpus
    with pytest.raises(UserError, match=match):
        train_tokenizer(files, model_type, vocab_size, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written on failure


def test_bad_inputs(tmp_path, corpus):
    files, _ = corpus
    out = tmp_path / "out"
    with pytest.raises(UserError, match="no input files"):
        train_tokenizer([], "wordpiece", 100, out)
    with pytest.raises(UserError, match="missing.txt: no such input file"):
        train_tokenizer([files[0], tmp_path / "missing.txt"], "wordpiece", 100, out)
    blank = _write(tmp_path / "blank.txt", "\n  \n\t\n")
    empty = _write(tmp_path / "empty.txt", "")
    with pytest.raises(UserError, match="empty corpus: no non-blank line in .*blank.txt, .*empty.txt"):
        train_tokenizer([blank, empty], "unigram", 100, out)
    latin1 = _write(tmp_path / "latin1.txt", "caf\xe9 ok\n".encode("latin-1"))
    with pytest.raises(UserError, match="latin1.txt: not UTF-8 text near line 1"):
        train_tokenizer([latin1], "wordpiece", 100, out)
    # A bad file after good ones: found while training, reported the same way.
    late = _write(tmp_path / "late.txt", b"fine line\n" * 5000 + b"\xff\xfe broken\n")
    with pytest.raises(UserError, match="late.txt: not UTF-8 text"):
        train_tokenizer([files[0], late], "byte_bpe", 300, out)
    with pytest.raises(UserError, match="lowercase=True is not possible for byte_bpe"):
        train_tokenizer(files, "byte_bpe", 300, out, lowercase=True)
    _write(tmp_path / "a_file", "x")
    with pytest.raises(UserError, match="a_file: output_dir exists and is not a directory"):
        train_tokenizer(files, "wordpiece", 100, tmp_path / "a_file")
    assert not out.exists()
