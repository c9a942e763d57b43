"""Before/after, same run: jrnn's default `rnn_apply` on the peers' workloads W1-W4, this tree against a git
revision, timed in alternating processes so that both see the same machine load.

    python bench/ab.py --base HEAD~1 [--rounds 3] [--calls 10] [--workloads W1,W2] [--out bench/results]

The base revision's `jrnn/` is extracted with `git archive` into a temporary folder. Each round runs one
process per (side, workload), base first then head, each timing forward and forward+backward (gradient of
the sum of the outputs w.r.t. the params) with `common.time_jax`: compile and run apart. The table gives,
per workload and direction, the median over all rounds' calls and head/base. Writes `<out>/ab.{md,json}`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def worker(workload: str, calls: int) -> None:
    """Run inside a child: times one workload with whichever `jrnn` is first on the path."""
    import jax

    import jrnn  # first: bench/peers.py puts this tree's root on the path

    sys.path.insert(0, str(HERE))
    import common
    from peers import WORKLOADS

    w = WORKLOADS[workload]
    params = getattr(jrnn, w.kind).init(jax.random.key(0), w.I, w.H)
    xs = jax.random.normal(jax.random.key(1), (w.B, w.T, w.I))
    loss = lambda p, xs: jrnn.rnn_apply(p, xs)[0].sum()  # noqa: E731
    out = {d: common.time_jax(f, params, xs, calls=calls) for d, f in
           (("fwd", loss), ("fwd+bwd", jax.grad(loss)))}
    out["jrnn"] = jrnn.__file__
    print(json.dumps(out))


def run_side(src: Path, workload: str, calls: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, str(HERE / "ab.py"), "--worker", workload, "--calls", str(calls)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=src)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="git revision to compare against (default HEAD)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=10, help="timed calls per process and direction")
    parser.add_argument("--workloads", default="W1,W2,W3,W4")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.calls)
        return 0
    workloads = args.workloads.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", args.base, "jrnn"], cwd=ROOT, capture_output=True,
                                 check=True)
        base_src = Path(tmp)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(base_src, filter="data")
        rev = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        runs = {(s, w): [] for s in ("base", "head") for w in workloads}
        for r in range(args.rounds):
            for w in workloads:
                for side, src in (("base", base_src), ("head", ROOT)):
                    res = run_side(src, w, args.calls)
                    assert Path(res["jrnn"]).resolve().is_relative_to(src.resolve()), res["jrnn"]
                    runs[side, w].append(res)
                    print(f"round {r} {w} {side}: " + ", ".join(
                        f"{d} {res[d]['median_ms']:.2f} ms (compile {res[d]['compile_ms']:.0f} ms)"
                        for d in ("fwd", "fwd+bwd")), flush=True)
    sys.path.insert(0, str(HERE))
    import common

    rows = []
    for w in workloads:
        for d in ("fwd", "fwd+bwd"):
            stat = {s: {"median_ms": float(np.median([x[d]["median_ms"] for x in runs[s, w]])),
                        "compile_ms": float(np.median([x[d]["compile_ms"] for x in runs[s, w]]))}
                    for s in ("base", "head")}
            rows.append({"workload": w, "direction": d, **stat,
                         "ratio": stat["head"]["median_ms"] / stat["base"]["median_ms"],
                         "compile_ratio": stat["head"]["compile_ms"] / stat["base"]["compile_ms"]})
    command = shlex.join(["python", "bench/ab.py", *(sys.argv[1:] if argv is None else argv)])
    data = {"command": command, "base": rev, "machine": common.machine(), "rounds": args.rounds,
            "calls": args.calls, "rows": rows}
    lines = [f"# jrnn default: this tree against {rev}, same run", "", f"`{command}`", "",
             f"{data['machine']['cpu']}, {data['machine']['cores']} cores, jax {data['machine']['jax']}, "
             f"{data['machine']['date']}. Medians over {args.rounds} alternating processes x {args.calls} "
             "calls.", "",
             "| workload | direction | base ms | head ms | head/base | base compile ms | head compile ms |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['direction']} | {r['base']['median_ms']:.2f} | "
                     f"{r['head']['median_ms']:.2f} | {r['ratio']:.3f} | {r['base']['compile_ms']:.0f} | "
                     f"{r['head']['compile_ms']:.0f} |")
    md = "\n".join(lines) + "\n"
    print(md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ab.json").write_text(json.dumps(data, indent=1) + "\n")
    (out / "ab.md").write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
