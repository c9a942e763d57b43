"""Scan vs unroll: run and compile time of `jrnn.rnn_apply` for every `unroll`, by cell, size and T.

    python bench/scan_vs_unroll.py [--quick | --smoke] [--cap-seconds 20] [--calls 10] [--budget-seconds S]
        [--out bench/results]

For each cell (SimpleRNN, LSTM, GRU), size and sequence length T it first checks that every `unroll`
gives unroll=1's outputs and final state (rtol 1e-4, eager), then times the forward pass (sum of the
outputs) and forward+backward (`jax.grad` of that sum w.r.t. the params) with `common.time_jax`:
trace, lower, compile and run apart. It also times the default (`rnn_apply` with no `unroll`) and
records which value the default picked (`jrnn.policy.default_unroll`);
where the default's jaxpr is that of an unroll in the row, that unroll's check and timing are its own.

A point is skipped (and recorded with the reason) when `unroll` > T, or when its compile time,
predicted from the previous T's for the same unroll (linear in the number of unrolled steps), would
exceed `--cap-seconds`. `--quick` is the subset `make bench` runs (a few minutes on two cores);
`--smoke` a tiny grid for the test. Writes `<out>/scan_vs_unroll.{md,json}` and two plots,
`scan_vs_unroll_run.png` and `scan_vs_unroll_compile.png`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import common
import jax
import jax.numpy as jnp
import numpy as np

import jrnn
from jrnn.policy import default_unroll

CELLS = {"SimpleRNN": jrnn.SimpleRNN, "LSTM": jrnn.LSTM, "GRU": jrnn.GRU}
SIZES = {"tiny": (2, 4), "small": (4, 64), "large": (64, 512)}  # name: (B, H); I = H
DIRECTIONS = ("fwd", "fwd+bwd")
DIRECTION_NAMES = {"fwd": "forward", "fwd+bwd": "forward+backward"}

# A group is (size, Ts, directions), run for each of `cells`; `cap` and `calls` are the defaults of
# --cap-seconds and --calls; `run_budget`: fewer calls (3 at least) where they would take longer (s).
PRESETS = {
    "full": {
        "groups": [("small", (8, 32, 128, 512, 2048), DIRECTIONS),
                   ("large", (8, 32, 128, 512, 2048), DIRECTIONS)],
        "cells": tuple(CELLS), "unrolls": (1, 2, 4, 8, 16, 32, True), "cap": 20.0, "calls": 10,
        "run_budget": None,
    },
    "quick": {
        "groups": [("small", (8, 32, 128, 512), ("fwd",)),
                   ("large", (8, 32, 128), DIRECTIONS)],
        "cells": tuple(CELLS), "unrolls": (1, 2, 4, 8, 16, True), "cap": 10.0, "calls": 5,
        "run_budget": 1.0,
    },
    "smoke": {
        "groups": [("tiny", (3, 8), DIRECTIONS)],
        "cells": ("SimpleRNN",), "unrolls": (1, 2, True), "cap": 20.0, "calls": 3,
        "run_budget": None,
    },
}
RTOL, ATOL = 1e-4, 1e-5


def label(u) -> str:
    """The JSON/table name of an unroll value: "1", "2", ..., "True"."""
    return "True" if u is True else str(u)


def unrolled_steps(u, T: int) -> int:
    """Steps in the compiled graph: `T` for a full unroll, else one chunk of `u` plus the remainder."""
    if u is True or u >= T:
        return T
    return u + T % u


# --- the default's choice -------------------------------------------------------------------------------


DEFAULT_FN = "jrnn.policy.default_unroll"


def default_pick(params, T: int, B: int):
    """The unroll `rnn_apply` picks when none is given (`jrnn.policy.default_unroll`)."""
    return default_unroll(params.hidden_size, T, B)


# --- correctness ----------------------------------------------------------------------------------------


def check_outputs(params, xs, unrolls, default: bool = True) -> dict:
    """Max abs difference of each unroll's `(ys, h_T)` (and the default's) from unroll=1's, eagerly."""
    def run(**kw):
        ys, h = jrnn.rnn_apply(params, xs, **kw)
        return [np.asarray(a) for a in jax.tree.leaves((ys, h))]

    ref = run(unroll=1)
    out = {"1": {"ok": True, "max_abs_err": 0.0}}
    cases = [(label(u), {"unroll": u}) for u in unrolls if label(u) != "1"] + [("default", {})] * default
    for name, kw in cases:
        got = run(**kw)
        ok = all(np.allclose(g, r, rtol=RTOL, atol=ATOL) for g, r in zip(got, ref, strict=True))
        err = max(float(np.max(np.abs(g - r))) for g, r in zip(got, ref, strict=True))
        out[name] = {"ok": ok, "max_abs_err": err}
    return out


