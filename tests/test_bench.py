"""bert-jax bench prints one JSON line with consistent figures (not a timing assertion)."""

import json
import os

import corpus_sample

from bert_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_reports_a_consistent_json_line(capsys):
    assert (
        cli.main(
            [
                "bench",
                "--config",
                f"{ROOT}/configs/pretrain/bert.py:size=tiny",
                "--steps",
                "2",
                "--config.train.global_batch_size=8",
                "--config.data.prepare.max_seq_length=32",
                "--config.model.vocab_size=1000",
                "--config.mesh.data=1",
            ]
        )
        == 0
    )
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["preset"] == "bert-tiny" and line["seq_len"] == 32 and line["batch"] == 8
    assert abs(line["tokens_per_s"] - 8 * 32 / (line["ms_per_step"] / 1e3)) < 0.01 * line["tokens_per_s"]
    assert abs(line["mfu"] - line["achieved_flops"] / line["matmul_ceiling_flops"]) < 1e-3
    assert 0 < line["mfu"] < 2 and line["compile_s"] > 0 and line["peak_host_rss_mb"] > 0


def test_bench_rows_shorter_than_the_masked_slots(capsys):
    """S=16 with max_predictions=20: 15 real positions per row, the other 5 slots padding."""
    assert (
        cli.main(
            [
                "bench",
                "--config",
                f"{ROOT}/configs/pretrain/bert.py:size=tiny",
                "--steps",
                "1",
                "--config.train.global_batch_size=4",
                "--config.data.prepare.max_seq_length=16",
                "--config.model.vocab_size=500",
                "--config.mesh.data=1",
            ]
        )
        == 0
    )
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["seq_len"] == 16 and line["loss"] > 0


def test_bench_loop_mode_runs_the_real_job_and_compares(tmp_path, capsys):
    corpus = corpus_sample.write(tmp_path / "corpus.txt", documents=50)
    args = [
        "bench",
        "--mode",
        "loop",
        "--steps",
        "12",
        "--workdir",
        str(tmp_path / "w"),
        "--config",
        f"{ROOT}/configs/pretrain/bert.py:size=tiny",
        *corpus_sample.prepare_overrides(corpus),
        "--config.data.prepare.train_tokenizer.vocab_size=1000",
        "--config.train.global_batch_size=8",
        "--config.data.prepare.max_seq_length=32",
        "--config.train.log_every=4",
        "--config.train.checkpoint_every=5",
        "--config.data.eval_rows=16",
        "--config.mesh.data=1",
    ]
    for run in range(2):  # a rerun on the same --workdir reuses its data and times a new job
        assert cli.main(args) == 0
        lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
        step, loop = lines[-2], lines[-1]
        assert loop["mode"] == "loop" and loop["timed_steps"] == 8  # steps 4 -> 12
        assert loop["synthetic_tokens_per_s"] == step["tokens_per_s"]
        assert abs(loop["loop_vs_synthetic"] - loop["tokens_per_s"] / step["tokens_per_s"]) < 1e-3
        assert abs(loop["tokens_per_s"] - 8 * 32 / (loop["ms_per_step"] / 1e3)) < 0.01 * loop["tokens_per_s"]
        # The real job ran: checkpoints at 5, 10 and the end, in a run directory of its own.
        runs = sorted((tmp_path / "w" / "loop-runs").iterdir())
        assert len(runs) == run + 1
        assert max(int(s) for s in os.listdir(runs[-1] / "checkpoints")) == 12
