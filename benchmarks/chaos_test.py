"""Chaos (issue #12 item 11): a pretraining run SIGKILLed at 10 random moments, several of
them while an async checkpoint save is in flight, resumed after each, ends with parameters
bit-identical to an uninterrupted run's. Prints the figures (kills, kills mid-save, the
latest step at each kill).

Not in CI's test run (8-9 minutes on a 2-core VM: each of the 11 processes imports, compiles
and checkpoints); run it with

    .venv/bin/python -m pytest -s benchmarks/chaos_test.py
"""

import json
import os
import random
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
import conftest  # noqa: E402, F401 - 8 fake CPU devices, before JAX starts
import jax  # noqa: E402
import numpy as np  # noqa: E402
from test_pretrain import _cli, _summary, data  # noqa: E402, F401 - `data` is the shared fixture

from bert_jax.training import pretrain  # noqa: E402

KILLS = 10
STEPS = 40
FIELDS = {"train.steps": STEPS, "train.checkpoint_every": 1, "train.keep_checkpoints": 2,
          "train.log_every": 5}


def _latest(workdir):
    steps = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()] \
        if (workdir / "checkpoints").is_dir() else []
    return max(steps, default=0)


def _saving(workdir):
    root = workdir / "checkpoints"
    return root.is_dir() and any("orbax-checkpoint-tmp" in p.name for p in root.iterdir())


def test_sigkill_at_random_moments_then_resume_is_bit_exact(data, tmp_path):  # noqa: F811
    straight = _cli(tmp_path / "straight", data["bert"], **FIELDS)
    assert straight.wait(timeout=900) == 0, straight.stdout.read()

    rng = random.Random(12345)
    chaos = tmp_path / "chaos"
    figures = []
    while len(figures) < KILLS:
        before = _latest(chaos)
        if before >= STEPS - 2:
            break
        proc = _cli(chaos, data["bert"], **FIELDS)
        # Wait until this run has saved a step of its own, then a random moment more.
        start = time.time()
        while _latest(chaos) <= before and proc.poll() is None:
            assert time.time() - start < 600, "no progress"
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.6))
        mid_save = _saving(chaos)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        figures.append({"from": before, "killed_at_latest": _latest(chaos), "mid_save": mid_save})
    final = _cli(chaos, data["bert"], **FIELDS)
    out = final.communicate(timeout=900)[0]
    assert final.returncode == 0, out
    print("chaos:", json.dumps({"kills": len(figures), "mid_save": sum(f["mid_save"] for f in figures),
                                "runs": figures}))
    assert len(figures) >= KILLS and sum(f["mid_save"] for f in figures) >= 2, figures
    assert _summary(chaos)["steps"] == STEPS
    a = pretrain.load_params(str(tmp_path / "straight"))[2]
    b = pretrain.load_params(str(chaos))[2]
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
