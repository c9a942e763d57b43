"""The SimpleRNN tutorial in jrnn: one cell step, two stacked cells by hand, a two-layer network.

Keras' tutorial: `out, h1 = SimpleRNNCell(64)(x[:, 0, :], [h0])` on a `[4, 80, 100]` batch, then two
stacked cells, then `SimpleRNN(64, return_sequences=True, unroll=True)` layers. Here the same in
jrnn, with the scan-vs-unroll timings of the two-layer network (forward, jitted, median of 20).

Run: `make demo` (or `python examples/tutorial.py`).
"""

import functools
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import jrnn

B, T, I, H = 4, 80, 100, 64


def two_layers(p1, p2, xs, unroll):
    """Layer 1 returns the whole sequence, layer 2 its last output, as in the tutorial."""
    ys, _ = jrnn.rnn_apply(p1, xs, unroll=unroll)
    _, h = jrnn.rnn_apply(p2, ys, unroll=unroll)
    return h


def timed(f, *args, calls=20):
    t0 = time.perf_counter()
    compiled = jax.jit(f).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return compile_s, float(np.median(times))


def main():
    print(f"jrnn {jrnn.__version__}, jax {jax.__version__}, {jax.devices()[0].platform}, "
          f"{platform.machine()}, {jax.device_count()} device(s)")
    k0, k1, k2, kx = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(kx, (B, T, I))

    # 1. One cell, one step: `out, h1 = cell(x[:, 0, :], [h0])`.
    cell = jrnn.SimpleRNN.init(k0, I, H)
    h0 = jrnn.initial_state(cell, (B,))
    out, h1 = jrnn.cell_apply(cell, x[:, 0, :], h0)
    print(f"1. one step:        x[:, 0, :] {x[:, 0, :].shape} -> out {out.shape}, h1 {h1.shape}")

    # 2. Two stacked cells stepped by hand over the first three steps.
    cell2 = jrnn.SimpleRNN.init(k1, H, H)
    s1, s2 = h0, jrnn.initial_state(cell2, (B,))
    for t in range(3):
        o1, s1 = jrnn.cell_apply(cell, x[:, t, :], s1)
        o2, s2 = jrnn.cell_apply(cell2, o1, s2)
    print(f"2. stacked cells:   3 steps by hand -> out {o2.shape}")

    # 3. Two layers over the whole sequence, scan vs unroll.
    layer1, layer2 = cell, jrnn.SimpleRNN.init(k2, H, H)
    ys, _ = jrnn.rnn_apply(layer1, x)
    print(f"3. two layers:      xs {x.shape} -> layer 1 ys {ys.shape} -> layer 2 final "
          f"{two_layers(layer1, layer2, x, 1).shape}")
    print(f"\n   scan vs unroll, forward, B={B} T={T} I={I} H={H}:")
    print(f"   {'unroll':>8} {'compile ms':>11} {'run ms':>8}")
    ref = two_layers(layer1, layer2, x, 1)
    for unroll in (1, 2, 4, 8, 16, True):
        f = functools.partial(two_layers, unroll=unroll)
        np.testing.assert_allclose(f(layer1, layer2, x), ref, rtol=1e-5, atol=1e-5)
        compile_s, run_s = timed(f, layer1, layer2, x)
        print(f"   {str(unroll):>8} {compile_s * 1e3:11.0f} {run_s * 1e3:8.3f}")
    assert jnp.all(jnp.isfinite(ref))


if __name__ == "__main__":
    main()
