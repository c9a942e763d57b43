"""What every benchmark shares: machine facts, timing trace/compile/run apart, the matmul peak.

Each script checks correctness first, then times, then prints a table and writes JSON beside it.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    """The facts a reader needs to compare figures: CPU, cores, device, versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = jax.devices()[0]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "device": getattr(dev, "device_kind", dev.platform),
        "platform": dev.platform,
        "device_count": jax.device_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def time_jax(f, *args, calls: int = 10, min_seconds: float = 0.0) -> dict:
    """Times `jax.jit(f)` on `args`: trace, compile, then `calls`+ runs; medians in ms.

    Also records the compiled temp memory and the HLO size (lines of the optimised module).
    """
    t0 = time.perf_counter()
    traced = jax.jit(f).trace(*args)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    compiled = lowered.compile()
    t3 = time.perf_counter()
    jax.block_until_ready(compiled(*args))  # warm-up
    runs = []
    while len(runs) < calls or sum(runs) < min_seconds:
        t = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        runs.append(time.perf_counter() - t)
    mem = compiled.memory_analysis()
    return {
        "trace_ms": (t1 - t0) * 1e3,
        "lower_ms": (t2 - t1) * 1e3,
        "compile_ms": (t3 - t2) * 1e3,
        "median_ms": float(np.median(runs)) * 1e3,
        "min_ms": float(np.min(runs)) * 1e3,
        "calls": len(runs),
        "temp_bytes": getattr(mem, "temp_size_in_bytes", None) if mem is not None else None,
        "hlo_lines": len(compiled.as_text().splitlines()),
    }


def time_call(f, calls: int = 10) -> dict:
    """Times a plain Python callable (e.g. PyTorch eager) that blocks until done; ms."""
    f()
    runs = []
    for _ in range(calls):
        t = time.perf_counter()
        f()
        runs.append(time.perf_counter() - t)
    return {"median_ms": float(np.median(runs)) * 1e3, "min_ms": float(np.min(runs)) * 1e3,
            "calls": len(runs)}


def matmul_peak(n: int = 2048, calls: int = 5) -> dict:
    """Float32 matmul GFLOP/s: the best of a few large square products, in JAX and in PyTorch."""
    out = {}
    for size in (n // 2, n):
        a = jnp.ones((size, size), jnp.float32)
        t = time_jax(lambda a: a @ a, a, calls=calls)
        out[f"jax_{size}"] = 2 * size**3 / t["min_ms"] / 1e6
    try:
        import torch

        for size in (n // 2, n):
            a = torch.ones(size, size)
            t = time_call(lambda a=a: a @ a, calls=calls)
            out[f"torch_{size}"] = 2 * size**3 / t["min_ms"] / 1e6
    except ImportError:
        pass
    out["peak_gflops"] = max(out.values())
    return out


def write(name: str, data: dict, markdown: str) -> None:
    """Writes `results/<name>.json` and `results/<name>.md`, each whole or not at all (a temporary file
    renamed over the old one): a run killed while saving keeps the previous save."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    for path, text in ((RESULTS / f"{name}.json", json.dumps(data, indent=1, default=float) + "\n"),
                       (RESULTS / f"{name}.md", markdown)):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
