"""MinGRU, MinLSTM and LRU: the papers' equations in NumPy, and parallel mode == sequential mode."""

import functools
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import linear_scan

KINDS = {"mingru": jrnn.MinGRU, "minlstm": jrnn.MinLSTM, "lru": jrnn.LRU}


def make(kind, I, H, seed=0):
    if kind == "lru":
        return jrnn.LRU.init(jax.random.key(seed), I, H, r_min=0.5, r_max=0.99)
    return KINDS[kind].init(jax.random.key(seed), I, H, initializer="pytorch")


def random_state(p, shape, key):
    """Normal entries; complex ones for the LRU's complex state."""
    return jax.random.normal(key, shape, p.state_dtype)


def np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_g(x):
    return np.where(x >= 0, x + 0.5, np_sigmoid(x))


def np_step(kind, p, x, h):
    """Feng et al. (2024), sequential form, written from the paper."""
    W, b = np.asarray(p.kernel, np.float64), np.asarray(p.bias, np.float64)
    pre = x @ W + b
    if kind == "mingru":
        k, h_tilde = np.split(pre, 2, axis=-1)
        z = np_sigmoid(k)
        return (1 - z) * h + z * np_g(h_tilde)
    kf, ki, h_tilde = np.split(pre, 3, axis=-1)
    f, i = np_sigmoid(kf), np_sigmoid(ki)
    return f / (f + i) * h + i / (f + i) * np_g(h_tilde)


@pytest.mark.parametrize("kind", ["mingru", "minlstm"])
def test_step_matches_the_papers_equations(kind):
    p = KINDS[kind].init(jax.random.key(0), 5, 6, initializer="pytorch")
    x = np.asarray(jax.random.normal(jax.random.key(1), (3, 5)) * 3)
    h = np.asarray(jax.random.normal(jax.random.key(2), (3, 6)))
    out, h_new = jrnn.cell_apply(p, jnp.asarray(x), jnp.asarray(h))
    np.testing.assert_allclose(h_new, np_step(kind, p, x, h), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, h_new)


def np_lru_step(p, x, h):
    """Orvieto et al. (2023), eqs. of the LRU, in complex128 NumPy."""
    a = {name: np.asarray(getattr(p, name), np.float64) for name in
         ("nu_log", "theta_log", "gamma_log", "B_re", "B_im", "C_re", "C_im", "D")}
    lam = np.exp(-np.exp(a["nu_log"]) + 1j * np.exp(a["theta_log"]))
    h_new = lam * h + np.exp(a["gamma_log"]) * (x @ (a["B_re"] + 1j * a["B_im"]))
    y = (h_new @ (a["C_re"] + 1j * a["C_im"])).real + a["D"] * x
    return y, h_new


def test_lru_step_and_init_match_the_paper():
    p = jrnn.LRU.init(jax.random.key(0), 5, 6, r_min=0.4, r_max=0.9, max_phase=np.pi)
    lam = np.exp(-np.exp(np.asarray(p.nu_log, np.float64)) + 1j * np.exp(np.asarray(p.theta_log, np.float64)))
    assert np.all((np.abs(lam) >= 0.4 - 1e-6) & (np.abs(lam) <= 0.9 + 1e-6))
    assert np.all((np.angle(lam) >= -1e-6) & (np.angle(lam) <= np.pi + 1e-6))
    np.testing.assert_allclose(np.exp(np.asarray(p.gamma_log)), np.sqrt(1 - np.abs(lam) ** 2), rtol=1e-5)
    x = np.asarray(jax.random.normal(jax.random.key(1), (3, 5)))
    h = np.asarray(random_state(p, (3, 6), jax.random.key(2)))
    out, h_new = jrnn.cell_apply(p, jnp.asarray(x), jnp.asarray(h))
    y, want = np_lru_step(p, x, h)
    assert out.dtype == jnp.float32 and h_new.dtype == jnp.complex64 and out.shape == (3, 5)
    np.testing.assert_allclose(h_new, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out, y, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"LRU needs 0 <= `r_min` < `r_max` <= 1; got r_min=0.9, r_max=0.5"):
        jrnn.LRU.init(jax.random.key(0), 5, 6, r_min=0.9, r_max=0.5)
    with pytest.raises(TypeError, match=r"`h` must be floating or complex; got dtype int32"):
        jrnn.cell_apply(p, jnp.asarray(x), jnp.zeros((3, 6), jnp.int32))


@functools.partial(jax.jit, static_argnames=("mode", "reverse"))
def loss_and_grads(p, xs, h0, lengths, resets, mode, reverse):
    def loss(p, xs, h0):
        ys, h = jrnn.rnn_apply(p, xs, h0, lengths=lengths, resets=resets, reverse=reverse, mode=mode)
        w = jnp.linspace(-1, 1, ys.shape[-1])[None, None]
        return jnp.sum(ys * w) + jnp.sum(jnp.real(h)) + 0.5 * jnp.sum(jnp.imag(h)), (ys, h)

    return jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(p, xs, h0)


