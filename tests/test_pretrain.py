"""Pretraining end to end on tiny presets: every family learns, sharded runs match one device,
2 processes match 1, resume is bit-exact after SIGKILL, SIGTERM saves, accumulation is exact,
and bad setups fail before compiling."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import config_files
from bert_jax.data import corpora, prepare
from bert_jax.errors import UserError
from bert_jax.training import pretrain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_KINDS = {"bert": "nsp", "roberta": "full_sentences", "albert": "sop", "electra": "electra"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """One small vocabulary and one prepared dataset per objective (200 documents of the
    embedded corpus, rows of 64 tokens)."""
    from bert_jax.data.train_tokenizer import train_tokenizer

    tmp = tmp_path_factory.mktemp("pretrain-data")
    text = tmp / "corpus.txt"
    docs = list(corpora.default_corpus())[:200]
    text.write_text("\n\n".join("\n".join(d) for d in docs) + "\n")
    train_tokenizer([str(text)], "wordpiece", 2000, str(tmp / "vocab"))
    out = {}
    for family, kind in DATA_KINDS.items():
        cfg = config_files.to_dict(config_files.load(f"{ROOT}/configs/data/pretraining.py:{family}", [
            "--config.corpus.source=files", f"--config.corpus.files={text}",
            f"--config.tokenizer={tmp / 'vocab'}", "--config.max_seq_length=64",
            "--config.num_workers=1"]))
        prepare.prepare(cfg, str(tmp / kind), progress=False, log=lambda *a: None)
        out[family] = str(tmp / kind)
    return out


def overrides(data_dir, **fields):
    base = {"data.dir": data_dir, "data.eval_rows": 32, "train.steps": 12, "train.global_batch_size": 16,
            "train.log_every": 1, "train.eval_every": 1000, "train.checkpoint_every": 1000,
            "train.eval_batches": 2, "train.peak_flops": 1e11, "optim.warmup_steps": 0,
            "optim.decay": "constant", "optim.learning_rate": 1e-3, "masking.max_predictions": 10}
    base.update(fields)
    return [f"--config.{k}={v}" for k, v in base.items()]


def config_for(family, data_dir, **fields):
    return config_files.load(f"{ROOT}/configs/pretrain/{family}.py:size=tiny", overrides(data_dir, **fields))


def losses(summary):
    return np.array([row["loss"] for row in summary["train"]])


@pytest.mark.parametrize("family", ["bert", "roberta", "albert", "electra"])
def test_each_family_learns(family, data, tmp_path):
    cfg = config_for(family, data[family], **{"train.steps": 30, "train.log_every": 1})
    summary = pretrain.train_and_evaluate(cfg, str(tmp_path), log=lambda *a: None)
    loss = losses(summary)
    assert len(loss) == 30 and np.all(np.isfinite(loss))
    assert loss[-5:].mean() < loss[:5].mean() - 0.05, loss
    key = "rtd_accuracy" if family == "electra" else "mlm_accuracy"
    assert summary["final_eval"][key] > summary["first_eval"][key]
    assert os.listdir(tmp_path / "tensorboard")  # event files


def test_sharded_mesh_matches_one_device(data, tmp_path):
    runs = {}
    for name, mesh in {"one": (1, 1, 1), "2x2x2": (2, 2, 2)}.items():
        cfg = config_for("bert", data["bert"], **{"train.steps": 6, "mesh.data": mesh[0],
                                                  "mesh.fsdp": mesh[1], "mesh.tensor": mesh[2]})
        runs[name] = losses(pretrain.train_and_evaluate(cfg, str(tmp_path / name), log=lambda *a: None))
    np.testing.assert_allclose(runs["2x2x2"], runs["one"], rtol=1e-5)


def test_gradient_accumulation_equals_one_big_step(data, tmp_path):
    params = {}
    for m in (1, 4):
        cfg = config_for("bert", data["bert"], **{"train.steps": 3, "train.microbatches": m,
                                                  "train.global_batch_size": 32,
                                                  "model.hidden_dropout": 0.0,
                                                  "model.attention_dropout": 0.0,
                                                  "train.checkpoint_every": 3})
        pretrain.train_and_evaluate(cfg, str(tmp_path / f"m{m}"), log=lambda *a: None)
        params[m] = pretrain.load_params(str(tmp_path / f"m{m}"))[2]
    for a, b in zip(jax.tree.leaves(params[1]), jax.tree.leaves(params[4]), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-6)


def _cli(workdir, data_dir, *extra, env=None, **fields):
    cmd = [sys.executable, "-m", "bert_jax.cli", "pretrain", "--config",
           f"{ROOT}/configs/pretrain/bert.py:size=tiny", "--workdir", str(workdir),
           *overrides(data_dir, **fields), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})


def _summary(workdir):
    return json.loads((workdir / "summary.json").read_text())


def test_two_processes_match_one(data, tmp_path):
    one = _cli(tmp_path / "one", data["bert"], **{"train.steps": 4})
    assert one.wait(timeout=600) == 0, one.stdout.read()
    port = 20000 + os.getpid() % 10000
    procs = [_cli(tmp_path / "two", data["bert"], env={
        "BERT_JAX_COORDINATOR": f"127.0.0.1:{port}", "BERT_JAX_NUM_PROCESSES": "2",
        "BERT_JAX_PROCESS_ID": str(i), "BERT_JAX_LOCAL_DEVICES": "4",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}, **{"train.steps": 4})
        for i in range(2)]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stdout.read()
    np.testing.assert_allclose(losses(_summary(tmp_path / "two")), losses(_summary(tmp_path / "one")),
                               rtol=1e-5)


def _wait_for_checkpoint(workdir, step, proc, timeout=600):
    path = workdir / "checkpoints" / str(step)
    start = time.time()
    while not path.is_dir():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() - start < timeout
        time.sleep(0.01)


def test_resume_after_sigkill_is_bit_exact(data, tmp_path):
    fields = {"train.steps": 16, "train.checkpoint_every": 4}
    straight = _cli(tmp_path / "straight", data["bert"], **fields)
    assert straight.wait(timeout=600) == 0, straight.stdout.read()

    killed = _cli(tmp_path / "killed", data["bert"], **fields)
    _wait_for_checkpoint(tmp_path / "killed", 4, killed)
    with pytest.raises(UserError, match=f"in use by a running pretrain .*pid {killed.pid}"):
        pretrain.train_and_evaluate(config_for("bert", data["bert"], **fields), str(tmp_path / "killed"))
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "summary.json").exists()  # it really died mid-run
    resumed = _cli(tmp_path / "killed", data["bert"], **fields)
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0 and "resumed from" in out, out
    assert "cuInit" not in out and "cudart_stub" not in out, out  # a quiet start (tf_setup)
    start = int(out.split("resumed from")[1].split("at step ")[1].split()[0])
    assert start >= 4
    a, b = _summary(tmp_path / "straight"), _summary(tmp_path / "killed")
    np.testing.assert_array_equal(losses(b), losses(a)[start:])
    pa = pretrain.load_params(str(tmp_path / "straight"))[2]
    pb = pretrain.load_params(str(tmp_path / "killed"))[2]
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sigterm_saves_at_the_next_step_and_exits_zero(data, tmp_path):
    proc = _cli(tmp_path, data["bert"], **{"train.steps": 400, "train.checkpoint_every": 2})
    _wait_for_checkpoint(tmp_path, 2, proc)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out
    assert "SIGTERM: saved step" in out
    step = int(out.split("SIGTERM: saved step ")[1].split()[0])
    assert step < 400
    assert str(step) in os.listdir(tmp_path / "checkpoints")


def test_resume_onto_another_mesh(data, tmp_path):
    straight = config_for("bert", data["bert"], **{"train.steps": 6, "mesh.fsdp": 2, "mesh.tensor": 2})
    expected = losses(pretrain.train_and_evaluate(straight, str(tmp_path / "a"), log=lambda *a: None))
    first = config_for("bert", data["bert"], **{"train.steps": 3, "mesh.fsdp": 2, "mesh.tensor": 2})
    pretrain.train_and_evaluate(first, str(tmp_path / "b"), log=lambda *a: None)
    for mesh in ((1, 1, 1), (1, 2, 2)):  # restored on 1 device, then on 4 as 2x2
        steps = 5 if mesh == (1, 1, 1) else 6
        cfg = config_for("bert", data["bert"], **{"train.steps": steps, "mesh.data": mesh[0],
                                                  "mesh.fsdp": mesh[1], "mesh.tensor": mesh[2]})
        got = losses(pretrain.train_and_evaluate(cfg, str(tmp_path / "b"), log=lambda *a: None))
        np.testing.assert_allclose(got, expected[steps - len(got):steps], rtol=1e-5)


def test_non_finite_steps_stop_with_a_clear_error(data, tmp_path):
    cfg = config_for("bert", data["bert"], **{"optim.learning_rate": 1e30, "optim.clip_norm": 0.0,
                                              "train.max_nonfinite_steps": 3})
    with pytest.raises(UserError, match="consecutive steps had non-finite loss"):
        pretrain.train_and_evaluate(cfg, str(tmp_path), log=lambda *a: None)


def _nan_on_steps(monkeypatch, data_dir, cfg, steps):
    """Make the bert objective's loss NaN on the given (1-based) steps, recognised on device by
    the first row of the step's batch."""
    import types

    from bert_jax.data import masking as masking_lib
    from bert_jax.data.pretraining import PretrainingStream, StreamConfig
    from bert_jax.objectives import OBJECTIVES

    n_train = prepare.read_metadata(data_dir)["num_rows"] - cfg.data.eval_rows
    stream = PretrainingStream(StreamConfig(
        data_dir, cfg.train.global_batch_size, cfg.train.seed,
        masking_lib.MaskingConfig(**cfg.masking.to_dict()), (0, n_train)), 0, 1)
    first = {s: int(stream.host_rows(s - 1)[0][0]) for s in range(1, cfg.train.steps + 1)}
    bad = {first[s] for s in steps}
    assert all(first[s] not in bad for s in first if s not in steps)  # unambiguous
    real = getattr(OBJECTIVES["bert"], "real", OBJECTIVES["bert"])  # not an earlier fake
    rows = jnp.asarray(sorted(bad))

    def loss_fn(model, batch, rng, denom):
        loss, sums = real.loss_fn(model, batch, rng, denom)
        return jnp.where(jnp.isin(batch["row_index"][0], rows), jnp.nan, loss), sums

    fake = types.SimpleNamespace(**{k: getattr(real, k) for k in dir(real) if not k.startswith("__")})
    fake.loss_fn, fake.real = loss_fn, real
    monkeypatch.setitem(OBJECTIVES, "bert", fake)


