"""prepare-data and the online stream: objectives, packing, determinism, resume, host slices,
TFDS under mock data, and bad input."""

import collections
import json
import os

import numpy as np
import pytest

from bert_jax import cli, config_files
from bert_jax.data import corpora, masking, prepare
from bert_jax.data.pretraining import PretrainingStream, StreamConfig, permute
from bert_jax.errors import UserError

CONFIG = "configs/data/pretraining.py"
DOCS, SENTS = 200, 12


@pytest.fixture(scope="module")
def marker_vocab(tmp_path_factory):
    """A vocabulary where every word names its (document, sentence): d7s3 -> doc 7, sentence 3."""
    d = tmp_path_factory.mktemp("vocab")
    words = [f"d{i}s{j}" for i in range(DOCS) for j in range(SENTS)]
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words) + "\n")
    return d


@pytest.fixture(scope="module")
def marker_corpus(tmp_path_factory):
    """BERT-format file: DOCS documents of SENTS sentences, each 'dIsJ dIsJ dIsJ' (3 tokens)."""
    d = tmp_path_factory.mktemp("corpus")
    lines = []
    for i in range(DOCS):
        lines += [" ".join([f"d{i}s{j}"] * 3) for j in range(SENTS)] + [""]
    (d / "corpus.txt").write_text("\n".join(lines))
    return d / "corpus.txt"


def make_config(family="bert", **changes):
    overrides = [f"--config.{k}={v}" for k, v in changes.items()]
    return config_files.to_dict(config_files.load(f"{CONFIG}:{family}", overrides))


def prepared(tmp_path, vocab_dir, corpus, **changes):
    cfg = make_config(
        **{
            "corpus.source": "files",
            "corpus.files": str(corpus),
            "tokenizer": str(vocab_dir),
            "max_seq_length": 64,
            "num_workers": 1,
            "docs_per_chunk": 8,
            **changes,
        }
    )
    out = str(tmp_path / "data")
    meta = prepare.prepare(cfg, out, progress=False, log=lambda *a: None)
    return out, meta


def rows_of(data_dir, meta):
    stream = PretrainingStream(
        StreamConfig(data_dir, meta["num_rows"], masking=masking.MaskingConfig(rate=0.0001))
    )
    rows = stream.read(np.arange(meta["num_rows"]))
    from bert_jax.data import records

    return records.decode_rows(rows, meta["max_seq_length"], np.dtype(meta["id_dtype"]), 0)


def ids_to_words(vocab_dir):
    return (vocab_dir / "vocab.txt").read_text().split("\n")


def split_segments(ids, segs, n):
    ids, segs = ids[:n], segs[:n]
    a = ids[1:][segs[1:] == 0][:-1]  # drop [CLS] and A's [SEP]
    b = ids[segs == 1][:-1]
    return a, b


def which(word_ids, words):
    """[(doc, sentence)] of each marker token of a segment."""
    return [tuple(int(x) for x in words[i][1:].split("s")) for i in word_ids]


def test_nsp_pairs_are_consecutive_or_from_another_document(tmp_path, marker_vocab, marker_corpus):
    data, meta = prepared(tmp_path, marker_vocab, marker_corpus)
    words = ids_to_words(marker_vocab)
    batch = rows_of(data, meta)
    labels = batch["label"]
    n_next = n_random = 0
    for ids, segs, label, mask in zip(
        batch["input_ids"], batch["segment_ids"], labels, batch["attention_mask"], strict=True
    ):
        a, b = split_segments(ids, segs, mask.sum())
        a, b = which(a, words), which(b, words)
        if label == 0:  # IsNext: B starts with the sentence after A's last, same document
            n_next += 1
            assert b[0] == (a[-1][0], a[-1][1] + 1)
        else:
            n_random += 1
            assert {d for d, _ in b}.isdisjoint({d for d, _ in a})
    n = n_next + n_random
    assert n == meta["num_rows"] > 100
    # Balance: random-next share within 4.5 sigma of 0.5 (BERT's 50%).
    assert abs(n_random / n - 0.5) <= 4.5 * (0.25 / n) ** 0.5