# Each kind short and long, each direction (tests/test_properties.py crosses T <= 20 against the loop).
@pytest.mark.parametrize("kind, T, reverse", [
    ("mingru", 1, False), ("mingru", 300, True), ("minlstm", 7, True), ("minlstm", 300, False),
    ("lru", 2, True), ("lru", 64, False)])
def test_parallel_equals_sequential(kind, T, reverse):
    p = make(kind, 3, 4)
    B = 3
    xs = jax.random.normal(jax.random.key(1), (B, T, 3))
    h0 = random_state(p, (B, 4), jax.random.key(2))
    lengths = jnp.array([T, max(T // 2, 1), 0])
    resets = jax.random.bernoulli(jax.random.key(3), 0.1, (B, T))
    seq = loss_and_grads(p, xs, h0, lengths, resets, "sequential", reverse)
    for mode in ("parallel", "chunked"):
        got = loss_and_grads(p, xs, h0, lengths, resets, mode, reverse)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5), got, seq)


@pytest.mark.parametrize("T, chunk", [(10, 3), (5, 8)])  # a partial last chunk; one chunk
def test_chunked_forward_mode_equals_sequential(T, chunk):
    """`jvp` through the chunked scan's own derivative, any chunk size, against the sequential loop."""
    p = make("mingru", 3, 4)
    xs = jax.random.normal(jax.random.key(1), (2, T, 3))
    dp = jax.tree.map(jnp.ones_like, p)
    f = lambda p, mode: jrnn.rnn_apply(p, xs, reverse=True, mode=mode)  # noqa: E731
    want = jax.jvp(lambda p: f(p, "sequential"), (p,), (dp,))
    with mock.patch.object(linear_scan, "chunk_size", lambda T: chunk):
        got = jax.jvp(lambda p: f(p, "chunked"), (p,), (dp,))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6), got, want)


def test_stack_and_bidirectional_in_parallel_mode():
    k1, k2 = jax.random.split(jax.random.key(0))
    stack = jrnn.Stack((jrnn.Bidirectional.init(k1, jrnn.MinGRU, 3, 4), jrnn.MinLSTM.init(k2, 8, 5),
                        jrnn.Bidirectional(make("lru", 5, 6, 1), make("lru", 5, 3, 2), "sum")))
    xs = jax.random.normal(jax.random.key(1), (2, 9, 3))
    lengths = jnp.array([9, 3])
    run = jax.jit(jrnn.rnn_apply, static_argnames="mode")
    a = run(stack, xs, lengths=lengths, mode="sequential")
    for mode in ("parallel", "chunked"):
        b = run(stack, xs, lengths=lengths, mode=mode)
        jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6), a, b)


@pytest.mark.parametrize("kind, modes", [("mingru", ("parallel", "chunked")),
                                         ("minlstm", ("chunked", "sequential")),
                                         ("lru", ("parallel", "chunked"))])
def test_long_sequences_stay_finite(kind, modes):
    p = KINDS[kind].init(jax.random.key(0), 4, 8)
    xs = 3 * jax.random.normal(jax.random.key(1), (2, 16384, 4))
    for mode in modes:
        g = jax.jit(jax.value_and_grad(lambda p, m=mode: jnp.mean(jrnn.rnn_apply(p, xs, mode=m)[0])))
        value, grads = g(p)
        assert bool(jnp.isfinite(value))
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(grads))


def test_mode_errors():
    gru = jrnn.GRU.init(jax.random.key(0), 3, 4)
    xs = jnp.ones((2, 5, 3))
    for mode in ("parallel", "chunked"):
        with pytest.raises(ValueError, match=rf'`mode="{mode}"` needs cells that declare `linear` '
                                             r"\(MinGRU, MinLSTM, LRU\); got GRU"):
            jrnn.rnn_apply(gru, xs, mode=mode)
    with pytest.raises(ValueError, match=r"Unknown `mode` 'fast'; expected one of \('auto', 'sequential', "):
        jrnn.rnn_apply(gru, xs, mode="fast")
    with pytest.raises(ValueError, match=r"`recurrent_dropout` needs cells that declare.*got MinGRU"):
        jrnn.rnn_apply(jrnn.MinGRU.init(jax.random.key(0), 3, 4), xs, key=jax.random.key(1),
                       recurrent_dropout=0.5)


def test_checkpoint_round_trip(tmp_path):
    p = {"a": jrnn.MinGRU.init(jax.random.key(0), 3, 4), "b": jrnn.MinLSTM.init(jax.random.key(1), 3, 4),
         "c": make("lru", 3, 4)}
    jrnn.save(tmp_path / "m.ckpt", p)
    q = jrnn.load(tmp_path / "m.ckpt")
    assert jax.tree.structure(q) == jax.tree.structure(p)
    jax.tree.map(np.testing.assert_array_equal, q, p)
