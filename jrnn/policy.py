"""The measured rules: the default unroll, which derivative, which scan. Each rule gives its figures.

Measured on this project's 2-core x86-64 CPU (AMD EPYC) with `bench/scan_vs_unroll.py`, `bench/peers.py`
and `bench/parallel.py`; accelerators may want other numbers (`bench/gpu.sh`).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

# `mode="auto"`: the parallel scan from this T on (None: never). On the CPU the sequential scan won at
# every T measured (bench/parallel.py: associative_scan 1.2-3x slower for training up to T=4096); on an
# H200 the parallel form was 4.7x faster at T=64.
PARALLEL_MIN_T = {"cpu": None, "gpu": 64, "tpu": 64}
# `mode="auto"`: the chunked scan from this T on, where the parallel scan is not taken (None: never), for
# real states. `python bench/parallel.py --quick --ts 256,1024,4096,16384` (2-core Intel Xeon, 2026-12-02,
# bench/results/parallel.md), forward+backward chunked / sequential at T = 256, 1024, 4096, 16384: MinGRU
# 0.64, 0.82, 0.77, 0.82; MinLSTM 0.64, 0.77, 0.85, 0.95; but the LRU's complex state 1.29, 1.09, 1.07,
# 1.62 (its arrays are twice as wide and it has no projection to share), so it stays sequential here.
# Not measured on accelerators, where the parallel scan is taken.
CHUNKED_MIN_T = {"cpu": 256, "gpu": None, "tpu": None}


def default_unroll(width: int, T: int, B: int) -> int:
    """The unroll factor `rnn_apply` uses when none is given: 4 when `B * width <= 16384`, else 2
    (`width` the widest state of the model).

    Taking 2-8 steps per scan iteration (one input projection per chunk) beat the plain scan by 1.1-1.6x
    over T = 8..512 for both B=4/H=64 and B=64/H=512, forward and backward; larger factors paid only for
    small steps and cost compile time. With the fused derivative the LSTM at B=32, H=256 trained fastest
    at 4 (76 ms vs 98 ms at 2), B=128, H=512 at 2. A full unroll was never worth its compile time.
    """
    return max(1, min(T, 4 if B * width <= 16384 else 2))


def use_derivative(cell, *, resets: Optional[jax.Array], rec_mask: Optional[jax.Array]) -> bool:
    """Whether `cell`'s loop runs under `jrnn.derivative` (its own derivative) rather than plain autodiff.

    Cells that declare `fused`, with parameters in the state's dtype (not bfloat16: the loop's tangent is
    carried in float32), without resets or recurrent dropout (whose masks the derivative does not
    model). The derivative trains SimpleRNN/LSTM/GRU 1.2-1.45x faster than autodiff of the same loop
    (bench/peers.py, W1-W4) and composes with every transform, so there is no switch.
    """
    return (cell.fused and cell.dtype == cell.state_dtype and resets is None and rec_mask is None)


def linear_scan(cell, mode: str, T: int, across_devices: bool = False) -> Optional[str]:
    """How a `linear` cell runs: "parallel" (`jax.lax.associative_scan`), "chunked" (`run_chunked`), or
    None (the sequential loop of every cell). `mode="auto"` picks by backend and length; a sequence split
    across devices takes the parallel or the chunked scan (`rnn_apply` refuses "sequential" there)."""
    if not cell.linear or mode == "sequential":
        return None
    if mode in ("parallel", "chunked"):
        return mode
    threshold = PARALLEL_MIN_T.get(jax.default_backend())
    if threshold is not None and T >= threshold:
        return "parallel"
    chunked = CHUNKED_MIN_T.get(jax.default_backend())
    real = not jnp.issubdtype(cell.state_dtype, jnp.complexfloating)
    return "chunked" if across_devices or (chunked is not None and T >= chunked and real) else None
