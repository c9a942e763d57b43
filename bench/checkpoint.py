"""Memory for long sequences: `rnn_apply(..., remat=c)` against no remat, forward+backward.

    python bench/checkpoint.py [--smoke] [--calls 5] [--out bench/results]

A GRU (B=16, H=I=128, T=4096; `--smoke`: B=2, H=I=4, T=64) trained on the sum of its outputs, batch-major
and time-major inputs, with `remat` None and c = 64 (~sqrt(T)). For each: the compiled temp
memory (`compiled.memory_analysis()`), compile and median run time, and the ratios against no
remat in the same layout. Target (the speed issue): at least 10x less temp memory for at most
1.4x the time. Gradients are checked against the no-remat run (relative error <= 1e-4). Writes
`<out>/checkpoint.{md,json}`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import common
import jax
import numpy as np

import jrnn

PRESETS = {"full": {"B": 16, "H": 128, "T": 4096, "c": 64}, "smoke": {"B": 2, "H": 4, "T": 64, "c": 8}}
MEMORY_TARGET, TIME_TARGET = 10.0, 1.4


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds (the test)")
    parser.add_argument("--calls", type=int, default=5, help="timed calls per point")
    parser.add_argument("--out", type=Path, default=common.RESULTS, help="folder for the md and JSON")
    args = parser.parse_args(argv)
    g = PRESETS["smoke" if args.smoke else "full"]
    B, H, T, c = g["B"], g["H"], g["T"], g["c"]
    params = jrnn.GRU.init(jax.random.key(0), H, H)
    rows = []
    for time_major in (False, True):
        xs = jax.random.normal(jax.random.key(1), (T, B, H) if time_major else (B, T, H))
        grads = {}
        for ckpt in (None, c):
            def f(p, xs, ckpt=ckpt, time_major=time_major):
                return jrnn.rnn_apply(p, xs, time_major=time_major, remat=ckpt)[0].sum()

            grad = jax.grad(f, argnums=(0, 1))
            t = common.time_jax(grad, params, xs, calls=args.calls)  # first: compile time uncached
            grads[ckpt] = jax.jit(grad)(params, xs)
            rows.append({"layout": "time-major" if time_major else "batch-major", "checkpoint": ckpt,
                         "temp_mib": t["temp_bytes"] / 2**20, "compile_ms": t["compile_ms"],
                         "median_ms": t["median_ms"], "min_ms": t["min_ms"], "calls": t["calls"]})
            print(f"{rows[-1]['layout']:11} remat={ckpt}: temp {rows[-1]['temp_mib']:8.1f} MiB, "
                  f"{t['median_ms']:8.1f} ms", flush=True)
        # Each gradient leaf's max abs difference, relative to that leaf's largest entry.
        err = max(float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)) for a, b in
                  zip(jax.tree.leaves(grads[c]), jax.tree.leaves(grads[None]), strict=True))
        base, ck = rows[-2], rows[-1]
        ck.update(grad_max_rel_err=err, memory_cut=base["temp_mib"] / max(ck["temp_mib"], 1e-9),
                  time_ratio=ck["median_ms"] / base["median_ms"])
        ck["meets_target"] = ck["memory_cut"] >= MEMORY_TARGET and ck["time_ratio"] <= TIME_TARGET
        if err > 1e-4:
            print(f"gradients with remat={c} differ: max relative err {err:.2e}", file=sys.stderr)
            return 1
    command = ["python", "bench/checkpoint.py", *(sys.argv[1:] if argv is None else argv)]
    data = {"command": shlex.join(command), "machine": common.machine(), "grid": g, "rows": rows}
    m = data["machine"]
    lines = ["# Recomputation for long sequences: `rnn_apply(..., remat=c)`", "", f"`{data['command']}`", "",
             f"{m['cpu']}, {m['cores']} cores, {m['device']} ({m['platform']}); JAX {m['jax']}; "
             f"{m['date']}.", "",
             f"GRU B={B}, H=I={H}, T={T}, float32, forward+backward (gradient of the sum of the outputs "
             f"w.r.t. params and inputs). Median of {args.calls} calls. Target: >= {MEMORY_TARGET:g}x less "
             f"temp memory for <= {TIME_TARGET:g}x the time of no checkpoint in the same layout.", "",
             "| layout | checkpoint | temp MiB | compile ms | median ms | memory cut | time ratio | target |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        verdict = "met" if r.get("meets_target") else "NOT met"
        extra = f"x{r['memory_cut']:.1f} | x{r['time_ratio']:.2f} | {verdict}" if r["checkpoint"] else " | |"
        lines.append(f"| {r['layout']} | {r['checkpoint'] or 'None'} | {r['temp_mib']:.1f} | "
                     f"{r['compile_ms']:.0f} | {r['median_ms']:.1f} | {extra} |")
    md = "\n".join(lines) + "\n"
    print(md)
    saved, common.RESULTS = common.RESULTS, args.out  # common.write writes to common.RESULTS
    try:
        common.write("checkpoint_smoke" if args.smoke else "checkpoint", data, md)
    finally:
        common.RESULTS = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
