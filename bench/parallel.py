"""Parallel vs sequential: MinGRU, MinLSTM and LRU by associative scan and by scan, against a GRU.

    python bench/parallel.py [--quick | --smoke] [--calls 10] [--ts 256,4096] [--save-every-row]
                             [--out bench/results]

For each sequence length T it first checks that `rnn_apply(..., mode="parallel")` gives the outputs and
final state of `mode="sequential"` (rtol 1e-4) for MinGRU, MinLSTM and LRU, then times the forward pass
(the sum of the outputs) and forward+backward (`jax.grad` of that sum w.r.t. the params) of eight
variants: MinGRU, MinLSTM and LRU (N = H complex states) in each mode, MinGRU in `mode="auto"`
(recording what `jrnn.policy.linear_scan` picked and whether its program is that mode's), and a GRU of
the same width in scan mode. B=16, H=128, I=H.

`common.time_jax` times trace, lower and compile apart and records the temp memory (with one call);
the run times are then taken interleaved: each round calls every variant of a (T, direction) once, in
turn, so that load from other jobs falls on all of them alike. Median and min over the rounds.

Reports per T: ms for each variant, the speed-up of MinGRU (its better mode) over the GRU, the
parallel/sequential ratio, the crossover length from which parallel beats sequential, and whether the
targets hold (MinGRU >= 10x faster than the GRU at T=4096 forward+backward; "auto" within 10% of the
better mode at every T). Writes `<out>/parallel.{md,json}` after each T and `<out>/parallel.png` at the
end. `--save-every-row` (bench/gpu.sh, where a compile takes seconds) times each variant on its own,
`calls` calls in a row instead of interleaved rounds, and saves the md and JSON after every one, so a
run cut short keeps every row it measured.
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
from jrnn.policy import CHUNKED_MIN_T, PARALLEL_MIN_T, linear_scan

PRESETS = {  # calls: interleaved rounds, fewer (3 at least) where they would take over `budget` s
    "full": {"Ts": (64, 256, 1024, 4096, 16384), "B": 16, "H": 128, "calls": 10, "budget": 60.0},
    "quick": {"Ts": (64, 256, 1024, 4096), "B": 16, "H": 128, "calls": 5, "budget": 15.0},
    "smoke": {"Ts": (6,), "B": 2, "H": 4, "calls": 3, "budget": None},
}
# name: (cell kind, mode); the GRU runs `rnn_apply(gru, xs)`, the scan.
VARIANTS = {
    "MinGRU sequential": ("MinGRU", "sequential"),
    "MinGRU chunked": ("MinGRU", "chunked"),
    "MinGRU parallel": ("MinGRU", "parallel"),
    "MinGRU auto": ("MinGRU", "auto"),
    "MinLSTM sequential": ("MinLSTM", "sequential"),
    "MinLSTM chunked": ("MinLSTM", "chunked"),
    "MinLSTM parallel": ("MinLSTM", "parallel"),
    "LRU sequential": ("LRU", "sequential"),
    "LRU chunked": ("LRU", "chunked"),
    "LRU parallel": ("LRU", "parallel"),
    "GRU scan": ("GRU", None),
}
KINDS = {"MinGRU": jrnn.MinGRU, "MinLSTM": jrnn.MinLSTM, "LRU": jrnn.LRU, "GRU": jrnn.GRU}
LINEAR = ("MinGRU", "MinLSTM", "LRU")
DIRECTIONS = {"fwd": "forward", "fwd+bwd": "forward+backward"}
RTOL, ATOL = 1e-4, 1e-5
TARGET_T, TARGET_SPEEDUP, AUTO_SLACK = 4096, 10.0, 1.10


def make_fn(direction: str, mode):
    """`f(params, xs)`: the sum of the outputs, or its gradient w.r.t. the params. `mode` None: default."""
    kw = {} if mode is None else {"mode": mode}

    def loss(p, xs):
        return jrnn.rnn_apply(p, xs, **kw)[0].sum()

    return loss if direction == "fwd" else jax.grad(loss)


def check(params: dict, xs) -> dict:
    """Per linear cell: max abs difference of the parallel and chunked `(ys, h_T)` from sequential's, and
    whether it is within rtol. One jitted program for all of them (compiles add up on two cores)."""
    def all_modes(params, xs):
        return {kind: [jrnn.rnn_apply(params[kind], xs, mode=m)
                       for m in ("sequential", "parallel", "chunked")] for kind in LINEAR}

    out = {}
    for kind, (seq, *others) in jax.jit(all_modes)(params, xs).items():
        pairs = [(np.asarray(p), np.asarray(s)) for other in others
                 for p, s in zip(jax.tree.leaves(other), jax.tree.leaves(seq), strict=True)]
        out[kind] = {"ok": all(np.allclose(p, s, rtol=RTOL, atol=ATOL) for p, s in pairs),
                     "max_abs_err": max(float(np.max(np.abs(p - s))) for p, s in pairs)}
    return out


def time_group(fns: dict, calls: int, budget) -> dict:
    """`fns`: `{name: (f, args)}`. `common.time_jax` (trace, lower, compile, one call) for each, then
    interleaved rounds of one call each; median and min over the rounds."""
    out = {}
    for name, (f, args) in fns.items():
        t = common.time_jax(f, *args, calls=1)
        out[name] = {**{k: v for k, v in t.items() if k not in ("median_ms", "min_ms", "calls")},
                     "time_jax_call_ms": t["median_ms"]}
        print(f"    {name:20} compiled in {first_call_s(t):5.1f} s", flush=True)
    round_s = sum(r["time_jax_call_ms"] for r in out.values()) / 1e3
    rounds = calls if budget is None else max(min(3, calls), min(calls, int(budget / round_s)))
    jitted = [(name, jax.jit(f), args) for name, (f, args) in fns.items()]  # time_jax's executables
    runs = {name: [] for name in fns}
    for i in range(rounds):
        for name, f, args in jitted[i % len(jitted):] + jitted[:i % len(jitted)]:  # rotate who goes first
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            runs[name].append(time.perf_counter() - t0)
    for name, r in runs.items():
        out[name].update(median_ms=float(np.median(r)) * 1e3, min_ms=float(np.min(r)) * 1e3, calls=len(r))
    return out


def first_call_s(t: dict) -> float:
    """Trace + lower + compile, seconds."""
    return (t["trace_ms"] + t["lower_ms"] + t["compile_ms"]) / 1e3


def same_program(params, xs, mode_a, mode_b) -> bool:
    return str(jax.make_jaxpr(make_fn("fwd", mode_a))(params, xs)) == str(
        jax.make_jaxpr(make_fn("fwd", mode_b))(params, xs))


def time_one(f, args, calls: int) -> dict:
    """`common.time_jax` with `calls` calls in a row (`--save-every-row`)."""
    t = common.time_jax(f, *args, calls=calls)
    print(f"    compiled in {first_call_s(t):5.1f} s", end="", flush=True)
    return t


def run(preset: dict, calls: int, done=None, every_row: bool = False) -> tuple[list, list]:
    """Checks, then times every variant at every T; returns `(checks, records)`.

    `done(checks, records)`, if given, is called after each T (to save what is measured so far), and
    with `every_row` after each variant too, each timed on its own (`time_one`, not interleaved).
    """
    B, H = preset["B"], preset["H"]
    params = {kind: cls.init(jax.random.key(0), H, H) for kind, cls in KINDS.items()}
    checks, records = [], []
    for T in preset["Ts"]:
        if done is not None and records:
            done(checks, records)
        xs = jnp.asarray(np.random.default_rng(T).standard_normal((B, T, H), np.float32))  # no compile
        ok = {}
        for kind, c in check({k: params[k] for k in LINEAR}, xs).items():
            ok[kind] = c["ok"]
            checks.append({"cell": kind, "T": T, **c})
            print(f"T={T} {kind}: parallel and chunked vs sequential max abs err {c['max_abs_err']:.2e}"
                  + ("" if c["ok"] else " MISMATCH"), flush=True)
        picked = linear_scan(params["MinGRU"], "auto", T) or "sequential"
        same = same_program(params["MinGRU"], xs, "auto", picked)
        for direction in DIRECTIONS:
            print(f"  {direction}", flush=True)
            fns, skipped = {}, {}
            for name, (kind, mode) in VARIANTS.items():
                if mode in ("parallel", "chunked") and not ok[kind]:
                    skipped[name] = f"{mode} outputs differ from sequential"
                elif mode == "auto" and same:
                    continue  # the picked mode's program: its timing is auto's
                else:
                    fns[name] = (make_fn(direction, mode), (params[kind], xs))
            timed = {} if every_row else time_group(fns, calls, preset["budget"])
            for name, (kind, mode) in VARIANTS.items():
                if every_row and name in fns:
                    print(f"    {name:20}", end="", flush=True)
                    timed[name] = time_one(*fns[name], calls)
                    print(flush=True)
                rec = {"variant": name, "cell": kind, "mode": mode or "scan", "direction": direction,
                       "T": T, "B": B, "H": H, "I": H}
                if mode == "auto":
                    rec.update(picked=picked, same_program_as_picked=same)
                if name in skipped:
                    rec.update(status="skipped", reason=skipped[name])
                elif mode == "auto" and same:
                    src = f"MinGRU {picked}"
                    rec.update(timing_of=src, **({"status": "ok", **timed[src]} if src in timed else
                                                 {"status": "skipped", "reason": f"{src} skipped"}))
                else:
                    rec.update(status="ok", **timed[name])
                    print(f"    {name:20} {rec['median_ms']:10.2f} ms (min {rec['min_ms']:.2f}, "
                          f"{rec['calls']} calls)", flush=True)
                records.append(rec)
                if every_row and done is not None:
                    done(checks, records)
    return checks, records


# --- report ---------------------------------------------------------------------------------------------


def by_row(records: list[dict]) -> dict:
    """`{(direction, T): {variant: record}}` in grid order."""
    out = {}
    for r in records:
        out.setdefault((r["direction"], r["T"]), {})[r["variant"]] = r
    return out


def ratio(a, b):
    return None if a is None or b is None else a / b


def summarize(records: list[dict]) -> dict:
    """Per (direction, T): the ratios; per (cell, direction): the crossover; and the two targets."""
    rows = []
    for (direction, T), by_v in by_row(records).items():
        ms = {v: r["median_ms"] for v, r in by_v.items() if r["status"] == "ok"}
        modes = {m: ms[f"MinGRU {m}"] for m in ("sequential", "chunked", "parallel") if f"MinGRU {m}" in ms}
        best = min(modes, key=modes.get) if modes else None  # None, and auto {}: a row cut short
        auto = by_v.get("MinGRU auto", {})
        auto_over_best = ratio(ms.get("MinGRU auto"), modes.get(best))
        rows.append({
            "direction": direction, "T": T, "ms": ms, "mingru_best_mode": best,
            "mingru_speedup_over_gru": ratio(ms.get("GRU scan"), modes[best]),
            "parallel_over_sequential": {k: ratio(ms.get(f"{k} parallel"), ms.get(f"{k} sequential"))
                                         for k in LINEAR},
            "chunked_over_sequential": {k: ratio(ms.get(f"{k} chunked"), ms.get(f"{k} sequential"))
                                        for k in LINEAR},
            "auto_picked": auto.get("picked"),
            "auto_same_program_as_picked": auto.get("same_program_as_picked"),
            "auto_over_best": auto_over_best,
            # Within 10% as measured, or the very program of the better mode (the gap is then noise).
            "auto_ok": None if not auto or len(modes) < 2 else auto_over_best is not None and (
                auto_over_best <= AUTO_SLACK
                or (auto["picked"] == best and auto["same_program_as_picked"])),
        })
    crossover = []
    for kind in LINEAR:
        for direction in DIRECTIONS:
            pts = [(r["T"], r["parallel_over_sequential"][kind]) for r in rows if r["direction"] == direction]
            pts = [(T, x) for T, x in pts if x is not None]
            T_cross = None
            for i, (T, _) in enumerate(pts):  # the first T from which parallel wins at every longer T
                if all(x < 1 for _, x in pts[i:]):
                    T_cross = T
                    break
            crossover.append({"cell": kind, "direction": direction, "T": T_cross,
                              "max_T": max((T for T, _ in pts), default=None),
                              "parallel_faster_at": [T for T, x in pts if x < 1]})
    target_row = next((r for r in rows if r["direction"] == "fwd+bwd" and r["T"] == TARGET_T), None)
    speedup = None if target_row is None else target_row["mingru_speedup_over_gru"]
    bad_auto = [f"{r['direction']} T={r['T']}" for r in rows if r["auto_ok"] is False]
    targets = {
        "mingru_speedup_at_target": {
            "T": TARGET_T, "direction": "fwd+bwd", "want": TARGET_SPEEDUP, "got": speedup,
            "holds": None if speedup is None else speedup >= TARGET_SPEEDUP},
        "auto_within_10pct": {
            "want": AUTO_SLACK, "worst": max((r["auto_over_best"] or np.inf for r in rows), default=None),
            "failing": bad_auto, "holds": not bad_auto},
    }
    return {"rows": rows, "crossover": crossover, "targets": targets}


def fmt(x, spec: str = ".3g") -> str:
    return "n/a" if x is None else format(x, spec)


def summary_lines(summary: dict) -> list[str]:
    out = ["Crossover (the shortest T from which `mode=\"parallel\"` beats `\"sequential\"` at every longer "
           "T measured):", ""]
    for c in summary["crossover"]:
        where = (f"T = {c['T']}" if c["T"] is not None
                 else f"none on this {jax.default_backend().upper()} up to T={c['max_T']}")
        wins = c["parallel_faster_at"]
        if c["T"] is None and wins:
            where += f" (parallel faster at T={', '.join(map(str, wins))} only)"
        out.append(f"- {c['cell']}, {DIRECTIONS[c['direction']]}: {where}")
    s, a = summary["targets"]["mingru_speedup_at_target"], summary["targets"]["auto_within_10pct"]
    verdict = lambda h: "n/a" if h is None else "HOLDS" if h else "DOES NOT HOLD"  # noqa: E731
    out += ["", "Targets:", "",
            f"- MinGRU (better mode) >= {s['want']:g}x faster than the GRU at T={s['T']} forward+backward: "
            f"{verdict(s['holds'])}"
            + (" (T not in this grid)" if s["got"] is None else f" (x{s['got']:.2f})"),
            f"- `mode=\"auto\"` within {(a['want'] - 1) * 100:.0f}% of the better mode at every T: "
            f"{verdict(a['holds'])} (worst auto / best {fmt(a['worst'], '.2f')}"
            + (f"; fails at {', '.join(a['failing'])}" if a["failing"] else "") + ")"]
    return out


def markdown(data: dict) -> str:
    m, g = data["machine"], data["grid"]
    lines = [
        "# Parallel vs sequential: MinGRU, MinLSTM and LRU by associative scan, against a GRU", "",
        f"`{data['command']}` ({data['runtime_s']:.0f} s)", "",
        *([] if data["complete"] else ["**Partial**: saved after the last row measured; the rest of the grid "
                                       "was not run.", ""]),
        f"{m['cpu']}, {m['cores']} cores, {m['device']} ({m['platform']}); Python {m['python']}, "
        f"JAX {m['jax']}; XLA_FLAGS=`{m['xla_flags']}`; {m['date']}.", "",
        f"B={g['B']}, H={g['H']}, I=H, float32. Median ms per call over {data['rounds']} "
        + ("calls in a row per variant, each variant alone (`--save-every-row`; min in the JSON). "
           if data["timing"] == "each variant alone" else
           "interleaved rounds (each round calls every variant of the row once; min in the JSON). ")
        + "Forward: the sum of "
        "the outputs; forward+backward: its gradient w.r.t. the params. `GRU scan`: `rnn_apply(gru, xs)`.",
        "`MinGRU auto`: `mode=\"auto\"`; (picks m) is `jrnn.policy.linear_scan(cell, \"auto\", T)`, "
        f"`PARALLEL_MIN_T` = {data['parallel_min_t']}, `CHUNKED_MIN_T` = {data.get('chunked_min_t')}; "
        "(= it): its jaxpr is the picked mode's, so that "
        "timing is its own. Best: MinGRU's better mode.",
        "Parallel and chunked outputs and final state were checked against sequential first (rtol "
        f"{data['rtol']:g}, atol {data['atol']:g}): max abs err "
        + ", ".join(f"{c['cell']} T={c['T']} {c['max_abs_err']:.1e}" for c in data["checks"]) + ".",
        "LRU: N = H complex states, output width I = H.", "",
    ]
    names = list(VARIANTS)
    for direction, title in DIRECTIONS.items():
        lines += [f"## {title}", "",
                  "| T | " + " | ".join(names)
                  + " | GRU / MinGRU best | " + " | ".join(f"par / seq {k}" for k in LINEAR)
                  + " | " + " | ".join(f"chunked / seq {k}" for k in LINEAR) + " | auto / best |",
                  "|---:|" + "---:|" * (len(names) + 2 + 2 * len(LINEAR))]
        for row in data["summary"]["rows"]:
            if row["direction"] != direction:
                continue
            cells = []
            for name in names:
                x = row["ms"].get(name)
                text = "skip" if x is None else f"{x:.3g}" if x < 1000 else f"{x:.0f}"
                if name == "MinGRU auto":
                    how = [f"picks {row['auto_picked']}"]
                    how += ["= it"] * bool(row["auto_same_program_as_picked"])
                    text += f" ({', '.join(how)})"
                cells.append(text)
            pos, cos = row["parallel_over_sequential"], row.get("chunked_over_sequential", {})
            cells += [f"x{fmt(row['mingru_speedup_over_gru'], '.2f')} ({row['mingru_best_mode']})",
                      *(fmt(x, ".2f") for x in (*(pos[k] for k in LINEAR), *(cos.get(k) for k in LINEAR),
                                                 row["auto_over_best"]))]
            lines.append(f"| {row['T']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## First call: trace + lower + compile (s)", "",
              "| direction | T | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    for (direction, T), by_v in by_row(data["results"]).items():
        cells = ["n/a" if n not in by_v else "skip" if by_v[n]["status"] != "ok"
                 else f"= {by_v[n]['picked']}" if by_v[n].get("timing_of")
                 else fmt(first_call_s(by_v[n]), ".2g") for n in names]
        lines.append(f"| {direction} | {T} | " + " | ".join(cells) + " |")
    lines += ["", "## Summary", "", *summary_lines(data["summary"]), ""]
    return "\n".join(lines)


def plot(data: dict, path: Path) -> None:
    """ms against T, log-log, one line per variant; forward and forward+backward side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    table = by_row(data["results"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (direction, title) in zip(axes, DIRECTIONS.items(), strict=True):
        for name in VARIANTS:
            pts = [(T, by_v[name]["median_ms"]) for (d, T), by_v in table.items()
                   if d == direction and name in by_v and by_v[name]["status"] == "ok"]
            style = {"linestyle": "--", "color": "black"} if name == "MinGRU auto" else {}
            ax.plot([T for T, _ in pts], [x for _, x in pts], marker="o", markersize=3, label=name, **style)
        ax.set_xscale("log", base=2)
        ax.set_xticks(data["grid"]["Ts"], [str(T) for T in data["grid"]["Ts"]])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("T")
        ax.set_ylabel("median ms per call")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    m = data["machine"]
    fig.suptitle(f"jrnn parallel vs sequential, B={data['grid']['B']}, H={data['grid']['H']} "
                 f"({m['cpu']}, JAX {m['jax']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    preset_arg = parser.add_mutually_exclusive_group()
    preset_arg.add_argument("--quick", action="store_true", help="T up to 4096, fewer calls (a few minutes)")
    preset_arg.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds (the test)")
    parser.add_argument("--calls", type=int, default=None, help="interleaved rounds (default 10; 5 quick)")
    parser.add_argument("--ts", default=None, help="sequence lengths, e.g. 256,4096 (default: the preset's)")
    parser.add_argument("--save-every-row", action="store_true",
                        help="time each variant alone, saving after every one (a run cut short keeps them)")
    parser.add_argument("--out", type=Path, default=common.RESULTS, help="folder for the md, JSON and PNG")
    args = parser.parse_args(argv)
    preset_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    preset = PRESETS[preset_name]
    if args.ts:
        preset = {**preset, "Ts": tuple(int(t) for t in args.ts.split(","))}
    calls = preset["calls"] if args.calls is None else args.calls
    command = shlex.join(["python", "bench/parallel.py", *(sys.argv[1:] if argv is None else argv)])

    t0 = time.perf_counter()

    def report(checks, records, final: bool = False) -> dict:
        """Writes the md and JSON of what is measured so far, and the plot when `final`; returns the data."""
        data = {
            "command": command, "preset": preset_name, "machine": common.machine(), "calls": calls,
            "rtol": RTOL, "atol": ATOL, "parallel_min_t": dict(PARALLEL_MIN_T),
            "chunked_min_t": dict(CHUNKED_MIN_T),
            "grid": {"Ts": list(preset["Ts"]), "B": preset["B"], "H": preset["H"], "I": preset["H"],
                     "variants": {n: {"cell": k, "mode": m or "scan"} for n, (k, m) in VARIANTS.items()},
                     "directions": list(DIRECTIONS)},
            "checks": checks, "results": records, "summary": summarize(records), "complete": final,
            "timing": "each variant alone" if args.save_every_row else "interleaved rounds",
        }
        rounds = sorted({r["calls"] for r in records if r["status"] == "ok"})
        data["rounds"] = f"{rounds[0]} to {rounds[-1]}" if len(rounds) > 1 else f"{rounds[0]}"
        data["runtime_s"] = time.perf_counter() - t0
        args.out.mkdir(parents=True, exist_ok=True)
        data["plot"] = str(args.out / "parallel.png")
        if final:  # a few seconds of matplotlib: not after every row
            plot(data, args.out / "parallel.png")
        saved, common.RESULTS = common.RESULTS, args.out  # common.write writes to common.RESULTS
        try:
            common.write("parallel", data, markdown(data))
        finally:
            common.RESULTS = saved
        return data

    checks, records = run(preset, calls, done=report, every_row=args.save_every_row)
    data = report(checks, records, final=True)
    print("\n" + "\n".join(summary_lines(data["summary"])))
    print(f"\nwrote {args.out}/parallel.{{md,json,png}} in {data['runtime_s']:.0f} s")
    if not all(c["ok"] for c in checks):
        print("parallel outputs differ from sequential: see the JSON", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