def test_sop_swaps_in_order_segments(tmp_path, marker_vocab, marker_corpus):
    data, meta = prepared(tmp_path, marker_vocab, marker_corpus, objective="sop")
    words = ids_to_words(marker_vocab)
    batch = rows_of(data, meta)
    swapped = 0
    for ids, segs, label, mask in zip(
        batch["input_ids"], batch["segment_ids"], batch["label"], batch["attention_mask"], strict=True
    ):
        a, b = split_segments(ids, segs, mask.sum())
        a, b = which(a, words), which(b, words)
        first, second = (a, b) if label == 0 else (b, a)
        assert second[0] == (first[-1][0], first[-1][1] + 1)  # consecutive, same document
        swapped += label
    n = meta["num_rows"]
    assert abs(swapped / n - 0.5) <= 4.5 * (0.25 / n) ** 0.5


def test_full_sentences_cross_documents_with_a_separator(tmp_path, marker_vocab, marker_corpus):
    data, meta = prepared(tmp_path, marker_vocab, marker_corpus, objective="full_sentences")
    words = ids_to_words(marker_vocab)
    batch = rows_of(data, meta)
    crossings = 0
    for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
        inner = ids[1 : mask.sum() - 1]
        assert ids[0] == 2 and ids[mask.sum() - 1] == 3
        seps = np.nonzero(inner == 3)[0]
        crossings += len(seps)
        for s in seps:  # a separator sits exactly between two documents
            (d1, _), (d2, s2) = which([inner[s - 1], inner[s + 1]], words)
            assert d2 == d1 + 1 and s2 == 0
    assert crossings > 10
    assert np.all(batch["label"] == -1)
    assert np.mean(batch["attention_mask"].sum(1)) > 55  # rows are (nearly) full


def test_packing_restarts_positions_at_every_sequence(tmp_path, marker_vocab, marker_corpus):
    data, meta = prepared(
        tmp_path, marker_vocab, marker_corpus, objective="electra", pack=True, short_seq_prob=0.5
    )
    assert meta["packed"] and meta["num_examples"] > meta["num_rows"]
    batch = rows_of(data, meta)
    for ids, pack, pos in zip(batch["input_ids"], batch["packing_ids"], batch["position_ids"], strict=True):
        starts = np.nonzero(pos == 0)[0]
        n = (pack > 0).sum()
        assert np.all(ids[starts[starts < n]] == 2)  # every sequence starts with [CLS] at position 0
        assert len(starts[starts < n]) == pack.max()
        assert np.all(np.diff(pack[:n]) >= 0)


def test_same_bytes_whatever_the_workers(tmp_path, marker_vocab, marker_corpus):
    one, _ = prepared(tmp_path / "a", marker_vocab, marker_corpus, num_workers=1)
    two, _ = prepared(tmp_path / "b", marker_vocab, marker_corpus, num_workers=2)
    for name in sorted(os.listdir(one)):
        if name.endswith((".array_record", ".npy")):
            assert (tmp_path / "a/data" / name).read_bytes() == (tmp_path / "b/data" / name).read_bytes()
    a = json.loads((tmp_path / "a" / "data" / "metadata.json").read_text())
    b = json.loads((tmp_path / "b" / "data" / "metadata.json").read_text())
    assert a["config_fingerprint"] == b["config_fingerprint"]
    assert a["num_tokens"] == b["num_tokens"] and a["shards"] == b["shards"]


@pytest.fixture(scope="module")
def stream_data(tmp_path_factory, marker_vocab, marker_corpus):
    tmp = tmp_path_factory.mktemp("stream")
    return prepared(tmp, marker_vocab, marker_corpus, rows_per_shard=50)


def test_permutation_is_a_bijection():
    for n in (1, 2, 7, 100, 1001, 65537):
        out = permute(np.arange(n), n, key=12345)
        assert sorted(out.tolist()) == list(range(n))
    assert not np.array_equal(permute(np.arange(100), 100, 1), permute(np.arange(100), 100, 2))