# --- timing ---------------------------------------------------------------------------------------------


def make_fn(direction: str, u):
    """`f(params, xs)`: the sum of the outputs, or its gradient w.r.t. the params. `u` None: default."""
    kw = {} if u is None else {"unroll": u}

    def loss(p, xs):
        return jrnn.rnn_apply(p, xs, **kw)[0].sum()

    return loss if direction == "fwd" else jax.grad(loss)


def first_call_s(t: dict) -> float:
    """Trace + lower + compile, seconds: what the first call costs beyond a run."""
    return (t["trace_ms"] + t["lower_ms"] + t["compile_ms"]) / 1e3


def skip_reason(prev, steps: int, cap: float):
    """Why to skip a point of `steps` unrolled steps, given the previous T's `history` entry; or None.

    The compile time is predicted linear in the unrolled steps from the previous T's.
    """
    if prev is None:
        return None
    if prev["first_call_s"] is None:
        return f"skipped at T={prev['T']}"
    predicted = prev["first_call_s"] * steps / prev["steps"]
    return f"predicted compile {predicted:.1f} s > cap {cap:g} s" if predicted > cap else None


def n_calls(prev, T: int, calls: int, run_budget) -> int:
    """`calls`, or fewer (3 at least) when the previous T's run time predicts more than `run_budget` s."""
    if run_budget is None or prev is None or prev.get("median_ms") is None:
        return calls
    predicted_s = prev["median_ms"] / 1e3 * T / prev["T"]
    return max(min(3, calls), min(calls, int(run_budget / predicted_s)))


def same_program(params, xs, candidates) -> object:
    """The first of `candidates` whose forward jaxpr is the default's (then the default runs that
    program, forward and backward), or None."""
    default = str(jax.make_jaxpr(make_fn("fwd", None))(params, xs))
    for u in candidates:
        if str(jax.make_jaxpr(make_fn("fwd", u))(params, xs)) == default:
            return u
    return None


TIMING_KEYS = ("trace_ms", "lower_ms", "compile_ms", "median_ms", "min_ms", "calls", "temp_bytes",
               "hlo_lines")