def test_a_burst_between_log_steps_stops_the_run(data, tmp_path, monkeypatch):
    """With the default log_every (25) and limit (10), 12 skipped steps in a row between two
    log steps stop the run at the next log step; 5 are skipped, counted and reported."""
    default = config_files.load(f"{ROOT}/configs/pretrain/bert.py:size=tiny")
    fields = {"train.steps": 30, "train.log_every": default.train.log_every,
              "train.max_nonfinite_steps": default.train.max_nonfinite_steps}
    assert (fields["train.log_every"], fields["train.max_nonfinite_steps"]) == (25, 10)
    cfg = config_for("bert", data["bert"], **fields)
    _nan_on_steps(monkeypatch, data["bert"], cfg, range(3, 15))
    with pytest.raises(UserError, match="12 consecutive steps had non-finite loss or gradients "
                                        r"\(each skipped\) by step 25 \(12 in all\)"):
        pretrain.train_and_evaluate(cfg, str(tmp_path / "burst"), log=lambda *a: None)

    _nan_on_steps(monkeypatch, data["bert"], cfg, [4, 5, 6, 20, 21])
    summary = pretrain.train_and_evaluate(cfg, str(tmp_path / "few"), log=lambda *a: None)
    assert summary["steps"] == 30 and summary["nonfinite_total"] == 5
    assert [row["nonfinite_total"] for row in summary["train"]] == [5.0, 5.0]  # logged at 25, 30
    assert json.loads((tmp_path / "few" / "summary.json").read_text())["nonfinite_total"] == 5


