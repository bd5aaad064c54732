"""Issue #7 item 4: BERT-Base and BERT-Large pretraining steps at S=128 in bf16 on one GPU.

Runs `bert-jax bench` (synthetic step: same state, shardings, donation and MLM+NSP objective
as pretraining) once per case, each in its own process, and a Hugging Face PyTorch
`BertForPreTraining` step of the same shape (bf16 autocast, SDPA attention, fused AdamW,
logits at every position as HF computes them) as the side-by-side peer. MFU is against a
bf16 matmul measured in the same process (bench) and, for the peer, against the same
figure. Writes every JSON line to $OUT/gpu.jsonl (or ./gpu.jsonl) and prints a table.

    python3 benchmarks/gpu.py [--quick] [--cases NAME,...] [--profile] [--no-peer]
                            [--peer-layers 24,12]

--quick runs bert-tiny only (a smoke test of the script, CPU or GPU); --cases picks cases by
name; --profile also traces 3 steps of each case with jax.profiler and copies the Perfetto
trace to $OUT/CASE.trace.json.gz (summarise it with benchmarks/trace_summary.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.environ.get("OUT") or ROOT
S = 128

CUDNN = ["--config.model.attention_dropout=0", "--config.model.attention_impl=cudnn"]
RBG = {"JAX_DEFAULT_PRNG_IMPL": "unsafe_rbg"}  # dropout bits from the RBG generator
# (name, preset, batch, overrides, environment)
CASES = [
    ("large-dropout", "large", 256, [], {}),
    ("large-cudnn", "large", 256, CUDNN, {}),
    ("large-dropout-rbg", "large", 256, [], RBG),
    ("base-dropout", "base", 256, [], {}),
    ("base-cudnn", "base", 256, CUDNN, {}),
    ("large-cudnn-unrolled", "large", 256, [*CUDNN, "--config.model.scan_layers=False"], {}),
    ("large-dropout-unrolled", "large", 256, ["--config.model.scan_layers=False"], {}),
]
QUICK = [("tiny-dropout", "tiny", 8, [], {}), ("tiny-rbg", "tiny", 8, [], RBG)]


def bench(
    preset: str, batch: int, overrides: list[str], env: dict, timeout: float, profile: str | None = None
) -> dict:
    argv = [
        "bench",
        *(["--profile", profile] if profile else []),
        "--config",
        f"{ROOT}/configs/pretrain/bert.py:size={preset}",
        "--steps",
        "10",
        f"--config.train.global_batch_size={batch}",
        f"--config.data.prepare.max_seq_length={S}",
        "--config.model.dtype=bfloat16",
        "--config.mesh.data=1",
        *overrides,
    ]
    code = f"import sys; from bert_jax import cli; sys.exit(cli.main({argv!r}))"
    t = time.perf_counter()
    try:
        p = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={
                **os.environ,
                **env,
                "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), ROOT])),
            },
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
    if p.returncode or not lines:
        return {"error": (p.stderr or p.stdout)[-3000:], "rc": p.returncode}
    out = json.loads(lines[-1])
    out["process_s"] = round(time.perf_counter() - t, 1)
    return out


TORCH_PEER = r"""
import json, sys, time, numpy as np, torch
from transformers import BertConfig, BertForPreTraining
L, H, A, B, S, steps = map(int, sys.argv[1:7])
torch.manual_seed(0)
cfg = BertConfig(vocab_size=30522, hidden_size=H, num_hidden_layers=L, num_attention_heads=A,
                 intermediate_size=4 * H, max_position_embeddings=512, attn_implementation="sdpa")
model = BertForPreTraining(cfg).cuda().train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=True)
rng = np.random.default_rng(0)
ids = torch.tensor(rng.integers(0, 30522, (B, S))).cuda()
labels = torch.tensor(np.where(rng.random((B, S)) < 0.15, ids.cpu().numpy(), -100)).cuda()
nsp = torch.tensor(rng.integers(0, 2, (B,))).cuda()
def step():
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(input_ids=ids, labels=labels, next_sentence_label=nsp)
    out.loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    return out.loss
for _ in range(3): step()
torch.cuda.synchronize()
times = []
for _ in range(steps):
    t = time.perf_counter(); l = step(); torch.cuda.synchronize(); times.append(time.perf_counter() - t)