class Bench:
    """Times the grid point by point, keeping each line's previous T in `history`.

    `history[(cell, size, direction, unroll)]` holds the previous T's compile and run time, to predict
    the next T's compile (skip over `cap`) and run (fewer calls over `run_budget`).
    """

    def __init__(self, preset: dict, cap: float, calls: int, budget: float | None = None):
        self.preset, self.cap, self.calls, self.budget = preset, cap, calls, budget
        self.history = {}
        self.records = []
        self.not_run = []  # (cell, size, T) groups left out once the time budget was spent

    def run(self) -> list[dict]:
        t0 = time.perf_counter()
        for cell in self.preset["cells"]:
            for size, Ts, directions in self.preset["groups"]:
                B, H = SIZES[size]
                params = CELLS[cell].init(jax.random.key(0), H, H)
                for T in Ts:
                    if self.budget is not None and time.perf_counter() - t0 > self.budget:
                        self.not_run.append(f"{cell} {size} T={T}")
                        print(f"{cell} {size} T={T}: not run, time budget spent", flush=True)
                        continue
                    xs = jax.random.normal(jax.random.key(1), (B, T, H), jnp.float32)
                    self.row_group(cell, size, params, xs, directions)
        return self.records

    def row_group(self, cell: str, size: str, params, xs, directions) -> None:
        """Checks the outputs of every unroll at one (cell, size, T), then times each direction."""
        B, T, I = xs.shape
        H = params.hidden_size
        unrolls = [u for u in self.preset["unrolls"] if u is True or u <= T]
        pick, pick_error = default_pick(params, T, B), None
        picked = label(pick)
        t0 = time.perf_counter()
        # The default's program, if it is one of the grid's: the likeliest first (its pick, then ints
        # ascending, True last: the slowest to trace). Then its outputs need no check of their own.
        same = same_program(params, xs, sorted(unrolls, key=lambda u: (label(u) != picked, u is True)))
        check = check_outputs(params, xs, unrolls, default=same is None)
        if same is not None:
            check["default"] = {**check[label(same)], "same_program_as": label(same)}
        check_s = time.perf_counter() - t0
        bad = {k: v for k, v in check.items() if not v["ok"]}
        print(f"{cell} {size} T={T}: outputs checked in {check_s:.1f} s"
              + (f"; MISMATCH {bad}" if bad else ""), flush=True)
        base = {"cell": cell, "size": size, "B": B, "H": H, "I": I, "T": T, "check_s": check_s}
        for direction in directions:
            timed = {}  # unroll label -> record, those timed in this row
            for u in self.preset["unrolls"]:
                name = label(u)
                rec = {**base, "direction": direction, "unroll": name, "check": check.get(name)}
                if u is not True and u > T:
                    rec.update(status="skipped", reason=f"unroll {u} > T")
                elif not check[name]["ok"]:
                    rec.update(status="skipped", reason="outputs differ from unroll=1")
                elif self.time(rec, u, unrolled_steps(u, T), params, xs):
                    timed[name] = rec
                self.records.append(rec)
            rec = {**base, "direction": direction, "unroll": "default", "check": check["default"],
                   "picked": picked, "pick_error": pick_error,
                   "same_program_as": None if same is None else label(same)}
            self.records.append(self.default(rec, pick, timed, params, xs))

    def default(self, rec: dict, pick, timed: dict, params, xs) -> dict:
        """Times the default, or takes the timing of the unroll whose program it is."""
        same = rec["same_program_as"]
        if not rec["check"]["ok"]:
            rec.update(status="skipped", reason="outputs differ from unroll=1")
        elif same is None:
            self.time(rec, None, unrolled_steps(True if pick is None else pick, rec["T"]), params, xs)
        elif same in timed:
            src = timed[same]
            rec.update(status="ok", **{k: src[k] for k in TIMING_KEYS})
            self.history[self.key(rec)] = self.history[self.key(src)]
            print(f"  {rec['direction']:7} unroll=default same program as unroll={same}", flush=True)
        else:
            rec.update(status="skipped", reason=f"same program as unroll={same}, not timed")
        return rec

    @staticmethod
    def key(rec: dict) -> tuple:
        return rec["cell"], rec["size"], rec["direction"], rec["unroll"]

    def time(self, rec: dict, u, steps: int, params, xs) -> bool:
        """Times `rec`'s point (or records why it is skipped); True if timed."""
        T, direction, key = rec["T"], rec["direction"], self.key(rec)
        prev = self.history.get(key)
        reason = skip_reason(prev, steps, self.cap)
        if reason is not None:
            self.history[key] = {"T": T, "steps": steps, "first_call_s": None}
            rec.update(status="skipped", reason=reason)
            print(f"  {direction:7} unroll={rec['unroll']:7} skipped: {reason}", flush=True)
            return False
        calls = n_calls(prev, T, self.calls, self.preset["run_budget"])
        t = common.time_jax(make_fn(direction, u), params, xs, calls=calls)
        self.history[key] = {"T": T, "steps": steps, "first_call_s": first_call_s(t),
                             "median_ms": t["median_ms"]}
        rec.update(status="ok", **t)
        print(f"  {direction:7} unroll={rec['unroll']:7} {t['median_ms']:10.3f} ms"
              f"  compile {first_call_s(t):6.2f} s  ({t['calls']} calls)", flush=True)
        return True