def test_electra_rtd_weight_is_applied(data, tmp_path):
    """config.electra.rtd_weight reaches the loss: loss = generator MLM + w * RTD."""
    out = {}
    for w in (50.0, 10.0):
        cfg = config_for("electra", data["electra"], **{"train.steps": 1, "electra.rtd_weight": w})
        row = pretrain.train_and_evaluate(cfg, str(tmp_path / str(w)), log=lambda *a: None)["train"][0]
        out[w] = row
        np.testing.assert_allclose(row["loss"], row["mlm_loss"] + w * row["rtd_loss"], rtol=1e-4)
    assert out[50.0]["loss"] - out[10.0]["loss"] > 1.0


def test_damaged_latest_step_resumes_from_the_newest_intact_one(data, tmp_path):
    """A truncated file in the latest step: a loud warning naming it, the run resumes from the
    step before, and the damaged step is kept aside (never listed, never overwritten)."""
    fields = {"train.steps": 8, "train.checkpoint_every": 4}
    pretrain.train_and_evaluate(config_for("bert", data["bert"], **fields), str(tmp_path))
    ckpts = tmp_path / "checkpoints"
    data_file = max((f for f in (ckpts / "8" / "state").rglob("*") if f.is_file() and f.parent.name == "d"),
                    key=lambda f: f.stat().st_size)
    data_file.write_bytes(data_file.read_bytes()[:100])
    lines = []
    summary = pretrain.train_and_evaluate(
        config_for("bert", data["bert"], **{**fields, "train.steps": 12}), str(tmp_path), log=lines.append)
    warning = next(line for line in lines if line.startswith("WARNING"))
    assert "checkpoint step 8" in warning and "is damaged" in warning, lines
    assert any(line.endswith("at step 4") for line in lines if line.startswith("resumed from")), lines
    assert summary["steps"] == 12
    assert sorted(p.name.split("-")[0] for p in ckpts.iterdir() if "damaged" in p.name) == ["8.damaged"]
    assert [int(p.name) for p in ckpts.iterdir() if p.name.isdigit()] and 12 in [
        int(p.name) for p in ckpts.iterdir() if p.name.isdigit()]


