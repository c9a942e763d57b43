"""Every JAX transform with default options, through every path of the loop: jit, vmap (batch, stacked
params, both), grad, jacrev, jvp, jacfwd, linearize, hessian and forward-over-reverse Hessian-vector
products, each against the same derivative of a Python loop over `cell_apply` (tests/reference.py), in
float64. Rows are the corners of cell kind x composite x unroll x path (jrnn's own derivative, autodiff,
remat, the chunked scan). A user's cell is plain autodiff, as the GRU with `reset_after=False`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from jax.flatten_util import ravel_pytree

import jrnn

B, T, I, H = 2, 4, 3, 3
LENGTHS = np.array([4, 2])


def cell(kind, seed, input_size=I):
    key = jax.random.key(seed)
    make = {"simple": lambda: jrnn.SimpleRNN.init(key, input_size, H, initializer="pytorch"),
            "lstm": lambda: jrnn.LSTM.init(key, input_size, H, initializer="pytorch"),
            "gru": lambda: jrnn.GRU.init(key, input_size, H, initializer="pytorch"),
            "gru_before": lambda: jrnn.GRU.init(key, input_size, H, reset_after=False, initializer="pytorch"),
            "mingru": lambda: jrnn.MinGRU.init(key, input_size, H, initializer="pytorch")}[kind]()
    return jax.tree.map(lambda a: a.astype(jnp.float64), make)


def model(kind, composite):
    if composite == "cell":
        return cell(kind, 0)
    if composite == "bidirectional":
        return jrnn.Bidirectional(cell(kind, 0), cell(kind, 1))
    first, second = kind.split("+") if "+" in kind else (kind, kind)
    return jrnn.Stack((cell(first, 0), cell(second, 1)))


# (kind, composite, rnn_apply options, reference options). Each path of the loop at least once.
ROWS = {
    # The derivative in reverse with lengths in a bidirectional pair (forward and reverse runs).
    "simple-bidirectional-derivative-reverse-unroll3": ("simple", "bidirectional",
                                                        dict(unroll=3, reverse=True, lengths=LENGTHS),
                                                        dict(reverse=True, lengths=LENGTHS)),
    # The derivative (GRU) and autodiff (GRU reset_after=False) under remat, segments of 3 and 1.
    "gru+gru_before-stack-remat-unroll2": ("gru+gru_before", "stack", dict(remat=3, unroll=2), {}),
    # The chunked scan's own derivative (chunks of 2), reverse (the parallel scan is plain autodiff).
    "mingru-cell-chunked-reverse": ("mingru", "cell", dict(mode="chunked", reverse=True, lengths=LENGTHS),
                                    dict(reverse=True, lengths=LENGTHS)),
}


def allclose(got, want, tol=1e-9):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=tol, atol=tol)


@pytest.mark.parametrize("row", list(ROWS))
def test_every_transform_equals_the_python_loop(row):
    kind, composite, kw, ref_kw = ROWS[row]
    with jax.enable_x64(True):
        params = model(kind, composite)
        xs = jax.random.normal(jax.random.key(5), (B, T, I), jnp.float64)
        z, unravel = ravel_pytree((params, xs))  # everything differentiable, as one vector

        def outputs(f):
            def out(z):
                p, x = unravel(z)
                ys, h = f(p, x)
                return jnp.concatenate([a.ravel() for a in jax.tree.leaves((ys, h))])
            return out

        got = outputs(lambda p, x: jrnn.rnn_apply(p, x, **kw))
        want = outputs(lambda p, x: reference.apply(p, x, **ref_kw))
        w = jnp.cos(jnp.arange(want(z).size, dtype=jnp.float64))
        loss = lambda f: lambda z: jnp.sum(w * jnp.sin(f(z)))  # noqa: E731
        v = jnp.sin(1.0 + jnp.arange(z.size, dtype=jnp.float64))  # a direction

        zs = jnp.stack([z, z + 0.1 * v])

        @jax.jit  # every transform of jrnn in one program (one compile)
        def transforms(z, v, zs):
            y, f_lin = jax.linearize(got, z)
            return {"value": got(z), "grad": jax.grad(loss(got))(z), "jacrev": jax.jacrev(got)(z),
                    "jvp": jax.jvp(got, (z,), (v,))[1], "jacfwd": jax.jacfwd(got)(z),
                    "linearize": (y, f_lin(v)), "hessian": jax.hessian(loss(got))(z),
                    "hvp": jax.jvp(jax.grad(loss(got)), (z,), (v,))[1],  # forward-over-reverse
                    "vmap": jax.vmap(loss(got))(zs)}  # over stacked params

        @jax.jit  # the reference's: reverse mode only, the Jacobian and Hessian in full
        def expected(z, v, zs):
            J, Hess = jax.jacrev(want)(z), jax.hessian(loss(want))(z)
            return {"value": want(z), "grad": jax.grad(loss(want))(z), "jacrev": J, "jvp": J @ v,
                    "jacfwd": J, "linearize": (want(z), J @ v), "hessian": Hess, "hvp": Hess @ v,
                    "vmap": jnp.stack([loss(want)(z) for z in zs])}

        got_all, want_all = transforms(z, v, zs), expected(z, v, zs)
        for name in want_all:
            allclose(got_all[name], want_all[name])


@pytest.mark.parametrize("row", ["simple-bidirectional-derivative-reverse-unroll3"])
def test_vmap_over_the_batch_and_over_params_and_batch(row):
    kind, composite, kw, ref_kw = ROWS[row]
    kw = {k: v for k, v in kw.items() if k != "lengths"}
    ref_kw = {k: v for k, v in ref_kw.items() if k != "lengths"}
    with jax.enable_x64(True):
        params = model(kind, composite)
        stacked = jax.tree.map(lambda a: jnp.stack([a, 0.5 * a]), params)
        xs = jax.random.normal(jax.random.key(5), (B, T, I), jnp.float64)
        run = lambda p, x: jrnn.rnn_apply(p, x, **kw)  # noqa: E731
        # Over the batch: each sequence `[T, I]` alone (no batch axis inside).
        allclose(jax.vmap(lambda x: run(params, x))(xs), reference.apply(params, xs, **ref_kw))
        # Over stacked params and the batch at once.
        both = jax.vmap(jax.vmap(run, in_axes=(None, 0)), in_axes=(0, None))(stacked, xs)
        want = [reference.apply(jax.tree.map(lambda a, s=s: a[s], stacked), xs, **ref_kw) for s in range(2)]
        allclose(both, jax.tree.map(lambda *a: jnp.stack(a), *want))
