"""Parity with Keras 3 (JAX backend): layers, cells, `go_backwards`, `unroll`, and Keras' initializers.

jrnn's params have Keras' layout, so `layer.set_weights([kernel, recurrent_kernel, bias])` takes them
as they are; the same float32 inputs and initial state must then give the same sequence and state.
"""

import jax
import jax.numpy as jnp
import keras  # noqa: E402
import numpy as np
import pytest

import jrnn

# kind: (jrnn params class, its init kwargs, Keras layer name, its kwargs; the cell is name + "Cell")
KINDS = {
    "simple_tanh": (jrnn.SimpleRNN, dict(activation="tanh"), "SimpleRNN", dict(activation="tanh")),
    "simple_relu": (jrnn.SimpleRNN, dict(activation="relu"), "SimpleRNN", dict(activation="relu")),
    "lstm": (jrnn.LSTM, {}, "LSTM", {}),
    "gru": (jrnn.GRU, dict(reset_after=True), "GRU", dict(reset_after=True)),
    "gru_reset_before": (jrnn.GRU, dict(reset_after=False), "GRU", dict(reset_after=False)),
}
GATES = {"simple_tanh": 1, "simple_relu": 1, "lstm": 4, "gru": 3, "gru_reset_before": 3}
TOL = dict(rtol=1e-5, atol=1e-5)
# (B, T, I, H, initializer): "pytorch" makes every bias nonzero; "keras" is jrnn's default.
SIZES = [(3, 11, 7, 13, "pytorch"), (1, 1, 1, 1, "pytorch"), (2, 5, 3, 4, "keras")]
# Keras' weights are overwritten by `set_weights`; zeros skip compiling its initializers at every shape.
NO_INIT = dict(kernel_initializer="zeros", recurrent_initializer="zeros", bias_initializer="zeros")


def keras_mode():
    """Keras' own ops add a bias `[n]` to `[B, n]` (and its orthogonal initializer scales `[m, n]` by
    `[n]`), which the conftest's `rank_promotion="raise"` rejects; strict dtype promotion is fine.
    Only the Keras calls run under this; jrnn runs under the strict settings."""
    return jax.numpy_rank_promotion("allow")


def make(kind, I, H, use_bias=True, initializer="pytorch", seed=0):
    cls, kw, _, _ = KINDS[kind]
    return cls.init(jax.random.key(seed), I, H, use_bias=use_bias, initializer=initializer, **kw)


def keras_weights(params):
    return [np.asarray(w) for w in (params.kernel, params.recurrent_kernel, params.bias) if w is not None]


def rand_state(params, B, seed=1):
    """A nonzero jrnn state `[B, H]` (an `LSTMState` for the LSTM)."""
    leaves, tree = jax.tree.flatten(jrnn.initial_state(params, (B,)))
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noise = [0.5 * jax.random.normal(k, z.shape, z.dtype) for k, z in zip(keys, leaves, strict=True)]
    return jax.tree.unflatten(tree, noise)


def as_keras_states(state):
    """jrnn state -> Keras' list of states (`[h]`, or `[h, c]` for the LSTM)."""
    return [np.asarray(s) for s in jax.tree.leaves(state)]


def rand_xs(B, T, I, seed=2):
    return np.random.default_rng(seed).standard_normal((B, T, I)).astype(np.float32)


def keras_layer(kind, params, B, T, use_bias=True, **kw):
    _, _, name, layer_kw = KINDS[kind]
    with keras_mode():
        layer = getattr(keras.layers, name)(params.hidden_size, use_bias=use_bias, return_sequences=True,
                                            return_state=True, **NO_INIT, **layer_kw, **kw)
        layer.build((B, T, params.input_size))
        layer.set_weights(keras_weights(params))
    return layer


def run_keras(layer, xs, state=None):
    """Returns `(ys [B, T, H], [final states])` from a Keras layer with `return_state=True`."""
    with keras_mode():
        if state is None:
            outs = layer(xs)
        else:
            outs = layer(xs, initial_state=as_keras_states(state))
    return np.asarray(outs[0]), [np.asarray(s) for s in outs[1:]]


def assert_parity(ys_keras, states_keras, ys, h_T):
    np.testing.assert_allclose(np.asarray(ys), ys_keras, **TOL)
    leaves = jax.tree.leaves(h_T)
    assert len(leaves) == len(states_keras)
    for got, want in zip(leaves, states_keras, strict=True):
        np.testing.assert_allclose(np.asarray(got), want, **TOL)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s[:4])) + "-" + s[4])
@pytest.mark.parametrize("use_bias", [True, False])
def test_layer_matches_keras(kind, size, use_bias):
    B, T, I, H, initializer = size
    params = make(kind, I, H, use_bias, initializer)
    layer = keras_layer(kind, params, B, T, use_bias)
    # Keras holds exactly jrnn's arrays: same count, shapes and values (gate layouts agree). Read through
    # `.value`: `layer.get_weights()` calls `np.array(variable)`, which warns under numpy 2 (copy keyword).
    held = [np.asarray(v.value) for v in layer.weights]
    want = keras_weights(params)
    assert [w.shape for w in held] == [w.shape for w in want]
    for got, w in zip(held, want, strict=True):
        np.testing.assert_array_equal(got, w)
    xs, h0 = rand_xs(B, T, I), rand_state(params, B)
    ys_k, states_k = run_keras(layer, xs, h0)
    ys, h_T = jrnn.rnn_apply(params, jnp.asarray(xs), h0)
    assert ys.shape == (B, T, H) and ys.dtype == jnp.float32
    assert_parity(ys_k, states_k, ys, h_T)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("unroll", [False, True])