@pytest.mark.parametrize("field,value,message", [
    ("train.log_every", 0, "config.train.log_every=0; expected a positive integer"),
    ("train.eval_every", 0, "config.train.eval_every=0"),
    ("train.global_batch_size", 0, "config.train.global_batch_size=0"),
    ("train.global_batch_size", -8, "config.train.global_batch_size=-8"),
    ("data.prepare.max_seq_length", 1024, "exceeds bert-tiny's 512 positions"),
])
def test_config_errors_come_before_data_preparation(tmp_path, field, value, message):
    cfg = config_files.load(f"{ROOT}/configs/pretrain/bert.py:size=tiny", [f"--config.{field}={value}"])
    with pytest.raises(UserError, match=message):
        pretrain.train_and_evaluate(cfg, str(tmp_path), log=lambda *a: None)
    assert not (tmp_path / "data").exists()  # the embedded corpus was not prepared first


def test_workdir_data_with_other_settings_is_refused_or_prepared_again(data, tmp_path):
    """WORKDIR/data prepared with other data.prepare settings is never used silently: refused
    naming the field, or prepared again with data.reprepare=True (and then the checkpoint,
    made from the old data, cannot resume: the stream's fingerprint differs)."""
    meta = prepare.read_metadata(data["bert"])
    fields = {"data.prepare.corpus.source": "files",
              "data.prepare.corpus.files": meta["config"]["corpus"]["files"],
              "data.prepare.tokenizer": meta["tokenizer"], "data.prepare.max_seq_length": 64,
              "data.prepare.num_workers": 1, "train.steps": 1}
    pretrain.train_and_evaluate(config_for("bert", "", **fields), str(tmp_path), log=lambda *a: None)
    changed = {**fields, "data.prepare.max_seq_length": 32, "train.steps": 2}
    with pytest.raises(UserError, match=r"other settings \(max_seq_length: 64 -> 32\)"):
        pretrain.train_and_evaluate(config_for("bert", "", **changed), str(tmp_path), log=lambda *a: None)
    assert prepare.read_metadata(str(tmp_path / "data"))["max_seq_length"] == 64
    with pytest.raises(UserError, match="cannot resume the data stream"):
        pretrain.train_and_evaluate(config_for("bert", "", **changed, **{"data.reprepare": True}),
                                    str(tmp_path), log=lambda *a: None)
    assert prepare.read_metadata(str(tmp_path / "data"))["max_seq_length"] == 32


