"""The loop's own derivative for `fused` cells, as a `jax.custom_jvp`: every transform works, and reverse
mode is the fused backward that cuDNN and oneDNN train with.

Autodiff of the loop accumulates `x_t^T dgx_t` and `h_{t-1}^T dz_t` inside the backward loop (two small
matrix products per step) and saves a dozen per-step residuals. Here the tangent of the loop is written
with every term that does not need the previous step's tangent outside it, as whole-sequence products:

    dgx = dX K + X dK + db                  dz_in = H_prev dW + db_rec         ([T*B, .] rows each)
    dh_t, dout_t = J_activate(u_t, h_{t-1}) . (dgx_t + dh_{t-1} W + dz_in_t,  dh_{t-1})     (the loop)

so the loop carries only `dh` through one matrix product per step and the elementwise Jacobian of
`activate` (recomputed from the saved `u_t = gx_t + z_t`, or `(gx_t, z_t)`, under `jax.checkpoint`). The
tangent is linear, so JAX transposes it for `grad`: the backward loop is one product `ct @ W^T` per step
and the weight and input gradients are one product each after it (`dK = X^T dGX`, `dW = H_prev^T dZ`,
`dX = dGX K^T`). The rows layout (`[T*B, .]`) and the transposed `W` held outside the loop give
XLA the same matrix products as a hand-written VJP (measured: `bench/peers.py`, see the README).

Used by `jrnn.loop.run_cell` where `jrnn.policy.use_derivative` says so.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from jrnn.steps import at, masked_step, scan_cell, stack, walk

State = Any


def run_fused(cell, xs: jax.Array, h0: State, *, k: int, reverse: bool,
              valid: Optional[jax.Array] = None, states: bool = False) -> tuple[Any, State]:
    """`jrnn.steps.scan_cell` with this module's derivative: `(ys [T, B, F], h_T)`, with `states`
    `((ys, hs), h_T)`, `hs` the state after each step."""

    @jax.custom_jvp
    def run(cell, xs, h0, valid):
        h, ys = scan_cell(cell, xs, h0, k=k, reverse=reverse, valid=valid, states=states)
        return ys, h

    @run.defjvp
    def run_jvp(primals, tangents):
        cell, xs, h0, valid = primals
        dcell, dxs, dh0, _ = tangents
        h, (ys, us, hs) = scan_cell(cell, xs, h0, k=k, reverse=reverse, valid=valid, trace=True)
        # The state before each step: h0, then the state after the previous step in run order.
        first = lambda a0, a: jnp.concatenate([a[1:], a0[None]] if reverse else [a0[None], a[:-1]])  # noqa: E731
        prev = jax.tree.map(first, h0, hs)
        T, B = xs.shape[:2]
        rows = lambda a: a.reshape(T * B, a.shape[-1])  # noqa: E731
        unrows = lambda a: a.reshape(T, B, a.shape[-1])  # noqa: E731
        dgx = unrows(jax.jvp(lambda c, x: c.project(x), (cell, rows(xs)), (dcell, rows(dxs)))[1])
        dz_in = unrows(jax.jvp(lambda c: c.recurrent(jax.tree.map(rows, prev)), (cell,), (dcell,))[1])
        if cell.additive:
            dgx, dz_in = dgx + dz_in, None
        wt = cell.recurrent_kernel.T  # held transposed: the transposed loop multiplies by it as stored

        @jax.checkpoint  # the backward recomputes activate's Jacobian from `u`, saves nothing per step
        def chunk(dh, dgx_c, dz_c, u_c, prev_c, ok_c):
            n = dgx_c.shape[0]
            dgx_c, dz_c = unstack(dgx_c), None if dz_c is None else unstack(dz_c)
            douts, dhs = [None] * n, [None] * n
            for j in (reversed(range(n)) if reverse else range(n)):
                dz = jax.lax.dot_general(cell.hidden(dh).astype(wt.dtype), wt, (((1,), (1,)), ((), ())))
                du = (dgx_c[j] + dz, None) if cell.additive else (dgx_c[j], dz_c[j] + dz)
                ok = None if ok_c is None else ok_c[j]
                step = lambda u, p, ok=ok: masked_step(lambda h: cell.activate(*u, h), p, ok)  # noqa: E731
                douts[j], dh = jax.jvp(step, (at(u_c, j), at(prev_c, j)), (du, dh))[1]
                dhs[j] = dh
            return dh, ((stack(douts), stack(dhs)) if states else stack(douts))

        dh, dys = walk(chunk, dh0, (dgx, dz_in, us, prev, valid), k, reverse)
        return ((ys, hs) if states else ys, h), (dys, dh)

    return run(cell, xs, h0, valid)


def unstack(a: jax.Array) -> list:
    """`a [n, ...]` as `n` arrays, by `lax.split`: its transpose is one concatenate, where per-step
    slices would transpose to `n` pads and a sum."""
    return [p.reshape(p.shape[1:]) for p in jnp.split(a, a.shape[0])]
