"""Smoke test of bench/parallel.py: its `--smoke` grid runs in-process and writes its files, saving
after every row as bench/gpu.sh runs it (`--save-every-row`); the interleaved timing on its own.

In-process, so the conftest's strict dtype promotion, rank promotion "raise" and warnings-as-errors
hold inside the script too. It writes under `tmp_path`, never to bench/results.
"""

import json
import runpy
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_parallel_smoke(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # the script does `import common`, as when run from a shell
    import common

    saves, write = [], common.write

    def spy(name, data, markdown):  # what is on disk after each save
        write(name, data, markdown)
        saves.append(json.loads((tmp_path / f"{name}.json").read_text()))

    monkeypatch.setattr(common, "write", spy)
    monkeypatch.setattr(sys, "argv", [str(BENCH / "parallel.py"), "--smoke", "--save-every-row",
                                      "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(BENCH / "parallel.py"), run_name="__main__")
    assert exit_info.value.code == 0

    data = json.loads((tmp_path / "parallel.json").read_text())
    first = saves[0]  # after the first variant was timed, before the others
    assert [(r["variant"], r["direction"], r["T"]) for r in first["results"]] == [
        ("MinGRU sequential", "fwd", 6)]
    assert not first["complete"] and data["complete"] and data["timing"] == "each variant alone"
    assert "**Partial**" not in (tmp_path / "parallel.md").read_text()
    counts = [len(s["results"]) for s in saves]  # every row saved as soon as it is measured
    assert counts == sorted(counts) and set(counts) == set(range(1, len(data["results"]) + 1))
    md = (tmp_path / "parallel.md").read_text()
    assert (tmp_path / "parallel.png").stat().st_size > 0
    assert {"command", "preset", "machine", "calls", "rounds", "rtol", "parallel_min_t", "grid",
            "checks", "results", "summary", "runtime_s", "plot"} <= set(data)
    assert data["preset"] == "smoke" and "--smoke" in data["command"]
    assert {"cpu", "cores", "device", "jax"} <= set(data["machine"])
    assert data["grid"]["Ts"] == [6] and (data["grid"]["B"], data["grid"]["H"]) == (2, 4)

    assert {(c["cell"], c["T"]) for c in data["checks"]} == {
        (k, 6) for k in ("MinGRU", "MinLSTM", "LRU")}
    assert all(c["ok"] for c in data["checks"])
    variants = ("MinGRU sequential", "MinGRU chunked", "MinGRU parallel", "MinGRU auto", "MinLSTM sequential",
                "MinLSTM chunked", "MinLSTM parallel", "LRU sequential", "LRU chunked", "LRU parallel",
                "GRU scan")
    results = data["results"]
    assert {(r["variant"], r["direction"], r["T"]) for r in results} == {
        (v, d, 6) for v in variants for d in ("fwd", "fwd+bwd")}
    for r in results:
        assert r["status"] == "ok"
        assert {"trace_ms", "lower_ms", "compile_ms", "median_ms", "min_ms", "calls", "temp_bytes"} <= set(r)
        assert 0 < r["min_ms"] <= r["median_ms"]
        if r["variant"] == "MinGRU auto":
            assert r["picked"] in ("sequential", "chunked", "parallel")
            assert isinstance(r["same_program_as_picked"], bool)

    summary = data["summary"]
    assert len(summary["rows"]) == 2 and len(summary["crossover"]) == 6
    assert {"mingru_speedup_over_gru", "parallel_over_sequential", "chunked_over_sequential", "auto_picked",
            "auto_over_best", "auto_ok"} <= set(summary["rows"][0])
    targets = summary["targets"]
    assert targets["mingru_speedup_at_target"]["holds"] is None  # T=4096 is not in the smoke grid
    assert isinstance(targets["auto_within_10pct"]["holds"], bool)

    assert md.startswith("# Parallel vs sequential") and data["machine"]["jax"] in md and "--smoke" in md
    for text in ("## forward\n", "## forward+backward", "## Summary", "Crossover", "Targets", "LRU"):
        assert text in md


def test_time_group_interleaves(monkeypatch):
    """The default timing (without `--save-every-row`): rounds of one call per variant."""
    monkeypatch.syspath_prepend(str(BENCH))
    import jax.numpy as jnp
    import parallel

    x = jnp.ones(3)
    out = parallel.time_group({"sin": (jnp.sin, (x,)), "cos": (jnp.cos, (x,))}, calls=4, budget=None)
    for r in out.values():
        assert r["calls"] == 4 and 0 < r["min_ms"] <= r["median_ms"] and r["compile_ms"] > 0
        assert r["time_jax_call_ms"] > 0 and "hlo_lines" in r
