"""Smoke test of bench/parallel.py: its `--smoke` grid runs in-process and writes its files.

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
    monkeypatch.setattr(sys, "argv", [str(BENCH / "parallel.py"), "--smoke", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(BENCH / "parallel.py"), run_name="__main__")
    assert exit_info.value.code == 0

    data = json.loads((tmp_path / "parallel.json").read_text())
    md = (tmp_path / "parallel.md").read_text()
    assert (tmp_path / "parallel.png").stat().st_size > 0
    assert {"command", "preset", "machine", "calls", "rounds", "rtol", "parallel_min_t", "grid",
            "checks", "results", "summary", "runtime_s", "plot"} <= set(data)
    assert data["preset"] == "smoke" and "--smoke" in data["command"]
    assert {"cpu", "cores", "device", "jax"} <= set(data["machine"])
    assert data["grid"]["Ts"] == [4, 16] and (data["grid"]["B"], data["grid"]["H"]) == (2, 4)

    assert {(c["cell"], c["T"]) for c in data["checks"]} == {
        (k, T) for k in ("MinGRU", "MinLSTM", "LRU") for T in (4, 16)}
    assert all(c["ok"] for c in data["checks"])
    variants = ("MinGRU sequential", "MinGRU parallel", "MinGRU auto", "MinLSTM sequential",
                "MinLSTM parallel", "LRU sequential", "LRU parallel", "GRU scan")
    results = data["results"]
    assert {(r["variant"], r["direction"], r["T"]) for r in results} == {
        (v, d, T) for v in variants for d in ("fwd", "fwd+bwd") for T in (4, 16)}
    for r in results:
        assert r["status"] == "ok"
        assert {"trace_ms", "lower_ms", "compile_ms", "median_ms", "min_ms", "calls", "temp_bytes"} <= set(r)
        assert 0 < r["min_ms"] <= r["median_ms"]
        if r["variant"] == "MinGRU auto":
            assert r["picked"] in ("sequential", "parallel") and isinstance(r["same_program_as_picked"], bool)

    summary = data["summary"]
    assert len(summary["rows"]) == 4 and len(summary["crossover"]) == 6
    assert {"mingru_speedup_over_gru", "parallel_over_sequential", "auto_picked", "auto_over_best",
            "auto_ok"} <= set(summary["rows"][0])
    targets = summary["targets"]
    assert targets["mingru_speedup_at_target"]["holds"] is None  # T=4096 is not in the smoke grid
    assert isinstance(targets["auto_within_10pct"]["holds"], bool)

    assert md.startswith("# Parallel vs sequential") and data["machine"]["jax"] in md and "--smoke" in md
    for text in ("## forward\n", "## forward+backward", "## Summary", "Crossover", "Targets", "LRU"):
        assert text in md
