"""`rnn_apply` modes against a plain Python loop over `cell_apply`; grads, jit, vmap, errors."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jrnn

KINDS = {
    "simple_tanh": lambda k, i, h, **kw: jrnn.SimpleRNN.init(k, i, h, **kw),
    "simple_relu": lambda k, i, h, **kw: jrnn.SimpleRNN.init(k, i, h, activation="relu", **kw),
    "lstm": lambda k, i, h, **kw: jrnn.LSTM.init(k, i, h, **kw),
    "gru": lambda k, i, h, **kw: jrnn.GRU.init(k, i, h, **kw),
    "gru_reset_before": lambda k, i, h, **kw: jrnn.GRU.init(k, i, h, reset_after=False, **kw),
}


def make(kind, I=5, H=6, dtype=jnp.float32, seed=0):
    return KINDS[kind](jax.random.key(seed), I, H, initializer="pytorch", dtype=dtype)


def rand_state(params, batch_shape, seed=1):
    zero = jrnn.initial_state(params, batch_shape)
    keys = jax.random.split(jax.random.key(seed), 2)
    leaves, tree = jax.tree.flatten(zero)
    return jax.tree.unflatten(tree, [0.5 * jax.random.normal(k, z.shape, z.dtype)
                                     for k, z in zip(keys, leaves, strict=False)])


def loop_reference(params, xs, h0, reverse=False, lengths=None):
    """The definition: `cell_apply` step by step in Python on `xs [B, T, I]`, numpy masking."""
    B, T, _ = xs.shape
    lengths = np.full(B, T) if lengths is None else np.clip(np.asarray(lengths), 0, T)
    ys = np.zeros((B, T, params.hidden_size), np.float64)
    finals = []
    for b in range(B):
        h = jax.tree.map(lambda a, b=b: a[b], h0)
        L = int(lengths[b])
        for t in (reversed(range(L)) if reverse else range(L)):
            out, h = jrnn.cell_apply(params, xs[b, t], h)
            ys[b, t] = np.asarray(out)
        finals.append(h)
    return ys, jax.tree.map(lambda *a: jnp.stack(a), *finals)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("unroll", [1, 3, 4, True])  # T = 7: a scan, chunks and a rest, one chunk, Python
@pytest.mark.parametrize("reverse, with_lengths", [(False, False), (True, True)])  # the corners
def test_every_mode_matches_the_python_loop(kind, unroll, reverse, with_lengths):
    params = make(kind)
    B, T = 4, 7
    xs = jax.random.normal(jax.random.key(2), (B, T, params.input_size))
    h0 = rand_state(params, (B,))
    lengths = np.array([7, 3, 0, 1]) if with_lengths else None
    want_ys, want_h = loop_reference(params, xs, h0, reverse, lengths)
    f = jax.jit(functools.partial(jrnn.rnn_apply, unroll=unroll, reverse=reverse))
    ys, h = f(params, xs, h0, lengths=lengths)
    np.testing.assert_allclose(ys, want_ys, rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), h, want_h)


@pytest.mark.parametrize("kind", ["simple_tanh", "lstm", "gru", "gru_reset_before"])
def test_eager_equals_jit_and_lengths_clipped(kind):
    params = make(kind)
    xs = jax.random.normal(jax.random.key(3), (3, 5, params.input_size))
    eager = jrnn.rnn_apply(params, xs, lengths=np.array([9, 5, -2]), unroll=2)
    clipped = jax.jit(jrnn.rnn_apply)(params, xs, lengths=jnp.array([5, 5, 0]))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), eager, clipped)


@pytest.mark.parametrize("kind", ["simple_tanh", "lstm", "gru", "gru_reset_before"])
def test_time_major_leading_batch_axes_and_no_batch(kind):
    params = make(kind)
    xs = jax.random.normal(jax.random.key(4), (2, 3, 6, params.input_size))  # [B1, B2, T, I]
    ys, h = jrnn.rnn_apply(params, xs)
    assert ys.shape == (2, 3, 6, params.hidden_size)
    flat_ys, flat_h = jrnn.rnn_apply(params, xs.reshape(6, 6, -1))
    np.testing.assert_allclose(ys.reshape(6, 6, -1), flat_ys, rtol=1e-6, atol=1e-7)
    tm_ys, tm_h = jrnn.rnn_apply(params, jnp.moveaxis(xs, 2, 0), time_major=True)
    np.testing.assert_allclose(jnp.moveaxis(tm_ys, 0, 2), ys, rtol=1e-6, atol=1e-7)
    one_ys, one_h = jrnn.rnn_apply(params, xs[1, 2])  # [T, I], no batch axis
    np.testing.assert_allclose(one_ys, ys[1, 2], rtol=1e-6, atol=1e-7)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b[1, 2], rtol=1e-6, atol=1e-7), one_h, h)


@pytest.mark.parametrize("kind", ["simple_tanh", "lstm", "gru", "gru_reset_before"])
def test_vmap_over_batch_and_over_stacked_params(kind):
    params = make(kind)
    xs = jax.random.normal(jax.random.key(5), (3, 4, params.input_size))
    ys, _ = jrnn.rnn_apply(params, xs)
    vys, _ = jax.vmap(lambda x: jrnn.rnn_apply(params, x))(xs)
    np.testing.assert_allclose(vys, ys, rtol=1e-6, atol=1e-7)
    many = [make(kind, seed=s) for s in range(3)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *many)
    sys_, _ = jax.vmap(lambda p: jrnn.rnn_apply(p, xs, unroll=2))(stacked)
    for s, p in enumerate(many):
        np.testing.assert_allclose(sys_[s], jrnn.rnn_apply(p, xs)[0], rtol=1e-5, atol=1e-6)


# One unroll mode per kind, each mode at least once (tests/test_properties.py crosses the rest
# against the loop).
@pytest.mark.parametrize("kind, unroll", [("simple_tanh", 1), ("lstm", 3), ("gru", True)])
def test_check_grads_float64(kind, unroll):
    with jax.enable_x64(True):
        params = make(kind, I=3, H=4, dtype=jnp.float64)
        xs = jax.random.normal(jax.random.key(6), (2, 5, 3), jnp.float64)
        h0 = rand_state(params, (2,))
        lengths = jnp.array([5, 2])

        @jax.jit
        def f(params, xs, h0):
            return jrnn.rnn_apply(params, xs, h0, unroll=unroll, lengths=lengths, reverse=True)

        check_grads(f, (params, xs, h0), order=2, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_params_are_pytrees_with_static_settings():
    params = make("gru_reset_before")
    leaves, treedef = jax.tree.flatten(params)
    assert len(leaves) == 3
    rebuilt = jax.tree.unflatten(treedef, leaves)
    assert type(rebuilt) is jrnn.GRU and rebuilt.reset_after is False
    assert all(a is b for a, b in zip(jax.tree.leaves(rebuilt), leaves, strict=True))  # the same arrays
    other = jrnn.GRU.init(jax.random.key(0), 5, 6)
    assert jax.tree.structure(other) != treedef  # reset_after lives in the treedef
    replaced = dataclasses.replace(params, kernel=jnp.zeros_like(params.kernel))
    assert replaced.reset_after is False and float(jnp.abs(replaced.kernel).sum()) == 0.0
    no_bias = jrnn.LSTM.init(jax.random.key(0), 2, 3, use_bias=False)
    assert no_bias.bias is None and len(jax.tree.leaves(no_bias)) == 2
    assert jrnn.rnn_apply(no_bias, jnp.ones((4, 2)))[0].shape == (4, 3)


def test_shapes_and_dtypes_of_init():
    assert jrnn.SimpleRNN.init(jax.random.key(0), 7, 13).kernel.shape == (7, 13)
    lstm = jrnn.LSTM.init(jax.random.key(0), 7, 13)
    assert lstm.kernel.shape == (7, 52) and lstm.recurrent_kernel.shape == (13, 52)
    np.testing.assert_array_equal(lstm.bias, np.r_[np.zeros(13), np.ones(13), np.zeros(26)])
    assert jrnn.GRU.init(jax.random.key(0), 7, 13).bias.shape == (2, 39)
    assert jrnn.GRU.init(jax.random.key(0), 7, 13, reset_after=False).bias.shape == (39,)
    bound = 1 / np.sqrt(13)
    torch_like = jrnn.GRU.init(jax.random.key(0), 7, 13, initializer="pytorch")
    for leaf in jax.tree.leaves(torch_like):
        assert float(jnp.abs(leaf).max()) <= bound
    h0 = jrnn.initial_state(lstm, (4,))
    assert isinstance(h0, jrnn.LSTMState) and h0.h.shape == (4, 13) and h0.c.shape == (4, 13)
    with jax.enable_x64(True):
        p64 = jrnn.SimpleRNN.init(jax.random.key(0), 2, 3, dtype=jnp.float64)
        ys, h = jrnn.rnn_apply(p64, jnp.ones((5, 2), jnp.float64))
        assert ys.dtype == jnp.float64 and h.dtype == jnp.float64


# ---- bad input: clear errors at trace time -------------------------------------------------------

KEY = jax.random.key(0)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: jrnn.LSTM.init(KEY, 0, 4), ValueError, r"`input_size` must be a positive int; got 0"),
    (lambda: jrnn.LSTM.init(KEY, 3, 2.5), ValueError, r"`hidden_size` must be a positive int; got 2.5"),
    (lambda: jrnn.GRU.init(KEY, True, 4), ValueError, r"`input_size`.*got True"),
    (lambda: jrnn.SimpleRNN.init(KEY, 3, 4, activation="gelu"), ValueError,
     r"Unknown `activation` 'gelu'; expected one of \('tanh', 'relu', 'sigmoid', 'linear'\)"),
    (lambda: jrnn.GRU.init(KEY, 3, 4, initializer="he"), ValueError, r"Unknown `initializer` 'he'"),
    (lambda: jrnn.LSTM.init(KEY, 3, 4, dtype=jnp.int32), TypeError,
     r"`dtype` must be a real floating dtype .*; got int32"),
])
def test_init_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


LSTM_P = jrnn.LSTM.init(KEY, 3, 4)
GRU_P = jrnn.GRU.init(KEY, 3, 4)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: jrnn.rnn_apply(GRU_P, jnp.ones((2, 5, 8))), ValueError,
     r"`xs` must have shape \[\.\.\., T, I\] with I = `input_size` \(=3\); got shape \(2, 5, 8\)"),
    (lambda: jrnn.rnn_apply(GRU_P, jnp.ones((3,))), ValueError, r"`xs` must have shape"),
    (lambda: jrnn.rnn_apply(GRU_P, jnp.ones((2, 5, 3), jnp.int32)), TypeError,
     r"`xs` must be a floating array; got dtype int32"),
    (lambda: jrnn.rnn_apply(GRU_P, jnp.ones((2, 5, 3), bool)), TypeError, r"`xs` must be a floating"),
    (lambda: jrnn.rnn_apply(LSTM_P, jnp.ones((2, 5, 3)), jnp.zeros((2, 4))), TypeError,
     r"`h0` of LSTM params must be structured like its zero state, LSTMState\(h, c\); "
     r"got ArrayImpl of shape \(2, 4\)"),
    (lambda: jrnn.rnn_apply(LSTM_P, jnp.ones((2, 5, 3)), (jnp.zeros((2, 4)), jnp.zeros((2, 4)))), TypeError,
     r"`h0` of LSTM params must be structured like its zero state, LSTMState\(h, c\); got tuple"),
    (lambda: jrnn.rnn_apply(GRU_P, jnp.ones((2, 5, 3)), jnp.zeros((3, 4))), ValueError,
     r"`h0` must have shape \(2, 4\) or a suffix of it \(broadcast over the batch\); got \(3, 4\)"),
    (lambda: jrnn.rnn_apply(GRU_P, jnp.ones((2, 5, 3)), (jnp.zeros((2, 4)),) * 2),
     TypeError, r"`h0` of GRU params must be one array"),
    (lambda: jrnn.rnn_apply(LSTM_P, jnp.ones((2, 5, 3)),
                            jrnn.LSTMState(jnp.zeros((2, 4)), jnp.zeros((2, 5)))), ValueError,
     r"`h0` must have shape \(2, 4\).*got \[\(2, 4\), \(2, 5\)\]"),
    (lambda: jrnn.rnn_apply(GRU_P, jnp.ones((2, 5, 3)), lengths=jnp.ones(2)), TypeError,
     r"`lengths` must be an integer array; got dtype float32"),
    (lambda: jrnn.rnn_apply(GRU_P, jnp.ones((2, 5, 3)), lengths=jnp.ones((2, 1), int)), ValueError,
     r"`lengths` must have the batch shape \(2,\); got shape \(2, 1\)"),
    (lambda: jrnn.rnn_apply(GRU_P, jnp.ones((2, 5, 3)), mask=jnp.ones((2, 5))), TypeError,
     r"`mask` must be a bool array; got dtype float32"),
    (lambda: jrnn.rnn_apply(GRU_P, jnp.ones((2, 5, 3)), mask=np.ones((5, 2), bool)), ValueError,
     r"`mask` must have shape \[\.\.\., T\] = \(2, 5\); got shape \(5, 2\)"),
    (lambda: jrnn.rnn_apply(GRU_P, jnp.ones((2, 5, 3)), return_states=1), TypeError,
     r"`return_states` must be a bool; got 1"),
    (lambda: jrnn.rnn_apply(GRU_P, jnp.ones((2, 5, 3)), unroll=0), ValueError,
     r"`unroll` must be a bool or a positive int; got 0"),
    (lambda: jrnn.rnn_apply(GRU_P, jnp.ones((2, 5, 3)), unroll=2.0), ValueError, r"`unroll`.*got 2.0"),
    (lambda: jrnn.rnn_apply({"kernel": 1}, jnp.ones((2, 5, 3))), TypeError,
     r"`params` must be a jrnn.Cell \(SimpleRNN, LSTM, GRU, MinGRU, MinLSTM, LRU, or your own\), "
     r"Bidirectional or Stack; got dict"),
    (lambda: jrnn.cell_apply(GRU_P, jnp.ones((2, 4)), jnp.zeros((2, 4))), ValueError,
     r"`x` must have shape \[\.\.\., I\] with I = `input_size` \(=3\); got shape \(2, 4\)"),
    (lambda: jrnn.cell_apply(GRU_P, jnp.ones((2, 3)), jnp.zeros((1, 4))), ValueError,
     r"`h` must have shape \(2, 4\)"),
    (lambda: jrnn.cell_apply(GRU_P, jnp.ones((2, 5, 3)), jnp.zeros((2, 4))), ValueError,  # a sequence
     r"`x` must be one step, \[\.\.\., I\] with the batch axes of `h`; got shape \(2, 5, 3\).*`rnn_apply`"),
    (lambda: jrnn.cell_apply(LSTM_P, jnp.ones((2, 3)), (jnp.zeros((2, 4)),) * 2), TypeError,
     r"a plain tuple is refused: its order is ambiguous; build LSTMState\(h=\.\.\., c=\.\.\.\)"),
    (lambda: jrnn.cell_apply(GRU_P, jnp.ones((2, 3)), jnp.zeros((2, 4)), reset=jnp.ones(3, bool)), ValueError,
     r"`reset` must have shape \[\.\.\.\] \(the batch axes of `x`\) = \(2,\); got shape \(3,\)"),
    (lambda: jrnn.rnn_apply(GRU_P, "abc"), TypeError,
     r"`xs` must be a floating array of shape \[\.\.\., T, I\]; got str"),
    (lambda: jrnn.rnn_apply(GRU_P, None), TypeError, r"`xs` must be a floating array.*got NoneType"),
    (lambda: jrnn.rnn_apply(GRU_P, jnp.ones((2, 5, 3)), reverse="no"), TypeError,
     r"`reverse` must be a bool; got 'no'"),
    (lambda: jrnn.rnn_apply(GRU_P, jnp.ones((2, 5, 3)), time_major=2), TypeError,
     r"`time_major` must be a bool; got 2"),
    (lambda: jrnn.rnn_apply(GRU_P, jnp.ones((2, 5, 3)), key=jnp.zeros(3, jnp.uint32)), TypeError,
     r"`key` must be a PRNG key .*; got an array of dtype uint32 and shape \(3,\)"),
    (lambda: jrnn.rnn_apply(GRU_P, jnp.ones((2, 5, 3)), key=jax.random.split(KEY)), ValueError,
     r"`key` must be one PRNG key; got a key array of shape \(2,\)"),
    (lambda: jrnn.rnn_apply(GRU_P, jnp.ones((2, 5, 3)), key=KEY, dropout=1.5), ValueError,
     r"`dropout` must be a float in \[0, 1\]; got 1.5"),
])
def test_input_errors_at_trace_time(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_errors_raise_under_jit_before_compute():
    f = jax.jit(jrnn.rnn_apply)
    with pytest.raises(ValueError, match=r"`xs` must have shape"):
        f(GRU_P, jnp.ones((2, 5, 8)))


@pytest.mark.parametrize("kind, remat, unroll", [("lstm", 4, 2), ("gru_reset_before", 5, True)])
def test_remat_with_resets_gives_the_plain_scan_values_and_grads(kind, remat, unroll):
    params = make(kind)
    xs = jax.random.normal(jax.random.key(7), (3, 11, params.input_size))
    h0 = rand_state(params, (3,))
    lengths = jnp.array([11, 4, 0])
    resets = jnp.zeros((3, 11), bool).at[0, 6].set(True)

    def loss(params, xs, h0, **kw):
        ys, h = jrnn.rnn_apply(params, xs, h0, lengths=lengths, resets=resets, reverse=True, **kw)
        return jnp.sum(ys * ys) + sum(jnp.sum(a) for a in jax.tree.leaves(h))

    want = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(params, xs, h0)
    got = jax.jit(jax.value_and_grad(functools.partial(loss, remat=remat, unroll=unroll),
                                     argnums=(0, 1, 2)))(params, xs, h0)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6), got, want)


def test_remat_cuts_saved_memory():
    params = make("gru", I=8, H=8)
    xs = jnp.ones((256, 2, 8))  # time-major: no transposed copy of the inputs in the temp memory
    temp = {}
    for c in (None, 16):
        g = jax.jit(jax.grad(lambda p, c=c: jrnn.rnn_apply(p, xs, time_major=True, remat=c)[0].sum()))
        temp[c] = g.lower(params).compile().memory_analysis().temp_size_in_bytes
    assert temp[16] * 4 < temp[None]


def test_remat_errors():
    with pytest.raises(ValueError, match=r"`remat` must be None or a positive int; got 0"):
        jrnn.rnn_apply(GRU_P, jnp.ones((2, 5, 3)), remat=0)


def test_default_unroll_rule():
    from jrnn.policy import default_unroll

    assert default_unroll(64, 128, 4) == 4 and default_unroll(512, 128, 64) == 2
    assert default_unroll(256, 128, 32) == 4 and default_unroll(256, 128, 128) == 2
    assert default_unroll(64, 1, 4) == 1  # never more than T


def traced_loop(params, xs, h0, lengths, reverse):
    """`cell_apply` step by step over `xs [B, T, I]` in a traced Python loop, masked with `lengths`."""
    T = xs.shape[1]
    ys, h = [None] * T, h0
    for t in (reversed(range(T)) if reverse else range(T)):
        out, h_new = jrnn.cell_apply(params, xs[:, t], h)
        ok = (t < lengths)[:, None]
        h = jax.tree.map(functools.partial(jnp.where, ok), h_new, h)
        ys[t] = jnp.where(ok, out, 0.0)
    return jnp.stack(ys, 1), h


def weighted_loss(run, params, xs, h0):
    ys, h = run(params, xs, h0)
    w = jnp.cos(jnp.arange(ys.size, dtype=jnp.float32)).reshape(ys.shape)
    return (w * ys).sum() + sum((jnp.sin(a) ** 2).sum() for a in jax.tree.leaves(h))


@pytest.mark.parametrize("kind, unroll, reverse", [
    ("simple_tanh", 1, True), ("lstm", 3, False), ("lstm", 1, True), ("gru", 3, True)])
def test_derivative_equals_autodiff_of_the_step_loop(kind, unroll, reverse):
    """These cells train through `jrnn/derivative.py`: it must equal `jax.grad` of a traced loop of
    `cell_apply`, with lengths, h0 and a cotangent on the final state too."""
    params = make(kind, I=4, H=5)
    assert params.fused
    B, T = 3, 8
    xs = jax.random.normal(jax.random.key(7), (B, T, params.input_size))
    h0 = rand_state(params, (B,))
    lengths = jnp.array([8, 5, 0])
    reference = functools.partial(traced_loop, lengths=lengths, reverse=reverse)

    def fused(params, xs, h0):
        return jrnn.rnn_apply(params, xs, h0, unroll=unroll, reverse=reverse, lengths=lengths)

    got = jax.jit(jax.grad(functools.partial(weighted_loss, fused), argnums=(0, 1, 2)))(params, xs, h0)
    want = jax.jit(jax.grad(functools.partial(weighted_loss, reference), argnums=(0, 1, 2)))(params, xs, h0)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind, remat, unroll, reverse, dtype", [
    ("lstm", 3, 1, False, jnp.float32),   # T = 8: segments of 3, 3, 2
    ("gru", 5, 2, True, jnp.float32),     # reverse: the short segment first
    ("simple_tanh", 3, 2, True, jnp.bfloat16),  # bfloat16 params: the autodiff loop under remat
])
def test_remat_through_the_derivative_equals_autodiff_of_the_step_loop(kind, remat, unroll, reverse, dtype):
    """`remat=c` with `T mod c != 0`, lengths and no resets: each segment runs through
    `jrnn/derivative.py` (float32) and must give `jax.grad` of a traced `cell_apply` loop."""
    params = make(kind, I=4, H=5, dtype=dtype)
    B, T = 3, 8
    xs = jax.random.normal(jax.random.key(7), (B, T, params.input_size))
    h0 = rand_state(params, (B,))
    lengths = jnp.array([8, 5, 0])
    reference = functools.partial(traced_loop, lengths=lengths, reverse=reverse)

    def remat_run(params, xs, h0):
        return jrnn.rnn_apply(params, xs, h0, unroll=unroll, reverse=reverse, lengths=lengths, remat=remat)

    both = lambda run: jax.jit(jax.value_and_grad(functools.partial(weighted_loss, run), (0, 1, 2)))  # noqa: E731
    got, want = both(remat_run)(params, xs, h0), both(reference)(params, xs, h0)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == jnp.float32 else dict(rtol=2e-2, atol=2e-2)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32), **tol)


def test_one_jit_line_takes_every_option():
    """`jax.jit(jrnn.rnn_apply, static_argnames=jrnn.STATIC_ARGNAMES)` with every option given: the
    dropout rates are traced, and the result equals the eager call (Python floats)."""
    k1, k2, kd = jax.random.split(jax.random.key(0), 3)
    stack = jrnn.Stack((jrnn.Bidirectional.init(k1, jrnn.LSTM, 3, 4), jrnn.GRU.init(k2, 8, 4)))
    xs = jax.random.normal(jax.random.key(1), (2, 5, 3))
    resets = jnp.zeros((2, 5), bool).at[0, 2].set(True)
    kw = dict(unroll=2, reverse=True, time_major=False, lengths=jnp.array([5, 3]), resets=resets,
              reset_state=jrnn.initial_state(stack, (2,)), key=kd, dropout=0.3, recurrent_dropout=0.2,
              layer_dropout=0.1, remat=2, mode="sequential", mask=jnp.ones((2, 5), bool).at[1, 0].set(False),
              return_states=True)
    assert set(jrnn.STATIC_ARGNAMES) == {"unroll", "reverse", "time_major", "remat", "mode", "return_states",
                                        "axis_name"}
    run = jax.jit(jrnn.rnn_apply, static_argnames=jrnn.STATIC_ARGNAMES)
    got = run(stack, xs, None, **kw)
    want = jrnn.rnn_apply(stack, xs, None, **kw)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got[0], run(stack, xs, None, **{**kw, "key": None})[0])  # dropout was on


@pytest.mark.parametrize("name, value", [("unroll", 2), ("reverse", True), ("time_major", False),
                                         ("remat", 2), ("return_states", True)])
def test_an_option_traced_where_it_must_be_static_says_so(name, value):
    hint = r"Mark it static: jax.jit\(jrnn.rnn_apply, static_argnames=jrnn.STATIC_ARGNAMES\)"
    with pytest.raises(TypeError, match=rf"`{name}` must be static under jax.jit; got a tracer\. {hint}"):
        jax.jit(jrnn.rnn_apply)(GRU_P, jnp.ones((2, 5, 3)), **{name: value})