def test_resume_at_any_step_equals_the_uninterrupted_stream(stream_data):
    data, meta = stream_data
    cfg = StreamConfig(
        data, global_batch_size=16, seed=7, masking=masking.MaskingConfig(strategy="whole_word")
    )
    stream = PretrainingStream(cfg)
    ds = stream.dataset(start_step=0)
    straight = [b for _, b in zip(range(40), ds.as_numpy_iterator(), strict=False)]  # crosses epochs
    assert 40 * 16 > meta["num_rows"]
    rng = np.random.default_rng(0)
    for k in rng.choice(40, 5, replace=False):
        resumed = PretrainingStream(cfg).dataset(start_step=int(k))
        first = next(resumed.as_numpy_iterator())
        for name, value in straight[k].items():
            np.testing.assert_array_equal(first[name], value, err_msg=f"step {k} {name}")
    # Each epoch visits every row exactly once.
    epoch_rows = np.concatenate([b["row_index"] for b in straight])[: meta["num_rows"]]
    assert sorted(epoch_rows.tolist()) == list(range(meta["num_rows"]))
    # Masks are dynamic: in the next epoch the same row (same tokens) is masked at other
    # positions (a short row with one masked word of six may draw it again: rows with 3+).
    n = meta["num_rows"]
    flat = {
        k: np.concatenate([b[k] for b in straight])
        for k in ("row_index", "input_ids", "masked_positions", "masked_ids", "masked_weights")
    }

    def unmasked(i):
        """The original ids of entry i of `flat`, and its masked positions."""
        real = flat["masked_weights"][i] > 0
        positions = flat["masked_positions"][i][real]
        ids = flat["input_ids"][i].copy()
        ids[positions] = flat["masked_ids"][i][real]
        return ids, set(positions.tolist())

    compared = 0
    for j in range(n, len(flat["row_index"])):  # the rows of epoch 1 in these 40 steps
        i = np.flatnonzero(flat["row_index"][:n] == flat["row_index"][j])[0]
        (ids_0, masked_0), (ids_1, masked_1) = unmasked(i), unmasked(j)
        np.testing.assert_array_equal(ids_0, ids_1)
        if len(masked_0) >= 3:
            assert masked_0 != masked_1, f"row {flat['row_index'][j]}: the same mask in epochs 0 and 1"
            compared += 1
    assert compared > 100
    # What a checkpoint records to resume the stream at step 12.
    assert stream.state(12) == {
        "step": 12,
        "seed": 7,
        "global_batch_size": 16,
        "rows": [0, meta["num_rows"]],
        "data_fingerprint": meta["config_fingerprint"],
    }


def test_a_bounded_stream_ends_at_its_stop_step_untuned(stream_data):
    """dataset(start, stop) yields the host batches of steps [start, stop) and then ends, with
    tf.data's autotuning off (its thread stalled the end of 2-process runs: pretraining.py)."""
    stream = PretrainingStream(StreamConfig(stream_data[0], global_batch_size=8, seed=3))
    ds = stream.dataset(start_step=5, stop_step=9)
    assert ds.options().autotune.enabled is False
    got = list(ds.as_numpy_iterator())
    assert len(got) == 4
    for k, batch in zip(range(5, 9), got, strict=True):
        np.testing.assert_array_equal(batch["row_index"], stream.host_batch(k)["row_index"])
        np.testing.assert_array_equal(batch["input_ids"], stream.host_batch(k)["input_ids"])


def test_host_slices_partition_the_global_batch(stream_data):
    data, _ = stream_data
    cfg = StreamConfig(data, global_batch_size=16, seed=3)
    whole = PretrainingStream(cfg).host_batch(5)
    parts = [PretrainingStream(cfg, i, 4).host_batch(5) for i in range(4)]
    for name, value in whole.items():
        np.testing.assert_array_equal(np.concatenate([p[name] for p in parts]), value)
    with pytest.raises(UserError, match="does not split evenly over 3 processes"):
        PretrainingStream(cfg, 0, 3)


