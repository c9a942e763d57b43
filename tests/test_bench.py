"""Smoke tests of the benchmark scripts: each runs its `--smoke` grid in-process and writes its files.

In-process, so the conftest's strict dtype promotion, rank promotion "raise" and warnings-as-errors
hold inside the scripts too. Each test writes under `tmp_path`, never to bench/results.
"""

import json
import runpy
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run_script(name: str, monkeypatch, *args: str) -> int:
    """Runs `bench/<name>` as `__main__` with `args`; returns its exit code."""
    monkeypatch.syspath_prepend(str(BENCH))  # the scripts `import common`, as when run from a shell
    monkeypatch.setattr(sys, "argv", [str(BENCH / name), *args])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(BENCH / name), run_name="__main__")
    return exit_info.value.code


# --- bench/scan_vs_unroll.py ----------------------------------------------------------------------------


def test_scan_vs_unroll_smoke(tmp_path, monkeypatch):
    assert run_script("scan_vs_unroll.py", monkeypatch, "--smoke", "--out", str(tmp_path)) == 0
    data = json.loads((tmp_path / "scan_vs_unroll.json").read_text())
    md = (tmp_path / "scan_vs_unroll.md").read_text()
    for name in ("scan_vs_unroll_run.png", "scan_vs_unroll_compile.png"):
        assert (tmp_path / name).stat().st_size > 0

    assert {"command", "preset", "machine", "cap_seconds", "calls", "default_fn", "grid", "results",
            "summary", "runtime_s", "plots"} <= set(data)
    assert data["preset"] == "smoke" and "--smoke" in data["command"]
    assert {"cpu", "cores", "device", "jax"} <= set(data["machine"])
    results = data["results"]
    # SimpleRNN, T in {3, 8}, forward and forward+backward, unroll 1, 2, True and the default.
    assert {(r["T"], r["direction"], r["unroll"]) for r in results} == {
        (T, d, u) for T in (3, 8) for d in ("fwd", "fwd+bwd") for u in ("1", "2", "True", "default")}
    for r in results:
        assert r["status"] in ("ok", "skipped")
        if r["status"] == "ok":
            assert {"trace_ms", "lower_ms", "compile_ms", "median_ms", "min_ms", "calls", "temp_bytes",
                    "hlo_lines"} <= set(r)
            assert 0 < r["min_ms"] <= r["median_ms"]
            assert r["check"] is None or r["check"]["ok"]  # unroll=1 is the reference: no check
        else:
            assert r["reason"]
    assert all(r["status"] == "ok" for r in results)  # nothing in the tiny grid nears the cap
    assert data["summary"]["rows"] and data["summary"]["compile_growth"]
    assert {"best", "speedup_over_scan", "default_over_best"} <= set(data["summary"]["rows"][0])

    assert md.startswith("# Scan vs unroll") and data["machine"]["jax"] in md and "--smoke" in md
    assert "## SimpleRNN, tiny (B=2, H=4, I=4), forward+backward" in md and "**" in md and "## Summary" in md


# --- bench/peers.py -------------------------------------------------------------------------------------


def test_peers_smoke(tmp_path, monkeypatch):
    """Every installed peer builds, matches jrnn's outputs and is timed, at tiny sizes; the md and JSON
    on disk are rewritten after every library's rows (what a run killed by `timeout` keeps)."""
    monkeypatch.syspath_prepend(str(BENCH))
    import common  # the module the script imports

    saves, write = [], common.write

    def spy(name, data, markdown):  # what is on disk after each save
        write(name, data, markdown)
        saves.append(json.loads((tmp_path / f"{name}.json").read_text()))

    monkeypatch.setattr(common, "write", spy)
    args = ("--smoke", "--workloads", "W1,W2", "--unrolls", "1", "--out", str(tmp_path))
    assert run_script("peers.py", monkeypatch, *args) == 0
    data = json.loads((tmp_path / "peers_smoke.json").read_text())
    first = saves[0]  # after jrnn's default row of W1, before anything else was measured
    assert [(r["library"], r["direction"]) for r in first["rows"]] == [("jrnn default", "fwd"),
                                                                      ("jrnn default", "fwd+bwd")]
    assert first["not_run"] == ["W2"] and not first["complete"] and data["complete"]
    # one save per library (two rows each), then the final one
    assert [len(s["rows"]) for s in saves] == [*range(2, len(data["rows"]) + 1, 2), len(data["rows"])]
    assert saves[-2]["rows"] == data["rows"]
    assert (tmp_path / "peers_smoke.png").stat().st_size > 0
    assert set(data["workloads"]) == {"W1", "W2"} and data["not_run"] == []
    assert data["peak"]["peak_gflops"] > 0
    rows = {(r["workload"], r["library"], r["direction"]): r for r in data["rows"]}
    for w in ("W1", "W2"):
        flax = "" if w == "W1" else " OptimizedLSTMCell"
        for library in ("jrnn default", "jrnn best", "jrnn autodiff", "Flax linen" + flax, "Flax nnx" + flax,
                        "Haiku dynamic_unroll", "Keras 3 (JAX)", "PyTorch eager"):
            for d in ("fwd", "fwd+bwd"):
                r = rows[w, library, d]
                assert r["status"] == "ok", r
                assert r["median_ms"] > 0 and r["ratio"] >= 1 and r["pct_peak"] > 0
    assert rows["W2", "Equinox + lax.scan", "fwd"]["status"] == "ok"
    assert "# jrnn vs peers" in (tmp_path / "peers_smoke.md").read_text()


# --- bench/checkpoint.py --------------------------------------------------------------------------------


def test_checkpoint_smoke(tmp_path, monkeypatch):
    assert run_script("checkpoint.py", monkeypatch, "--smoke", "--calls", "2", "--out", str(tmp_path)) == 0
    data = json.loads((tmp_path / "checkpoint_smoke.json").read_text())
    assert [(r["layout"], r["checkpoint"]) for r in data["rows"]] == [
        ("batch-major", None), ("batch-major", 8), ("time-major", None), ("time-major", 8)]
    for r in data["rows"]:
        assert r["temp_mib"] >= 0 and 0 < r["min_ms"] <= r["median_ms"]
        if r["checkpoint"]:
            assert r["grad_max_rel_err"] < 1e-4 and r["memory_cut"] > 1
            assert isinstance(r["meets_target"], bool)
    assert "| time-major | 8 |" in (tmp_path / "checkpoint_smoke.md").read_text()