# --- report ---------------------------------------------------------------------------------------------


def rows(records: list[dict]) -> dict:
    """`{(cell, size, direction): {T: {unroll label: record}}}` in grid order."""
    out = {}
    for r in records:
        out.setdefault((r["cell"], r["size"], r["direction"]), {}).setdefault(r["T"], {})[r["unroll"]] = r
    return out


def summarize(records: list[dict]) -> dict:
    """Per row: best unroll, speed-up over the scan, the default's ratio to the best. Per line: how
    the compile (first-call) time grows from T to 4T for unroll=True and 1, at T=128 -> 512 where
    both were timed, else at the largest such pair."""
    per_row, growth = [], []
    for (cell, size, direction), by_T in rows(records).items():
        for T, by_u in by_T.items():
            timed = {u: r["median_ms"] for u, r in by_u.items() if r["status"] == "ok" and u != "default"}
            if not timed:
                continue
            best = min(timed, key=timed.get)
            d = by_u.get("default", {})
            per_row.append({
                "cell": cell, "size": size, "direction": direction, "T": T, "best": best,
                "best_ms": timed[best], "scan_ms": timed.get("1"),
                "speedup_over_scan": timed["1"] / timed[best] if "1" in timed else None,
                "default_ms": d.get("median_ms"), "default_picked": d.get("picked"),
                "default_same_program_as": d.get("same_program_as"),
                "default_over_best": d["median_ms"] / timed[best] if d.get("status") == "ok" else None,
            })
        both = [T for T, by_u in by_T.items()
                if all(by_u.get(u, {}).get("status") == "ok" for u in ("1", "True"))]
        Ts = list(by_T)
        pairs = [(lo, Ts[i + 1]) for i, lo in enumerate(Ts[:-1]) if lo in both and Ts[i + 1] in both]
        pairs.sort(key=lambda pair: (pair != (128, 512), -pair[1]))
        entry = {"cell": cell, "size": size, "direction": direction, "T_lo": None, "T_hi": None,
                 "compile_ratio_unroll_True": None, "compile_ratio_unroll_1": None}
        if pairs:
            lo, hi = pairs[0]
            entry.update(T_lo=lo, T_hi=hi, **{
                f"compile_ratio_unroll_{u}": first_call_s(by_T[hi][u]) / first_call_s(by_T[lo][u])
                for u in ("True", "1")})
        growth.append(entry)
    return {"rows": per_row, "compile_growth": growth}