def test_resume_state_mismatch_is_refused(stream_data):
    data, _ = stream_data
    stream = PretrainingStream(StreamConfig(data, global_batch_size=16, seed=3))
    assert stream.check_state(stream.state(9)) == 9
    other = PretrainingStream(StreamConfig(data, global_batch_size=32, seed=3))
    with pytest.raises(UserError, match="global_batch_size=16 but the current setup has 32"):
        other.check_state(stream.state(9))


def test_stream_fields(stream_data):
    data, meta = stream_data
    b = PretrainingStream(StreamConfig(data, global_batch_size=8)).host_batch(0)
    assert b["input_ids"].shape == (8, 64) and b["masked_positions"].shape == (8, 20)
    assert set(b) >= {
        "input_ids",
        "segment_ids",
        "position_ids",
        "packing_ids",
        "attention_mask",
        "masked_positions",
        "masked_ids",
        "masked_weights",
        "sentence_label",
    }
    assert set(np.unique(b["sentence_label"])) <= {0, 1}


def test_tfds_corpus_under_mock_data(tmp_path, marker_vocab):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
        stats = collections.Counter()
        docs = list(corpora.tfds_corpus("wikipedia/20230601.en", "train", "text", stats))
        assert len(docs) == 20 and all(isinstance(s, str) for d in docs for s in d)
        cfg = make_config(
            **{
                "corpus.source": "tfds",
                "tokenizer": str(marker_vocab),
                "objective": "electra",
                "num_workers": 1,
            }
        )
        meta = prepare.prepare(cfg, str(tmp_path / "out"), progress=False, log=lambda *a: None)
    assert meta["num_rows"] >= 1


def test_bad_input_is_counted_or_refused(tmp_path, marker_vocab):
    corpus = tmp_path / "bad.txt"
    corpus.write_bytes(
        b"d1s1 d1s1\nd1s2 \xff\xfe d1s2\n\nd2s1 d2s1\n\n" + b"d3s0 " * 400_000 + b"\n\nd4s1\nd4s2\n"
    )
    out, meta = prepared(tmp_path, marker_vocab, corpus, **{"corpus.max_line_chars": 1000})
    assert meta["skipped"]["lines_with_invalid_utf8"] == 1
    assert meta["skipped"]["lines_cut_to_max_line_chars"] == 1
    assert meta["skipped"]["documents_with_one_sentence"] == 2
    # Another config into the same directory: refused, then allowed with overwrite.
    cfg = make_config(
        **{
            "corpus.source": "files",
            "corpus.files": str(corpus),
            "tokenizer": str(marker_vocab),
            "max_seq_length": 32,
            "num_workers": 1,
        }
    )
    with pytest.raises(UserError, match="holds data prepared from other settings"):
        prepare.prepare(cfg, out, progress=False, log=lambda *a: None)
    meta = prepare.prepare(cfg, out, overwrite=True, progress=False, log=lambda *a: None)
    assert meta["max_seq_length"] == 32
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(UserError, match="gave no examples"):
        prepared(tmp_path / "e", marker_vocab, empty)
    with pytest.raises(UserError, match="matches no file"):
        prepared(tmp_path / "f", marker_vocab, tmp_path / "nothing*.txt")
    with pytest.raises(UserError, match="pack=True with objective='nsp'"):
        prepared(tmp_path / "g", marker_vocab, corpus, pack=True)
    with pytest.raises(UserError, match="does not exist"):
        PretrainingStream(StreamConfig(str(tmp_path / "missing"), 8))


def test_cli_prepare_data_errors_are_one_line(tmp_path, capsys):
    rc = cli.main(
        [
            "prepare-data",
            "--config",
            f"{CONFIG}:bert",
            "--output",
            str(tmp_path),
            "--config.max_seq_lenght=64",
        ]
    )
    assert rc == 2 and "no field 'max_seq_lenght'" in capsys.readouterr().err
    rc = cli.main(
        [
            "prepare-data",
            "--config",
            f"{CONFIG}:bert",
            "--output",
            str(tmp_path),
            "--config.max_seq_length=abc",
        ]
    )
    assert rc == 2 and "max_seq_length" in capsys.readouterr().err


