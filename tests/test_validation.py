"""Params are checked where they are built (constructor, `dataclasses.replace`, `jrnn.load`) and `init`'s
arguments where they are given: each error names the field, what was expected and what came. JAX's own
rebuilding of the pytrees (tree maps, `vmap`, `eval_shape`, in_axes specs) is not checked."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn

I, H = 2, 3
KEY = jax.random.key(0)
LSTM = jrnn.LSTM.init(KEY, I, H)
GRU = jrnn.GRU.init(KEY, I, H)
GRU_BEFORE = jrnn.GRU.init(KEY, I, H, reset_after=False)
SIMPLE = jrnn.SimpleRNN.init(KEY, I, H)
MINGRU = jrnn.MinGRU.init(KEY, I, H)
MINLSTM = jrnn.MinLSTM.init(KEY, I, H)
LRU = jrnn.LRU.init(KEY, I, H)
ENSEMBLE = jax.vmap(lambda k: jrnn.LSTM.init(k, I, H))(jax.random.split(KEY, 5))
rep = dataclasses.replace

# name: (build, error, message); the messages give the field, the expected shape and what came.
BAD_PARAMS = {
    # A [3H] bias with reset_after=True used to run as two scalar biases.
    "gru_bias_3h": (lambda: jrnn.GRU(GRU.kernel, GRU.recurrent_kernel, GRU.bias[0]), ValueError,
                    r"`bias` of GRU\(reset_after=True\) must have shape \(2, 3H\) = \(2, 9\) .*; got \(9,\)"),
    "gru_before_bias_2x3h": (lambda: rep(GRU, reset_after=False), ValueError,
                             r"`bias` of GRU\(reset_after=False\) must have shape \(3H,\) = \(9,\) .*"
                             r"got \(2, 9\)"),
    "lstm_bias": (lambda: rep(LSTM, bias=LSTM.bias[:9]), ValueError,
                  r"`bias` of LSTM must have shape \(4H,\) = \(12,\) \(H = 3 from `recurrent_kernel`\); "
                  r"got \(9,\)"),
    "simple_bias": (lambda: rep(SIMPLE, bias=jnp.zeros((1, H))), ValueError,
                    r"`bias` of SimpleRNN must have shape \(H,\) = \(3,\) .*; got \(1, 3\)"),
    # A kernel with 3 gate blocks used to fail deep inside the loop ("add got incompatible shapes").
    "lstm_kernel_gates": (lambda: rep(LSTM, kernel=LSTM.kernel[:, :9]), ValueError,
                          r"`kernel` of LSTM must have shape \(I, 4H\) = \(I, 12\) \(H = 3 from "
                          r"`recurrent_kernel`\); got \(2, 9\)"),
    "lstm_recurrent_gates": (lambda: rep(LSTM, recurrent_kernel=LSTM.recurrent_kernel[:, :9]), ValueError,
                             r"`recurrent_kernel` of LSTM must have shape \(H, 4H\); got \(3, 9\)"),
    "simple_recurrent_not_square": (
        lambda: rep(SIMPLE, recurrent_kernel=jnp.zeros((H, H + 1))), ValueError,
        r"`recurrent_kernel` of SimpleRNN must have shape \(H, H\); got \(3, 4\)"),
    "kernel_vector": (lambda: rep(LSTM, kernel=jnp.zeros(12)), ValueError,
                      r"`kernel` of LSTM must have shape \(I, 4H\) = \(I, 12\) .*; got \(12,\)"),
    "int_kernel": (lambda: rep(LSTM, kernel=LSTM.kernel.astype(jnp.int32)), TypeError,
                   r"`kernel` of LSTM must be a real floating array .*; got dtype int32"),
    "mixed_dtypes": (lambda: rep(GRU, kernel=GRU.kernel.astype(jnp.bfloat16)), TypeError,
                     r"`kernel` of GRU\(reset_after=True\) must have the dtype of `recurrent_kernel` "
                     r"\(float32\); got bfloat16"),
    "missing_recurrent": (lambda: rep(LSTM, recurrent_kernel=None), TypeError,
                          r"`recurrent_kernel` of LSTM must be an array; got NoneType"),
    "list_bias": (lambda: rep(LSTM, bias=[0.0] * 12), TypeError,
                  r"`bias` of LSTM must be an array or None; got list"),
    "reset_after_str": (lambda: rep(GRU, reset_after="yes"), TypeError,
                        r"`reset_after` must be a bool; got 'yes'"),
    "activation_unknown": (lambda: rep(SIMPLE, activation="gelu"), ValueError,
                           r"Unknown `activation` 'gelu'; expected one of "
                           r"\('tanh', 'relu', 'sigmoid', 'linear'\)"),
    "activation_function": (lambda: rep(SIMPLE, activation=jnp.tanh), TypeError,
                            r"`activation` of SimpleRNN must be a name, one of \('tanh', .*; got <"),
    "mingru_kernel": (lambda: rep(MINGRU, kernel=jnp.zeros((I, 5))), ValueError,
                      r"`kernel` of MinGRU must have shape \(I, 2H\); got \(2, 5\)"),
    "mingru_bias": (lambda: rep(MINGRU, bias=jnp.zeros(H)), ValueError,
                    r"`bias` of MinGRU must have shape \(2H,\) = \(6,\) \(H = 3 from `kernel`\); got \(3,\)"),
    "minlstm_bias": (lambda: rep(MINLSTM, bias=jnp.zeros(2 * H)), ValueError,
                     r"`bias` of MinLSTM must have shape \(3H,\) = \(9,\) \(H = 3 from `kernel`\); "
                     r"got \(6,\)"),
    "minlstm_int": (lambda: rep(MINLSTM, bias=jnp.zeros(3 * H, jnp.int32)), TypeError,
                    r"`bias` of MinLSTM must be a real floating array .*; got dtype int32"),
    "lru_theta": (lambda: rep(LRU, theta_log=jnp.zeros(H + 1)), ValueError,
                  r"`theta_log` of LRU must have shape \(N,\) = \(3,\) \(N = 3 from `nu_log`\); got \(4,\)"),
    "lru_C_transposed": (lambda: rep(LRU, C_re=LRU.C_re.T), ValueError,
                         r"`C_re` of LRU must have shape \(N, I\) = \(3, 2\) "
                         r"\(N = 3 from `nu_log`, I = 2 from `B_re`\); got \(2, 3\)"),
    "lru_D": (lambda: rep(LRU, D=jnp.zeros(H)), ValueError,
              r"`D` of LRU must have shape \(I,\) = \(2,\) \(I = 2 from `B_re`\); got \(3,\)"),
    "lru_complex": (lambda: rep(LRU, B_im=LRU.B_im.astype(jnp.complex64)), TypeError,
                    r"`B_im` of LRU must be a real floating array .*; got dtype complex64"),
    # Leading (ensemble) axes must be the same on every field.
    "ensemble_bias_unstacked": (lambda: rep(ENSEMBLE, bias=LSTM.bias), ValueError,
                                r"`bias` of LSTM must have shape \(5, 4H\) = \(5, 12\) \(H = 3 from "
                                r"`recurrent_kernel`, leading axes \(5,\) from `recurrent_kernel`\); "
                                r"got \(12,\)"),
    "stack_residual_str": (lambda: jrnn.Stack((LSTM,), residual="no"), TypeError,
                           r"`Stack.residual` must be a bool; got 'no'"),
    # Bidirectional takes cells only (a Stack of Bidirectional layers is the bidirectional stack).
    "bidirectional_of_stacks": (
        lambda: jrnn.Bidirectional(jrnn.Stack((LSTM,)), jrnn.Stack((LSTM,))), TypeError,
        r"`Bidirectional.forward` must be a Cell \(jrnn params\); got Stack"),
}


@pytest.mark.parametrize("name", BAD_PARAMS)
def test_bad_params_raise_naming_the_field(name):
    build, error, match = BAD_PARAMS[name]
    with pytest.raises(error, match=match):
        build()


BAD_INIT = {
    "key_none": (lambda: jrnn.LSTM.init(None, I, H), TypeError,
                 r"`key` must be a PRNG key \(jax.random.key\(0\) or jax.random.PRNGKey\(0\)\); got None"),
    "key_int": (lambda: jrnn.LRU.init(jnp.zeros(2, jnp.int32), I, H), TypeError,
                r"`key` must be a PRNG key .*; got an array of dtype int32 and shape \(2,\)"),
    "key_batch": (lambda: jrnn.MinGRU.init(jax.random.split(KEY), I, H), ValueError,
                  r"`key` must be one PRNG key; got a key array of shape \(2,\)"),
    "stack_key_none": (lambda: jrnn.Stack.init(None, jrnn.GRU, I, H, 2), TypeError,
                       r"`key` must be a PRNG key"),
    "bidirectional_key_none": (lambda: jrnn.Bidirectional.init(None, jrnn.GRU, I, H), TypeError,
                               r"`key` must be a PRNG key"),
    "dtype_name": (lambda: jrnn.GRU.init(KEY, I, H, dtype="foo"), TypeError,
                   r"`dtype` must be a real floating dtype .*; got 'foo'"),
    "dtype_none": (lambda: jrnn.SimpleRNN.init(KEY, I, H, dtype=None), TypeError,
                   r"`dtype` must be a real floating dtype .*; got None"),
    "dtype_int": (lambda: jrnn.MinLSTM.init(KEY, I, H, dtype=jnp.int32), TypeError,
                  r"`dtype` must be a real floating dtype .*; got int32"),
    "dtype_float64_without_x64": (lambda: jrnn.LSTM.init(KEY, I, H, dtype=jnp.float64), ValueError,
                                  r"`dtype` float64 needs `jax.config.update\('jax_enable_x64', True\)`"),
    "use_bias_str": (lambda: jrnn.LSTM.init(KEY, I, H, use_bias="no"), TypeError,
                     r"`use_bias` must be a bool; got 'no'"),
    "unit_forget_bias_int": (lambda: jrnn.LSTM.init(KEY, I, H, unit_forget_bias=0), TypeError,
                             r"`unit_forget_bias` must be a bool; got 0"),
    "reset_after_str": (lambda: jrnn.GRU.init(KEY, I, H, reset_after="yes"), TypeError,
                        r"`reset_after` must be a bool; got 'yes'"),
    "activation": (lambda: jrnn.SimpleRNN.init(KEY, I, H, activation="gelu"), ValueError,
                   r"Unknown `activation` 'gelu'; expected one of"),
    "lru_r_min_str": (lambda: jrnn.LRU.init(KEY, I, H, r_min="0"), TypeError,
                      r"`r_min` must be a real number; got '0'"),
    "stack_residual": (lambda: jrnn.Stack.init(KEY, jrnn.GRU, I, H, 2, residual="no"), TypeError,
                       r"`residual` must be a bool; got 'no'"),
    "stack_bidirectional": (lambda: jrnn.Stack.init(KEY, jrnn.GRU, I, H, 2, bidirectional=1), TypeError,
                            r"`bidirectional` must be a bool; got 1"),
}


@pytest.mark.parametrize("name", BAD_INIT)
def test_bad_init_arguments_raise_naming_the_argument(name):
    build, error, match = BAD_INIT[name]
    with pytest.raises(error, match=match):
        build()


@pytest.mark.parametrize("convert, library", [(jrnn.to_torch, "PyTorch"), (jrnn.to_keras, "Keras")])
@pytest.mark.parametrize("params", [MINGRU, MINLSTM, LRU], ids=["MinGRU", "MinLSTM", "LRU"])
def test_interop_refuses_cells_without_a_layer(convert, library, params):
    name = type(params).__name__
    with pytest.raises(TypeError, match=rf"`params` is of type {name}: {library} has no such layer"):
        convert(params)


def test_valid_params_rebuild_and_static_bools_are_plain():
    for params in (LSTM, GRU, GRU_BEFORE, SIMPLE, MINGRU, MINLSTM, LRU, ENSEMBLE,
                   jrnn.LSTM.init(KEY, I, H, use_bias=False), jrnn.LRU.init(KEY, I, H, dtype=jnp.bfloat16)):
        fields = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
        rebuilt = type(params)(**fields)
        assert jax.tree.structure(rebuilt) == jax.tree.structure(params)
    gru = rep(GRU_BEFORE, reset_after=np.True_, bias=GRU.bias)
    assert gru.reset_after is True and jax.tree.structure(gru) == jax.tree.structure(GRU)
    assert jrnn.Stack((LSTM,), residual=np.False_).residual is False


def test_jax_rebuilds_are_not_checked():
    """Tree maps to anything, shape structs, in_axes specs, traced and vmapped construction all work."""
    for params in (LSTM, GRU, MINGRU, LRU, jrnn.Stack((LSTM, jrnn.GRU.init(KEY, H, H)))):
        assert all(leaf is None for leaf in jax.tree.leaves(jax.tree.map(lambda a: None, params),
                                                            is_leaf=lambda x: x is None))
        marks = jax.tree.map(lambda a: object(), params)
        assert type(marks) is type(params)
        counts = jax.tree.map(lambda a: jnp.zeros((), jnp.int32), params)  # per-leaf int scalars
        assert all(c.dtype == jnp.int32 for c in jax.tree.leaves(counts))
        assert jax.tree.structure(jax.tree.map(jnp.zeros_like, params)) == jax.tree.structure(params)
    shapes = jax.eval_shape(lambda k: jrnn.GRU.init(k, I, H), KEY)
    assert isinstance(shapes.kernel, jax.ShapeDtypeStruct) and shapes.bias.shape == (2, 3 * H)
    assert rep(shapes, reset_after=True).bias.shape == (2, 3 * H)  # shape structs are checked too
    with pytest.raises(ValueError, match=r"`bias` of GRU\(reset_after=False\) must have shape"):
        rep(shapes, reset_after=False)
    # An ensemble: vmapped init gives stacked leaves [E, ...], and a vmap over it with an in_axes spec
    # built by the constructor from ints (no arrays: nothing to check).
    assert ENSEMBLE.kernel.shape == (5, I, 4 * H) and ENSEMBLE.hidden_size == H
    xs = jnp.ones((1, 2, I), jnp.float32)
    ys = jax.vmap(lambda p: jrnn.rnn_apply(p, xs, unroll=True)[0], in_axes=(jrnn.LSTM(0, 0, 0),))(ENSEMBLE)
    assert ys.shape == (5, 1, 2, H)
    one = jrnn.rnn_apply(jax.tree.map(lambda a: a[1], ENSEMBLE), xs, unroll=True)[0]
    np.testing.assert_allclose(ys[1], one, rtol=1e-6, atol=1e-6)
    jitted = jax.jit(lambda k: jrnn.MinGRU.init(k, I, H))(KEY)
    assert jitted.kernel.shape == (I, 2 * H)
    raw = jrnn.LSTM.init(jax.random.PRNGKey(0), I, H)  # a raw uint32 key is a key too
    assert raw.kernel.shape == (I, 4 * H)


def test_lru_runs_with_bfloat16_params():
    """bfloat16 params project and read out in bfloat16 and recur in complex64 (it used to fail in
    `jax.lax.complex`): close to the float32 params it was rounded from, at bfloat16 tolerance. (The
    parallel form shares `project` and `coefficients`.)"""
    xs = jax.random.normal(jax.random.key(1), (2, 4, I), jnp.float32)
    low = jrnn.LRU.init(KEY, I, H, dtype=jnp.bfloat16)
    assert low.dtype == jnp.bfloat16 and low.state_dtype == jnp.complex64
    ys, h_T = jrnn.rnn_apply(low, xs, unroll=True)
    assert ys.dtype == jnp.float32 and h_T.dtype == jnp.complex64
    want, want_h = jrnn.rnn_apply(jax.tree.map(lambda a: a.astype(jnp.float32), low), xs, unroll=True)
    assert float(jnp.abs(want).max()) > 0.1
    np.testing.assert_allclose(ys, want, rtol=3e-2, atol=3e-2)
    np.testing.assert_allclose(h_T, want_h, rtol=3e-2, atol=3e-2)