def fmt_ratio(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def markdown(data: dict) -> str:
    m, preset = data["machine"], data["preset"]
    calls = f"{data['calls']}" if PRESETS[preset]["run_budget"] is None else f"3 to {data['calls']}"
    unrolls = [label(u) for u in PRESETS[preset]["unrolls"]]
    lines = [
        "# Scan vs unroll: `jrnn.rnn_apply` run and compile time", "",
        f"`{data['command']}` ({data['runtime_s']:.0f} s)", "",
        f"{m['cpu']}, {m['cores']} cores, {m['device']} ({m['platform']}); Python {m['python']}, "
        f"JAX {m['jax']}; XLA_FLAGS=`{m['xla_flags']}`; {m['date']}.", "",
        f"Each cell: median run ms over {calls} calls (compile s = trace + lower + compile of `jax.jit`).",
        "**Bold**: fastest in the row. `—`: unroll > T. `skip`: predicted compile over the cap of "
        f"{data['cap_seconds']:g} s (the JSON says why).",
        "`default`: `rnn_apply` with no `unroll`; "
        + (f"(picks k): what `{data['default_fn']}` returned; " if data["default_fn"]
           else "(jrnn exposes no function for the default's pick); ")
        + "(= k): its jaxpr is unroll=k's, so that timing is its own.",
        "Every unroll's outputs and final state were checked against unroll=1's first "
        f"(rtol {data['rtol']:g}, atol {data['atol']:g}).", "",
    ]
    if data.get("not_run"):
        lines += ["Not run (the `--budget-seconds` was spent): " + ", ".join(data["not_run"]) + ".", ""]
    for (cell, size, direction), by_T in rows(data["results"]).items():
        r0 = next(iter(next(iter(by_T.values())).values()))
        lines += [f"## {cell}, {size} (B={r0['B']}, H={r0['H']}, I={r0['I']}), {DIRECTION_NAMES[direction]}",
                  "", "| T | " + " | ".join(unrolls) + " | default (picked) | default / best |",
                  "|---:|" + "---:|" * (len(unrolls) + 2)]
        for T, by_u in by_T.items():
            timed = {u: r["median_ms"] for u, r in by_u.items() if r["status"] == "ok" and u != "default"}
            best = min(timed, key=timed.get) if timed else None
            cells = []
            for u in unrolls:
                r = by_u.get(u)
                if r is None or r["status"] != "ok":
                    cells.append("—" if r is None or r["reason"].startswith("unroll") else "skip")
                    continue
                text = f"{r['median_ms']:.3g} ({first_call_s(r):.2g})"
                cells.append(f"**{text}**" if u == best else text)
            d = by_u.get("default")
            if d is None or d["status"] != "ok":
                cells += ["skip", "n/a"]
            else:
                how = [f"picks {d['picked']}"] * bool(d["picked"])
                how += [f"= {d['same_program_as']}"] * bool(d.get("same_program_as"))
                cells += [f"{d['median_ms']:.3g} ({', '.join(how) or '?'})",
                          fmt_ratio(d["median_ms"] / timed[best]) if best else "n/a"]
            lines.append(f"| {T} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Summary", "", *summary_lines(data["summary"]), ""]
    return "\n".join(lines)


def summary_lines(summary: dict) -> list[str]:
    out = ["Where unrolling pays: best unroll per row, and its speed-up over the scan (unroll=1):", ""]
    groups = {}
    for r in summary["rows"]:
        groups.setdefault((r["cell"], r["size"], r["direction"]), []).append(
            f"T={r['T']}: {r['best']} x{fmt_ratio(r['speedup_over_scan'])}")
    out += [f"- {c} {s} {d}: " + ", ".join(v) for (c, s, d), v in groups.items()]
    out += ["", "How compile (first-call) time grows with T, unroll=True against unroll=1:", ""]
    for g in summary["compile_growth"]:
        head = f"- {g['cell']} {g['size']} {g['direction']}: "
        if g["T_lo"] is None:
            out.append(head + "n/a (no two T with both timed)")
        else:
            out.append(head + f"T={g['T_lo']} -> {g['T_hi']}: unroll=True x"
                       f"{fmt_ratio(g['compile_ratio_unroll_True'])}, unroll=1 x"
                       f"{fmt_ratio(g['compile_ratio_unroll_1'])}")
    return out


def plot(data: dict, out: Path) -> list[str]:
    """Two figures, run and compile time against T; one subplot per cell/size/direction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    table = rows(data["results"])
    groups = list(dict.fromkeys((s, d) for _, s, d in table))
    cells = list(dict.fromkeys(c for c, _, _ in table))
    paths = []
    for what, ylabel, value in (("run", "median run (ms)", lambda r: r["median_ms"]),
                                ("compile", "trace + lower + compile (ms)", lambda r: first_call_s(r) * 1e3)):
        fig, axes = plt.subplots(len(cells), len(groups), figsize=(4.2 * len(groups), 3.2 * len(cells)),
                                 squeeze=False)
        for i, cell in enumerate(cells):
            for j, (size, direction) in enumerate(groups):
                ax = axes[i][j]
                by_T = table.get((cell, size, direction), {})
                names = list(dict.fromkeys(u for by_u in by_T.values() for u in by_u))
                for u in names:
                    ok = {T: by_u[u] for T, by_u in by_T.items() if u in by_u and by_u[u]["status"] == "ok"}
                    if ok:
                        style = {"color": "black", "linestyle": "--"} if u == "default" else {}
                        ax.plot(list(ok), [value(r) for r in ok.values()], marker="o", markersize=3,
                                label="default" if u == "default" else f"unroll={u}", **style)
                ax.set_xscale("log", base=2)
                ax.set_xticks(list(by_T), [str(T) for T in by_T])
                ax.xaxis.set_minor_locator(NullLocator())
                ax.set_yscale("log")
                ax.set_title(f"{cell}, {size}, {DIRECTION_NAMES[direction]}", fontsize=9)
                ax.set_xlabel("T")
                ax.set_ylabel(ylabel, fontsize=8)
                ax.grid(True, which="both", alpha=0.3)
                if i == 0 and j == 0:
                    ax.legend(fontsize=7)
        fig.suptitle(f"jrnn scan vs unroll, {what} ({data['machine']['cpu']}, JAX {data['machine']['jax']})",
                     fontsize=10)
        fig.tight_layout()
        path = out / f"scan_vs_unroll_{what}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(str(path))
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the subset `make bench` runs (a few minutes)")
    mode.add_argument("--smoke", action="store_true", help="a tiny grid, a few seconds (the test)")
    parser.add_argument("--cap-seconds", type=float, default=None,
                        help="skip points whose predicted compile exceeds this (default 20; 10 with --quick)")
    parser.add_argument("--calls", type=int, default=None, help="timed calls per point (default 10; 5 quick)")
    parser.add_argument("--out", type=Path, default=common.RESULTS, help="folder for the md, JSON and PNGs")
    parser.add_argument("--budget-seconds", type=float, default=None,
                        help="start no new (cell, size, T) after this many seconds (listed as not run)")
    args = parser.parse_args(argv)
    preset_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    preset = PRESETS[preset_name]
    cap = preset["cap"] if args.cap_seconds is None else args.cap_seconds
    calls = preset["calls"] if args.calls is None else args.calls
    command = shlex.join(["python", "bench/scan_vs_unroll.py", *(sys.argv[1:] if argv is None else argv)])

    t0 = time.perf_counter()
    bench = Bench(preset, cap, calls, args.budget_seconds)
    records = bench.run()
    data = {
        "command": command, "preset": preset_name, "machine": common.machine(), "cap_seconds": cap,
        "calls": calls, "rtol": RTOL, "atol": ATOL, "default_fn": DEFAULT_FN,
        "grid": {
            "cells": list(preset["cells"]), "unrolls": [label(u) for u in preset["unrolls"]],
            "groups": [{"size": s, "B": SIZES[s][0], "H": SIZES[s][1], "I": SIZES[s][1], "T": list(Ts),
                        "directions": list(d)} for s, Ts, d in preset["groups"]],
        },
        "results": records, "not_run": bench.not_run,
    }
    data["summary"] = summarize(records)
    data["runtime_s"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    data["plots"] = plot(data, args.out)
    md = markdown(data)
    saved, common.RESULTS = common.RESULTS, args.out  # common.write writes to common.RESULTS
    try:
        common.write("scan_vs_unroll", data, md)
    finally:
        common.RESULTS = saved
    print("\n" + "\n".join(summary_lines(data["summary"])))
    print(f"\nwrote {args.out}/scan_vs_unroll.{{md,json}} and {', '.join(data['plots'])} "
          f"in {data['runtime_s']:.0f} s")
    mismatches = [r for r in records if r.get("reason", "").startswith("outputs differ")]
    if mismatches:
        print(f"{len(mismatches)} points' outputs differ from unroll=1's: see the JSON", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