def test_go_backwards_matches_reverse(kind, unroll):
    B, T, I, H = 3, 11, 7, 13
    params = make(kind, I, H)
    layer = keras_layer(kind, params, B, T, go_backwards=True, unroll=unroll)
    xs, h0 = rand_xs(B, T, I), rand_state(params, B)
    ys_k, states_k = run_keras(layer, xs, h0)
    ys, h_T = jrnn.rnn_apply(params, jnp.asarray(xs), h0, reverse=True, unroll=unroll)
    # Keras' `go_backwards=True` returns the sequence in processing order: its step 0 is the output at
    # the last input step. jrnn's `reverse=True` keeps the original time order, so flip Keras' before
    # comparing. The final state (after the first input step) needs no flip.
    assert_parity(ys_k[:, ::-1], states_k, ys, h_T)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("jrnn_unroll", [True, 4])
def test_keras_unroll_matches(kind, jrnn_unroll):
    """Keras `unroll=True` against jrnn's Python unroll and its chunked scan; zero initial state."""
    B, T, I, H = 3, 11, 7, 13
    params = make(kind, I, H)
    layer = keras_layer(kind, params, B, T, unroll=True)
    xs = rand_xs(B, T, I)
    ys_k, states_k = run_keras(layer, xs)
    ys, h_T = jrnn.rnn_apply(params, jnp.asarray(xs), unroll=jrnn_unroll)
    assert_parity(ys_k, states_k, ys, h_T)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("use_bias", [True, False])
def test_cell_step_matches_keras(kind, use_bias):
    B, I, H = 3, 7, 13
    _, _, name, layer_kw = KINDS[kind]
    params = make(kind, I, H, use_bias)
    x, h0 = rand_xs(B, 1, I)[:, 0], rand_state(params, B)
    with keras_mode():
        cell = getattr(keras.layers, name + "Cell")(H, use_bias=use_bias, **NO_INIT, **layer_kw)
        cell.build((B, I))
        cell.set_weights(keras_weights(params))
        out_k, states_k = cell(x, as_keras_states(h0))
    # Given a list of states, a Keras 3 cell returns `(out, [h])`, or `(h, [h, c])` for the LSTM.
    assert isinstance(states_k, (list, tuple)) and len(states_k) == (2 if kind == "lstm" else 1)
    out, h1 = jrnn.cell_apply(params, jnp.asarray(x), h0)
    assert isinstance(h1, jrnn.LSTMState) == (kind == "lstm")
    assert_parity(np.asarray(out_k), [np.asarray(s) for s in states_k], out, h1)
    np.testing.assert_allclose(np.asarray(out), np.asarray(jax.tree.leaves(h1)[0]), rtol=0, atol=0)


@pytest.mark.parametrize("kind", list(KINDS))
def test_keras_default_initializers(kind):
    """`initializer="keras"` (the default): glorot-uniform kernel, orthogonal recurrent kernel, zero bias
    except the LSTM forget block at one. Hand-computed, no Keras."""
    I, H, G = 7, 13, GATES[kind]
    cls, kw, _, _ = KINDS[kind]
    params = cls.init(jax.random.key(3), I, H, **kw)
    kernel, R = np.asarray(params.kernel), np.asarray(params.recurrent_kernel)
    assert kernel.shape == (I, G * H) and R.shape == (H, G * H)
    assert kernel.dtype == R.dtype == np.float32

    limit = np.sqrt(6.0 / (I + G * H))
    assert np.abs(kernel).max() <= limit
    assert np.abs(kernel).max() > 0.8 * limit  # spread over the range, not a narrower distribution
    assert abs(float(kernel.mean())) < 0.2 * limit

    # [H, G*H] with H <= G*H: orthonormal rows. (For G = 1 it is square, so also orthonormal columns.)
    np.testing.assert_allclose(R.astype(np.float64) @ R.T.astype(np.float64), np.eye(H), rtol=0, atol=1e-5)

    bias = np.asarray(params.bias)
    want = np.zeros(((2, 3 * H) if kind == "gru" else (G * H,)), np.float32)
    if kind == "lstm":  # blocks i, f, c, o: forget gate bias one (unit_forget_bias)
        want[H:2 * H] = 1
    np.testing.assert_array_equal(bias, want)


def test_lstm_unit_forget_bias_off_and_pytorch_bias():
    no_unit = jrnn.LSTM.init(jax.random.key(0), 7, 13, unit_forget_bias=False)
    np.testing.assert_array_equal(np.asarray(no_unit.bias), np.zeros(52, np.float32))
    torch_style = jrnn.LSTM.init(jax.random.key(0), 7, 13, initializer="pytorch")
    bound = 1 / np.sqrt(13)
    for w in (torch_style.kernel, torch_style.recurrent_kernel, torch_style.bias):
        assert np.abs(np.asarray(w)).max() <= bound
    assert np.all(np.asarray(torch_style.bias) != 0)
