"""The loop over time of a classic cell with a hand-written VJP (the way cuDNN and oneDNN train).

Autodiff of the loop accumulates `x_t^T dgx_t` and `h_{t-1}^T dz_t` inside the backward loop, two
small matrix products per step, and saves a dozen per-step residuals. Here the forward loop saves
only what each step's `activate` needs (`gx_t + z_t` for an additive cell, else `gx_t` and `z_t`, and
the states), the backward loop
carries only the state's cotangent through one matrix product per step, and the weight and input
gradients are one large product each after it:

    dK = X^T dGX    dW = H_prev^T dZ    dxs = dGX K^T      ([T*B, .] rows each)

Used by `jrnn.loop.run_cell` for cells with `fused` set, without resets or recurrent dropout (with
`checkpoint=c < T`, inside each rematerialised segment). Reverse-mode only: `jax.jvp` through it
raises (a `jax.custom_vjp`).
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp

State = Any


def run_fused(cell, xs: jax.Array, h0: State, *, k: int, reverse: bool,
              valid: Optional[jax.Array] = None) -> tuple[jax.Array, State]:
    """Like `jrnn.loop.run_cell` with no masks but `valid [T, B]` (False: a padded step, which
    leaves the state unchanged and outputs zeros): `(ys [T, B, H], h_T)`."""
    from jrnn.loop import blocks  # (loop imports this module)

    def step(cell, u, h, ok):
        out, h_new = cell.activate(*u, h)
        if ok is None:
            return out, h_new
        ok = ok[:, None]
        h_new = jax.tree.map(functools.partial(jnp.where, ok), h_new, h)
        return jnp.where(ok, out, jnp.zeros_like(out)), h_new

    def inputs(cell, gx, h):
        """What `activate` takes besides the state: `(gx + z, None)` for an additive cell, else `(gx, z)`."""
        z = cell.recurrent(h)
        return (gx + z, None) if cell.additive else (gx, z)

    def forward(cell, xs, h0, valid, save: bool):
        def chunk(h, x_c, ok_c):
            gx = cell.project(x_c)
            n = x_c.shape[0]
            outs, us, hs = [None] * n, [None] * n, [None] * n
            for j in (reversed(range(n)) if reverse else range(n)):
                us[j] = inputs(cell, gx[j], h)
                outs[j], h = step(cell, us[j], h, None if ok_c is None else ok_c[j])
                hs[j] = h
            if not save:
                return h, jnp.stack(outs)
            stack = lambda *a: jnp.stack(a)  # noqa: E731
            return h, (jnp.stack(outs), jax.tree.map(stack, *us), jax.tree.map(stack, *hs))

        return blocks(chunk, h0, (xs, valid), k, reverse)

    @jax.custom_vjp
    def run(cell, xs, h0, valid):
        h, ys = forward(cell, xs, h0, valid, save=False)
        return ys, h

    def run_fwd(cell, xs, h0, valid):
        h, (ys, us, hs) = forward(cell, xs, h0, valid, save=True)
        return (ys, h), (cell, xs, h0, valid, us, hs)

    def run_bwd(res, cts):
        cell, xs, h0, valid, us, hs = res
        dys, dh = cts
        # The state before each step: h0, then the state after the previous step in run order.
        first = lambda a0, a: jnp.concatenate([a[1:], a0[None]] if reverse else [a0[None], a[:-1]])  # noqa: E731
        prev = jax.tree.map(first, h0, hs)
        wt = cell.recurrent_kernel.T

        def chunk(dh, u_c, prev_c, dy_c, ok_c):
            n = dy_c.shape[0]
            dus = [None] * n
            for j in (range(n) if reverse else reversed(range(n))):
                at_j = functools.partial(jax.tree.map, lambda a, j=j: a[j])
                ok = None if ok_c is None else ok_c[j]
                _, pull = jax.vjp(lambda u, p, ok=ok: step(cell, u, p, ok), at_j(u_c), at_j(prev_c))
                dus[j], dh = pull((dy_c[j], dh))
                dz = dus[j][0] if cell.additive else dus[j][1]
                dh_matmul = (dz @ wt).astype(cell.state_dtype)
                dh = dh._replace(h=dh.h + dh_matmul) if hasattr(dh, "_replace") else dh + dh_matmul
            return dh, jax.tree.map(lambda *a: jnp.stack(a), *dus)

        dh0, du = blocks(chunk, dh, (us, prev, dys, valid), k, not reverse)
        rows = lambda a: a.reshape(-1, a.shape[-1])  # noqa: E731
        dgx = rows(du[0])
        dz = dgx if cell.additive else rows(du[1])  # an additive cell's dz is its dgx
        dxs = (dgx @ cell.kernel.T).reshape(xs.shape).astype(xs.dtype)
        _, pull = jax.vjp(lambda c: (c.kernel, c.input_bias, c.recurrent_kernel, c.recurrent_bias), cell)
        dcell, = pull((rows(xs).astype(cell.dtype).T @ dgx, None if cell.input_bias is None else dgx.sum(0),
                       rows(cell.hidden(prev)).astype(cell.dtype).T @ dz,
                       None if cell.recurrent_bias is None else dz.sum(0)))
        return dcell, dxs, dh0, None

    run.defvjp(run_fwd, run_bwd)
    return run(cell, xs, h0, valid)
