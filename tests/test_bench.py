"""bert-jax bench prints one JSON line with consistent figures (not a timing assertion)."""

import json
import os

from bert_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_reports_a_consistent_json_line(capsys):
    assert cli.main(["bench", "--config", f"{ROOT}/configs/pretrain/bert.py:size=tiny", "--steps", "2",
                     "--config.train.global_batch_size=8", "--config.data.prepare.max_seq_length=32",
                     "--config.model.vocab_size=1000", "--config.mesh.data=1"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["preset"] == "bert-tiny" and line["seq_len"] == 32 and line["batch"] == 8
    assert abs(line["tokens_per_s"] - 8 * 32 / (line["ms_per_step"] / 1e3)) < 0.01 * line["tokens_per_s"]
    assert abs(line["mfu"] - line["achieved_flops"] / line["matmul_ceiling_flops"]) < 1e-3
    assert 0 < line["mfu"] < 2 and line["compile_s"] > 0 and line["peak_host_rss_mb"] > 0