def test_cli_train_tokenizer_then_prepare_data_on_the_default_corpus(tmp_path, capsys):
    from bert_jax.data.tokenizers import load_tokenizer

    text = tmp_path / "corpus.txt"
    docs = list(corpora.default_corpus())
    assert len(docs) > 500 and sum(len(s) for d in docs for s in d) > 1_500_000
    text.write_text("\n".join(s for d in docs[:150] for s in d))
    vocab = tmp_path / "vocab"
    assert (
        cli.main(
            [
                "train-tokenizer",
                "--input",
                str(text),
                "--model-type",
                "wordpiece",
                "--vocab-size",
                "2000",
                "--output",
                str(vocab),
            ]
        )
        == 0
    )
    out = tmp_path / "data"
    assert (
        cli.main(
            [
                "prepare-data",
                "--config",
                f"{CONFIG}:electra",
                "--output",
                str(out),
                f"--config.tokenizer={vocab}",
                "--config.pack=True",
                "--config.num_workers=2",
                "--config.max_seq_length=64",
            ]
        )
        == 0
    )
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["vocab_fingerprint"] == load_tokenizer(str(vocab)).vocab_fingerprint()
    assert meta["documents"] == len(docs) and meta["packed"] and meta["workers"] == 2
    assert meta["num_tokens"] > 300_000
    stream = PretrainingStream(StreamConfig(str(out), 32, masking=masking.MaskingConfig(strategy="span")))
    batch = stream.host_batch(3)
    assert batch["masked_weights"].sum() > 32 * 5
    # Same config again: nothing to do, the data is kept.
    assert (
        cli.main(
            [
                "prepare-data",
                "--config",
                f"{CONFIG}:electra",
                "--output",
                str(out),
                f"--config.tokenizer={vocab}",
                "--config.pack=True",
                "--config.num_workers=1",
                "--config.max_seq_length=64",
            ]
        )
        == 0
    )
    assert "already holds this data" in capsys.readouterr().out


def test_document_per_line_files(tmp_path):
    f = tmp_path / "docs.txt"
    f.write_text("First sentence here. Second one follows! A third? Yes.\n\nOther doc. Two.\n")
    docs = list(corpora.file_corpus([str(f)], "documents", collections.Counter()))
    assert docs == [
        ["First sentence here.", "Second one follows!", "A third?", "Yes."],
        ["Other doc.", "Two."],
    ]


def test_other_settings_or_corpus_content_are_refused_by_name(tmp_path, marker_vocab, marker_corpus):
    """Data prepared with other settings is never reused silently: the differing fields are
    named; a corpus file changed since (size/mtime) changes the fingerprint; --overwrite
    prepares again."""
    import shutil

    corpus = tmp_path / "corpus.txt"
    shutil.copyfile(marker_corpus, corpus)
    out, meta = prepared(tmp_path, marker_vocab, corpus)
    assert prepared(tmp_path, marker_vocab, corpus)[1] == meta  # same settings: reused
    with pytest.raises(prepare.OtherData, match=r"other settings \(max_seq_length: 64 -> 128\)"):
        prepared(tmp_path, marker_vocab, corpus, max_seq_length=128)
    with corpus.open("a") as f:
        f.write("\nOne more sentence about the corpus.\n")
    with pytest.raises(prepare.OtherData, match="another vocabulary or corpus content"):
        prepared(tmp_path, marker_vocab, corpus)
    cfg = make_config(
        **{
            "corpus.source": "files",
            "corpus.files": str(corpus),
            "tokenizer": str(marker_vocab),
            "max_seq_length": 128,
            "num_workers": 1,
            "docs_per_chunk": 8,
        }
    )
    again = prepare.prepare(cfg, out, overwrite=True, progress=False, log=lambda *a: None)
    assert again["max_seq_length"] == 128 and again["config_fingerprint"] != meta["config_fingerprint"]
