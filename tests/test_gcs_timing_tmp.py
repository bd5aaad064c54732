"""Every path on `gs://`, end to end, against a local Cloud Storage emulator (tests/gcs_emulator.py):
train_tokenizer, then pretraining on 2 processes x 4 devices with its data prepared by process 0
from a corpus in the bucket, SIGKILL, resume, export, fine-tuning (2 x 4, task files in the
bucket) and evaluation. Nothing may appear on the local disk under a `gs:` directory."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import stdlib_topics
from gcs_emulator import BUCKET, emulator
from ports import free_port

from bert_jax import storage
from bert_jax.data import corpora

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B = f"gs://{BUCKET}"


@pytest.fixture(scope="module")
def gcs():
    with emulator() as env, pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        import gcsfs

        gcsfs.GCSFileSystem.clear_instance_cache()
        yield env
        gcsfs.GCSFileSystem.clear_instance_cache()


T0 = time.time()
def _cli(*args, env=None, cwd=ROOT):
    print(f"[{time.time()-T0:7.1f}] start {args[0]}", flush=True)
    return subprocess.Popen(
        [sys.executable, "-m", "bert_jax.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _ok(proc, timeout=600):
    try:
        out = proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        out = "TIMED OUT\n" + proc.communicate()[0]
    assert proc.returncode == 0, out
    print(f"[{time.time()-T0:7.1f}] done", flush=True)
    return out


def _all_ok(procs, timeout=600):
    """Wait for every process; on a failure show what each one printed."""
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            p.kill()
            outs.append("TIMED OUT\n" + p.communicate()[0])
    assert all(p.returncode == 0 for p in procs), "\n---\n".join(outs)
    print(f"[{time.time()-T0:7.1f}] done all", flush=True)
    print(outs[0][-3000:])
    return outs


def _two(start, port):
    return [
        start(
            {
                "BERT_JAX_COORDINATOR": f"127.0.0.1:{port}",
                "BERT_JAX_NUM_PROCESSES": "2",
                "BERT_JAX_PROCESS_ID": str(i),
                "BERT_JAX_LOCAL_DEVICES": "4",
                "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
            }
        )
        for i in range(2)
    ]


def test_storage_layer_on_gs(gcs, tmp_path):
    path = f"{B}/layer/a/b.json"
    storage.write_json(path, {"x": 1})
    assert storage.read_json(path) == {"x": 1}
    assert storage.isdir(f"{B}/layer/a") and storage.isfile(path) and not storage.isfile(f"{B}/layer/a")
    assert storage.listdir(f"{B}/layer/a") == ["b.json"]
    assert storage.glob(f"{B}/layer/*/b.json") == [path]
    with storage.open(f"{B}/layer/lines.txt", "w") as f:
        f.write("one\ntwo\n")
    with storage.open(f"{B}/layer/lines.txt", "rb") as f:
        assert f.readline(2) == b"on" and f.readline() == b"e\n"
    size, mtime = storage.stat(f"{B}/layer/lines.txt")
    assert size == 8 and mtime > 0
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_text("hi")
    storage.copy_tree(str(tmp_path / "d"), f"{B}/layer/tree")
    with storage.local_copy(f"{B}/layer/tree") as local:
        assert open(os.path.join(local, "f.txt")).read() == "hi"
    storage.rmtree(f"{B}/layer")
    assert not storage.exists(f"{B}/layer/a/b.json")
    with pytest.raises(Exception, match="not inside"):
        storage.inside(f"{B}/w", "../elsewhere", "results.json's best_checkpoint")


def test_everything_on_gs_two_processes(gcs, tmp_path):
    # Inputs in the bucket: a corpus and a classification task.
    docs = list(corpora.default_corpus())[:150]
    storage.write_atomic(f"{B}/corpus/text.txt", "\n\n".join("\n".join(d) for d in docs) + "\n")
    train, dev = stdlib_topics.write(str(tmp_path / "topics"))
    for name, path, rows in (("train.csv", train, 64), ("dev.csv", dev, 32)):
        with open(path, encoding="utf-8") as f:
            storage.write_atomic(f"{B}/task/{name}", "".join(f.readlines()[: rows + 1]))
    cwd = tmp_path / "cwd"  # a gs:// path mistaken for a local one would appear under here
    cwd.mkdir()

    # train-tokenizer reads its corpus from the bucket and writes its vocabulary there.
    from bert_jax.data.train_tokenizer import train_tokenizer

    train_tokenizer([f"{B}/corpus/text.txt"], "wordpiece", 1500, f"{B}/vocab")
    assert {"vocab.txt", "tokenizer_config.json"} <= set(storage.listdir(f"{B}/vocab"))

    # Pretraining, 2 processes x 4 devices: process 0 prepares WORKDIR/data in the bucket from
    # the bucket's corpus; both read it. Killed once its second checkpoint appears (so the
    # first is complete), then resumed.
    run = f"{B}/run"

    def pretrain(env):
        return _cli(
            "pretrain",
            "--config",
            f"{ROOT}/configs/pretrain/bert.py:size=tiny",
            "--workdir",
            run,
            "--config.data.prepare.corpus.source=files",
            f"--config.data.prepare.corpus.files={B}/corpus/*.txt",
            f"--config.data.prepare.tokenizer={B}/vocab",
            "--config.data.prepare.max_seq_length=64",
            "--config.data.prepare.num_workers=1",
            "--config.data.eval_rows=16",
            "--config.train.steps=6",
            "--config.train.global_batch_size=16",
            "--config.train.log_every=1",
            "--config.train.eval_every=1000",
            "--config.train.checkpoint_every=2",
            "--config.train.eval_batches=1",
            "--config.train.peak_flops=1e11",
            "--config.masking.max_predictions=10",
            "--config.optim.warmup_steps=0",
            env=env,
            cwd=cwd,
        )

    procs = _two(pretrain, free_port())
    start = time.time()
    while not storage.exists(f"{run}/checkpoints/4"):
        assert all(p.poll() is None for p in procs), [p.communicate()[0] for p in procs]
        assert time.time() - start < 600
        time.sleep(0.2)
    print(f"[{time.time()-T0:7.1f}] checkpoint 4 seen", flush=True)
    for p in procs:
        p.kill()
        p.wait()
    assert storage.isfile(f"{run}/data/metadata.json")
    outs = _all_ok(_two(pretrain, free_port()))
    assert "resumed from" in outs[0], outs[0]
    summary = storage.read_json(f"{run}/summary.json")
    assert summary["steps"] == 6 and np.isfinite(summary["train"][-1]["loss"])
    assert storage.listdir(f"{run}/tensorboard")

    # Export from the bucket into the bucket; the files load as a transformers checkpoint.
    _ok(_cli("export", "--checkpoint", run, "--format", "hf", "--output", f"{B}/export", cwd=cwd))
    manifest = storage.read_json(f"{B}/export/manifest.json")
    assert {"config.json", "model.safetensors", "vocab.txt"} <= set(manifest["files"])
    from bert_jax.convert import hf

    assert hf.load(storage.fetch(f"{B}/export")).config.num_layers == 2

    # Fine-tuning, 2 x 4, from the bucket's pretraining workdir on the bucket's task files.
    ft = f"{B}/ft"

    def finetune(env):
        return _cli(
            "finetune",
            "--config",
            f"{ROOT}/configs/finetune/files.py:kind=classification",
            "--init",
            run,
            "--workdir",
            ft,
            f"--config.task.files.train={B}/task/train.csv",
            f"--config.task.files.validation={B}/task/dev.csv",
            "--config.task.max_seq_length=32",
            "--config.train.global_batch_size=8",
            "--config.train.epochs=1",
            "--config.train.log_every=1000",
            env=env,
            cwd=cwd,
        )

    _all_ok(_two(finetune, free_port()))
    results = storage.read_json(f"{ft}/results.json")
    assert storage.isfile(f"{ft}/results.md") and storage.isdir(f"{ft}/seed_0/checkpoints")
    assert "validation/accuracy" in results["per_seed"]["0"]

    # Evaluation reads the bucket's fine-tuned checkpoint and writes its metrics there.
    _ok(_cli("evaluate", "--checkpoint", ft, cwd=cwd))
    metrics = storage.read_json(f"{ft}/seed_0/evaluation/metrics.json")
    assert metrics["flat"]["validation/accuracy"] == pytest.approx(
        results["per_seed"]["0"]["validation/accuracy"], abs=1e-6
    )

    assert os.listdir(cwd) == [], os.listdir(cwd)  # nothing went to a local "gs:" directory
    assert not json.dumps(summary).count(str(cwd))