ms = float(np.median(times)) * 1e3
print(json.dumps({"peer": "hf_torch_bf16_sdpa", "L": L, "H": H, "batch": B, "seq_len": S,
                  "ms_per_step": round(ms, 2), "tokens_per_s": round(B * S / ms * 1e3, 1),
                  "seq_per_s": round(B / ms * 1e3, 1), "loss": float(l),
                  "peak_device_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
                  "torch": torch.__version__, "device": torch.cuda.get_device_name()}))
"""


def torch_peer(layers: int, hidden: int, batch: int, timeout: float) -> dict:
    try:
        p = subprocess.run(
            [
                sys.executable,
                "-c",
                TORCH_PEER,
                str(layers),
                str(hidden),
                str(hidden // 64),
                str(batch),
                str(S),
                "10",
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
    return json.loads(lines[-1]) if lines else {"error": (p.stderr or p.stdout)[-2000:]}


def main() -> None:
    quick = "--quick" in sys.argv
    cases = QUICK if quick else CASES
    if "--cases" in sys.argv:
        names = sys.argv[sys.argv.index("--cases") + 1].split(",")
        cases = [c for c in QUICK + CASES if c[0] in names]
    profile = "--profile" in sys.argv
    try:
        smi = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,memory.total,driver_version,clocks.max.sm",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        smi = "no nvidia-smi"
    import flax
    import jax
    import optax

    env = {
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "backend": jax.default_backend(),
        "nvidia_smi": smi,
        "python": sys.version.split()[0],
    }
    print(json.dumps(env), flush=True)
    rows = [env]
    with open(os.path.join(OUT, "gpu.jsonl"), "w") as f:
        f.write(json.dumps(env) + "\n")
        for i, (name, preset, batch, overrides, case_env) in enumerate(cases):
            prof = os.path.join("/tmp", "prof-" + name) if profile else None
            r = {"case": name, **bench(preset, batch, overrides, case_env, timeout=150, profile=prof)}
            fallback = os.environ.get("FALLBACK_PYTHONPATH")
            if i == 0 and "error" in r and fallback:
                # The machine's own flax/optax/orbax failed: retry with the project's pins.
                print(json.dumps({"case": name, "retry_with": fallback, **r}), flush=True)
                path = [fallback, os.environ.get("PYTHONPATH")]
                os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, path))
                r = {
                    "case": name,
                    "pythonpath": os.environ["PYTHONPATH"],
                    **bench(preset, batch, overrides, case_env, timeout=150, profile=prof),
                }
            if prof and os.path.isdir(prof):
                for dirpath, _, files in os.walk(prof):
                    if "perfetto_trace.json.gz" in files:
                        shutil.copy(
                            os.path.join(dirpath, "perfetto_trace.json.gz"),
                            os.path.join(OUT, f"{name}.trace.json.gz"),
                        )
            rows.append(r)
            print(json.dumps(r), flush=True)
            f.write(json.dumps(r) + "\n")
            f.flush()
        if not quick and "--no-peer" not in sys.argv:
            peers = ((24, 1024), (12, 768))
            if "--peer-layers" in sys.argv:
                keep = sys.argv[sys.argv.index("--peer-layers") + 1].split(",")
                peers = tuple(p for p in peers if str(p[0]) in keep)
            for layers, hidden in peers:
                r = {"case": f"hf-torch-L{layers}", **torch_peer(layers, hidden, 256, timeout=90)}
                rows.append(r)
                print(json.dumps(r), flush=True)
                f.write(json.dumps(r) + "\n")
    print(f"\n{'case':16} {'ms/step':>9} {'seq/s':>9} {'MFU':>6} {'compile s':>9} {'dev GB':>7}")
    for r in rows[1:]:
        if "error" in r:
            print(f"{r['case']:16} ERROR {r['error'][-300:]!r}")
            continue
        seq_s = r.get("seq_per_s") or r["tokens_per_s"] / S
        mfu = f"{r['mfu']:.3f}" if "mfu" in r else "-"
        dev = (r.get("peak_device_mb") or 0) / 1024
        print(
            f"{r['case']:16} {r['ms_per_step']:9.2f} {seq_s:9.1f} {mfu:>6} {r.get('compile_s', '-'):>9} "
            f"{dev:7.1f}"
        )


if __name__ == "__main__":
    main()
