"""Where a step's device time goes, from a Perfetto trace written by `bert-jax bench --profile`.

    python benchmarks/trace_summary.py TRACE.json.gz [--steps 3] [--top 40]

Sums the complete ('X') events of the device processes (GPU streams; on CPU, the XLA thread
pool's ops when XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true), per step, by kernel/op name
and by a coarse class (matmul, attention, elementwise/fusion, copy, reduction, collective,
scatter/gather, other).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re

CLASSES = [
    ("attention", re.compile(r"cudnn|fmha|flash|sdpa|attention", re.I)),
    ("matmul", re.compile(r"gemm|xmma|cutlass|cublas|matmul|dot|sm90_|sm80_|wgmma|ynn|triton_gemm", re.I)),
    ("copy", re.compile(r"memcpy|memset|copy|dynamic.update.slice|dynamic.slice|transpose", re.I)),
    ("scatter/gather", re.compile(r"scatter|gather", re.I)),
    ("collective", re.compile(r"all.?reduce|all.?gather|reduce.scatter|nccl|collective", re.I)),
    ("reduction", re.compile(r"reduce|reduction", re.I)),
    ("elementwise", re.compile(r"fusion|loop_|input_|convert|add|multiply", re.I)),
]


def classify(name: str) -> str:
    for cls, pattern in CLASSES:
        if pattern.search(name):
            return cls
    return "other"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    data = json.load(gzip.open(args.trace))
    events = data["traceEvents"] if isinstance(data, dict) else data
    pname = {
        e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"
    }
    tname = {
        (e["pid"], e.get("tid")): e["args"]["name"]
        for e in events
        if e.get("ph") == "M" and e.get("name") == "thread_name"
    }
    x = [e for e in events if e.get("ph") == "X"]
    device_pids = {p for p, n in pname.items() if "GPU" in n or "TPU" in n}
    if device_pids:
        dev = [e for e in x if e["pid"] in device_pids]
        streams = collections.Counter(tname.get((e["pid"], e.get("tid")), "?") for e in dev)
        print("device streams:", dict(streams))
        # Kernel rows only: XLA's per-op rows on GPU duplicate the kernels under 'XLA Ops'.
        kernel_rows = [
            e
            for e in dev
            if "XLA Ops" not in tname.get((e["pid"], e.get("tid")), "")
            and "XLA Modules" not in tname.get((e["pid"], e.get("tid")), "")
            and "Steps" not in tname.get((e["pid"], e.get("tid")), "")
        ]
        dev = kernel_rows or dev
    else:
        dev = [e for e in x if tname.get((e["pid"], e.get("tid")), "").startswith("tf_XLA")]
    if not dev:
        raise SystemExit(f"{args.trace}: no device events (processes: {sorted(pname.values())})")
    span = (max(e["ts"] + e["dur"] for e in dev) - min(e["ts"] for e in dev)) / 1e3
    total = sum(e["dur"] for e in dev) / 1e3
    by_name = collections.defaultdict(lambda: [0.0, 0])
    by_class = collections.defaultdict(float)
    for e in dev:
        name = e["name"]
        by_name[name][0] += e["dur"] / 1e3
        by_name[name][1] += 1
        by_class[classify(name)] += e["dur"] / 1e3
    n = args.steps
    print(f"events {len(dev)}; busy {total / n:.1f} ms/step; span {span / n:.1f} ms/step (over {n} steps)")
    for cls, ms in sorted(by_class.items(), key=lambda kv: -kv[1]):
        print(f"  {cls:15} {ms / n:9.2f} ms/step  {ms / total:6.1%}")
    print(f"\n{'ms/step':>9} {'calls':>6}  name")
    for name, (ms, calls) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[: args.top]:
        print(f"{ms / n:9.2f} {calls // n:6}  {name[:150]}")
    sample = next((e for e in dev if e.get("args")), None)
    if sample:
        print("\nargs of one event:", json.dumps(sample["args"])[:600])


if __name__ == "__main__":
    main()