def test_bad_setups_fail_before_compiling(data, tmp_path):
    cases = [
        (config_for("bert", data["roberta"]), "cannot train on 'full_sentences' data"),
        (config_for("bert", data["bert"], **{"train.global_batch_size": 12}), "does not divide over the 8"),
        (config_for("bert", data["bert"], **{"mesh.data": 3}), "does not divide"),
        (config_for("bert", str(tmp_path / "nowhere")), "does not exist"),
    ]
    for cfg, message in cases:
        with pytest.raises(UserError, match=message):
            pretrain.train_and_evaluate(cfg, str(tmp_path / "w"), log=lambda *a: None)
    with pytest.raises(UserError, match="no field 'train.stepz'"):
        config_files.load(f"{ROOT}/configs/pretrain/bert.py:size=tiny", ["--config.train.stepz=3"])
    # A workdir holding another model's checkpoint: both named.
    pretrain.train_and_evaluate(config_for("bert", data["bert"], **{"train.steps": 2}), str(tmp_path / "m"),
                                log=lambda *a: None)
    other = config_for("electra", data["electra"], **{"train.steps": 2})
    with pytest.raises(UserError, match="another model: saved bert bert L2 H128.*configured electra"):
        pretrain.train_and_evaluate(other, str(tmp_path / "m"), log=lambda *a: None)


def test_encode_reads_our_checkpoint(data, tmp_path):
    from bert_jax import cli

    pretrain.train_and_evaluate(config_for("electra", data["electra"], **{"train.steps": 2}),
                                str(tmp_path / "w"), log=lambda *a: None)
    out = tmp_path / "e.npy"
    assert cli.main(["encode", "--checkpoint", str(tmp_path / "w"), "--input",
                     f"{ROOT}/bert_jax/data/samples/sentences.txt", "--output", str(out)]) == 0
    assert np.load(out).shape == (36, 128)


def test_bf16_compute_trains_with_fp32_params(data, tmp_path):
    cfg = config_for("bert", data["bert"], **{"model.dtype": "bfloat16", "train.steps": 8,
                                              "train.checkpoint_every": 8})
    loss = losses(pretrain.train_and_evaluate(cfg, str(tmp_path), log=lambda *a: None))
    assert np.all(np.isfinite(loss))
    params = pretrain.load_params(str(tmp_path))[2]
    assert {np.asarray(p).dtype for p in jax.tree.leaves(params)} == {np.dtype(np.float32)}


def test_unreachable_coordinator_is_a_clear_error(data, tmp_path):
    proc = _cli(tmp_path, data["bert"], "--coordinator-address", "127.0.0.1:1", "--num-processes", "2",
                "--process-id", "1", **{"distributed.timeout_seconds": 5})
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 2, out
    assert "bert-jax: error: jax.distributed could not start (coordinator 127.0.0.1:1, process 1 of 2" in out


def test_mlm_terms_equal_optax_cross_entropy_and_argmax_accuracy():
    import jax.numpy as jnp
    import optax

    from bert_jax.objectives.masked_lm import mlm_terms

    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(4, 6, 300)) * 3, jnp.float32)
    labels = rng.integers(0, 300, (4, 6))
    labels[:, :3] = np.asarray(jnp.argmax(logits, -1))[:, :3]  # half the predictions right
    batch = {"masked_ids": jnp.asarray(labels), "masked_weights": jnp.asarray(rng.integers(0, 2, (4, 6)),
                                                                             jnp.float32)}
    w = batch["masked_weights"]

    def reference(x):
        return (optax.softmax_cross_entropy_with_integer_labels(x, batch["masked_ids"]) * w).sum() / 7.0

    loss, sums = mlm_terms(logits, batch, jnp.float32(7.0))
    np.testing.assert_allclose(loss, reference(logits), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(lambda x: mlm_terms(x, batch, 7.0)[0])(logits),
                               jax.grad(reference)(logits), atol=1e-7)
    argmax_correct = ((jnp.argmax(logits, -1) == batch["masked_ids"]) * w).sum()
    assert float(sums["mlm_correct"]) == float(argmax_correct) > 0
    assert float(sums["mlm_count"]) == float(w.sum())
