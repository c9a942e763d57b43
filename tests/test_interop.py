"""`from_torch`/`to_torch` and `from_keras`/`to_keras`: layouts, round trips, and every error.

Torch: a module's weights go to jrnn and back into a fresh module (`load_state_dict(strict=True)`), whose
forward must equal the original's (the SimpleRNN/LSTM biases are summed, so the dicts differ but not
the outputs); jrnn -> torch -> jrnn is bitwise. Keras: the params hold exactly the layer's variables,
and `to_keras` gives them back exactly, in the order `get_weights()` and `set_weights()` use.
"""

import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import keras  # noqa: E402
import numpy as np
import pytest
import torch  # noqa: E402

import jrnn


def tree_equal(a, b):
    """Same pytree structure (classes and static settings) and bitwise-equal arrays of the same dtype."""
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), strict=True)


def test_import_jrnn_imports_neither_torch_nor_keras():
    code = "import jrnn, sys; assert 'torch' not in sys.modules and 'keras' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------
# PyTorch

TORCH_KINDS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
I, H = 3, 4


def torch_module(kind, num_layers=1, bidirectional=False, bias=True, seed=0, **kw):
    torch.manual_seed(seed)
    kw = dict(num_layers=num_layers, bidirectional=bidirectional, bias=bias, batch_first=True, **kw)
    if kind.startswith("rnn"):
        return torch.nn.RNN(I, H, nonlinearity=kind[4:], **kw)
    return {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](I, H, **kw)


def torch_forward(module, seed=1):
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((2, 5, I)).astype(np.float32))
    with torch.no_grad():
        out, state = module(x)
    return [out.numpy()] + [s.numpy() for s in (state if isinstance(state, tuple) else (state,))]


JRNN_CLASS = {"rnn_tanh": jrnn.SimpleRNN, "rnn_relu": jrnn.SimpleRNN, "lstm": jrnn.LSTM, "gru": jrnn.GRU}


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_torch_round_trip(kind, num_layers, bidirectional, bias):
    module = torch_module(kind, num_layers, bidirectional, bias)
    params = jrnn.from_torch(module)

    # Structure: a cell, a Bidirectional, or a Stack of either.
    layers = params.layers if num_layers > 1 else (params,)
    assert isinstance(params, jrnn.Stack) == (num_layers > 1) and len(layers) == num_layers
    for k, layer in enumerate(layers):
        assert isinstance(layer, jrnn.Bidirectional) == bidirectional
        cells = (layer.forward, layer.backward) if bidirectional else (layer,)
        for cell in cells:
            assert type(cell) is JRNN_CLASS[kind]
            assert cell.input_size == (I if k == 0 else H * (1 + bidirectional)) and cell.hidden_size == H
            assert (cell.bias is None) == (not bias) and cell.kernel.dtype == jnp.float32
            if kind.startswith("rnn"):
                assert cell.activation == kind[4:]
        if bidirectional:
            assert layer.merge == "concat"
    if num_layers > 1:
        assert not params.residual

    # Layout, checked by hand on layer 0's forward cell.
    cell0 = layers[0].forward if bidirectional else layers[0]
    w_ih, w_hh = module.weight_ih_l0.detach().numpy(), module.weight_hh_l0.detach().numpy()
    if kind == "gru":
        swap = lambda a: np.concatenate([a[H:2 * H], a[:H], a[2 * H:]])  # noqa: E731
        np.testing.assert_array_equal(cell0.kernel, swap(w_ih).T)
        np.testing.assert_array_equal(cell0.recurrent_kernel, swap(w_hh).T)
        if bias:
            b = [swap(getattr(module, n).detach().numpy()) for n in ("bias_ih_l0", "bias_hh_l0")]
            np.testing.assert_array_equal(cell0.bias, np.stack(b))
    else:
        np.testing.assert_array_equal(cell0.kernel, w_ih.T)
        np.testing.assert_array_equal(cell0.recurrent_kernel, w_hh.T)
        if bias:
            summed = (module.bias_ih_l0 + module.bias_hh_l0).detach().numpy()
            np.testing.assert_array_equal(cell0.bias, summed)

    # jrnn -> torch: a fresh module (other seed) takes the dict strictly and computes the same thing.
    state = jrnn.to_torch(params)
    assert list(state) == list(module.state_dict())
    fresh = torch_module(kind, num_layers, bidirectional, bias, seed=7)
    fresh.load_state_dict(state, strict=True)
    for got, want in zip(torch_forward(fresh), torch_forward(module), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)

    # jrnn -> torch -> jrnn is bitwise, through the module and through the dict.
    tree_equal(jrnn.from_torch(fresh), params)
    tree_equal(jrnn.from_torch(state, nonlinearity=kind[4:] if kind.startswith("rnn") else None), params)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_from_torch_state_dict_equals_module(kind, bidirectional):
    for num_layers, bias in [(1, True), (2, False), (3, True)]:
        module = torch_module(kind, num_layers, bidirectional, bias)
        nonlinearity = "relu" if kind == "rnn_relu" else None  # "tanh" is the default
        tree_equal(jrnn.from_torch(module.state_dict(), nonlinearity=nonlinearity), jrnn.from_torch(module))


def test_stacked_bidirectional_lstm_matches_torch_packed():
    """`rnn_apply` on `from_torch` of a 3-layer bidirectional nn.LSTM, padded batch vs packed sequences."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    B, T_, num_layers = 4, 7, 3
    lengths = np.asarray([7, 1, 4, 2], np.int32)
    module = torch_module("lstm", num_layers, bidirectional=True)
    params = jrnn.from_torch(module)
    xs = np.random.default_rng(2).standard_normal((B, T_, I)).astype(np.float32)
    packed = pack_padded_sequence(torch.from_numpy(xs), torch.as_tensor(lengths, dtype=torch.int64),
                                  batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        out, (h_n, c_n) = module(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=T_)

    ys, h_T = jax.jit(jrnn.rnn_apply)(params, jnp.asarray(xs), lengths=jnp.asarray(lengths))
    np.testing.assert_allclose(np.asarray(ys), out.numpy(), rtol=1e-5, atol=1e-5)
    # torch's h_n [num_layers * 2, B, H] is layer-major: (l0 forward, l0 backward, l1 forward, ...).
    assert len(h_T) == num_layers
    for k, (forward, backward) in enumerate(h_T):
        for d, state in enumerate((forward, backward)):
            np.testing.assert_allclose(np.asarray(state.h), h_n[2 * k + d].numpy(), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(np.asarray(state.c), c_n[2 * k + d].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_torch_cells(kind):
    torch.manual_seed(0)
    if kind.startswith("rnn"):
        cell = torch.nn.RNNCell(I, H, nonlinearity=kind[4:])
    else:
        cell = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[kind](I, H)
    params = jrnn.from_torch(cell)
    assert type(params) is JRNN_CLASS[kind]
    state = jrnn.to_torch(params, cell=True)
    assert list(state) == list(cell.state_dict())
    cell.load_state_dict(state, strict=True)
    tree_equal(jrnn.from_torch(cell), params)
    x = np.random.default_rng(0).standard_normal((2, I)).astype(np.float32)
    h = jrnn.initial_state(params, (2,))
    out, _ = jrnn.cell_apply(params, jnp.asarray(x), h)
    with torch.no_grad():
        want = cell(torch.from_numpy(x))
    want = want[0] if isinstance(want, tuple) else want
    np.testing.assert_allclose(np.asarray(out), want.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_torch_low_precision_round_trip(dtype):
    params = jrnn.Stack.init(jax.random.key(0), jrnn.GRU, I, H, 2, bidirectional=True, dtype=dtype,
                             initializer="pytorch")
    state = jrnn.to_torch(params)
    assert all(t.dtype == {jnp.bfloat16: torch.bfloat16, jnp.float16: torch.float16}[dtype]
               for t in state.values())
    tree_equal(jrnn.from_torch(state), params)


def test_jrnn_to_torch_round_trip_keeps_negative_zero_bias():
    params = jrnn.LSTM.init(jax.random.key(0), I, H, initializer="pytorch")
    params = jrnn.LSTM(params.kernel, params.recurrent_kernel, params.bias.at[0].set(-0.0))
    tree_equal(jrnn.from_torch(jrnn.to_torch(params)), params)


def test_from_torch_copies():
    module = torch_module("lstm")
    params = jrnn.from_torch(module)
    before = np.asarray(params.kernel).copy()
    with torch.no_grad():
        module.weight_ih_l0.add_(1.0)
    np.testing.assert_array_equal(np.asarray(params.kernel), before)


def test_from_torch_errors():
    with pytest.raises(TypeError, match="got Linear"):
        jrnn.from_torch(torch.nn.Linear(I, H))
    with pytest.raises(TypeError, match="got list"):
        jrnn.from_torch([1, 2])
    with pytest.raises(ValueError, match="Unknown `nonlinearity` 'gelu'"):
        jrnn.from_torch(torch_module("rnn_tanh").state_dict(), nonlinearity="gelu")
    with pytest.raises(ValueError, match="`nonlinearity` applies to an RNN only"):
        jrnn.from_torch(torch_module("lstm").state_dict(), nonlinearity="tanh")
    with pytest.raises(ValueError, match="`nonlinearity` 'relu' differs from the module's 'tanh'"):
        jrnn.from_torch(torch_module("rnn_tanh"), nonlinearity="relu")

    state = torch_module("gru", num_layers=2, bidirectional=True).state_dict()
    with pytest.raises(ValueError, match="no `bias_hh_l1_reverse` key"):
        jrnn.from_torch({k: v for k, v in state.items() if k != "bias_hh_l1_reverse"})
    with pytest.raises(ValueError, match="no `weight_ih_l0` key"):
        jrnn.from_torch({k: v for k, v in state.items() if k != "weight_ih_l0"})
    with pytest.raises(ValueError, match="Unexpected state dict key `rnn.weight_ih_l0`"):
        jrnn.from_torch({"rnn." + k: v for k, v in state.items()})
    with pytest.raises(ValueError, match="no `weight_ih_l2` key"):  # layer 3 without layer 2
        jrnn.from_torch({**state, "weight_ih_l3": state["weight_ih_l1"]})
    with pytest.raises(ValueError, match="no `bias_hh_l0` key"):
        jrnn.from_torch({**torch_module("gru", bias=False).state_dict(), "bias_ih_l0": state["bias_ih_l0"]})
    with pytest.raises(ValueError, match="Unexpected state dict key `weight_hh`"):  # a cell's key
        jrnn.from_torch({**state, "weight_hh": state["weight_hh_l0"]})
    with pytest.raises(ValueError, match="`weight_hh_l1` must have shape \\(12, 4\\); got \\(12, 3\\)"):
        jrnn.from_torch({**state, "weight_hh_l1": state["weight_hh_l1"][:, :3]})
    with pytest.raises(ValueError, match="`weight_ih_l0` and `weight_hh_l0` must have shapes"):
        jrnn.from_torch({**state, "weight_ih_l0": state["weight_ih_l0"][:8]})
    with pytest.raises(ValueError, match="`bias_ih_l1` has dtype float64"):
        jrnn.from_torch({**state, "bias_ih_l1": state["bias_ih_l1"].double()})
    with pytest.raises(TypeError, match="`weight_hh_l0` must be floating"):
        jrnn.from_torch({**state, "weight_hh_l0": state["weight_hh_l0"].int()})


def test_to_torch_errors():
    key = jax.random.key(0)
    lstm, gru = jrnn.LSTM.init(key, I, H), jrnn.GRU.init(key, I, H)
    with pytest.raises(ValueError, match="`reset_after=False`"):
        jrnn.to_torch(jrnn.GRU.init(key, I, H, reset_after=False))
    with pytest.raises(ValueError, match="`activation` 'sigmoid'"):
        jrnn.to_torch(jrnn.SimpleRNN.init(key, I, H, activation="sigmoid"))
    with pytest.raises(ValueError, match="`merge` must be 'concat'.*got 'sum'"):
        jrnn.to_torch(jrnn.Bidirectional(lstm, lstm, "sum"))
    with pytest.raises(ValueError, match="kind 'LSTM' \\(forward\\) vs 'GRU' \\(backward\\)"):
        jrnn.to_torch(jrnn.Bidirectional(lstm, gru))
    with pytest.raises(ValueError, match="bias True \\(forward\\) vs False \\(backward\\)"):
        jrnn.to_torch(jrnn.Bidirectional(lstm, jrnn.LSTM.init(key, I, H, use_bias=False)))
    with pytest.raises(ValueError, match="`residual=True`"):
        jrnn.to_torch(jrnn.Stack.init(key, jrnn.LSTM, H, H, 2, residual=True))
    with pytest.raises(ValueError, match="kind 'LSTM' \\(layer 0\\) vs 'GRU' \\(layer 1\\)"):
        jrnn.to_torch(jrnn.Stack((lstm, jrnn.GRU.init(key, H, H))))
    with pytest.raises(ValueError, match="bidirectional False \\(layer 0\\) vs True \\(layer 1\\)"):
        jrnn.to_torch(jrnn.Stack((lstm, jrnn.Bidirectional.init(key, jrnn.LSTM, H, H))))
    with pytest.raises(ValueError, match="hidden_size 4 \\(layer 0\\) vs 5 \\(layer 1\\)"):
        jrnn.to_torch(jrnn.Stack((lstm, jrnn.LSTM.init(key, H, 5))))
    with pytest.raises(ValueError, match="`Stack.layers\\[1\\]` takes 3 input features but `Stack.layers"):
        jrnn.Stack((lstm, lstm))
    with pytest.raises(ValueError, match="`params.layers\\[0\\]`: `merge` must be 'concat'"):
        jrnn.to_torch(jrnn.Stack.init(key, jrnn.GRU, I, H, 2, bidirectional=True, merge="ave"))
    with pytest.raises(ValueError, match="`cell=True` needs one cell; got Bidirectional"):
        jrnn.to_torch(jrnn.Bidirectional(lstm, lstm), cell=True)
    with pytest.raises(TypeError, match="`params` must be a jrnn cell.*got dict"):
        jrnn.to_torch({"kernel": lstm.kernel})


# ---------------------------------------------------------------------------------------------
# Keras (JAX backend). Keras' own ops broadcast by rank, which the conftest's rank_promotion="raise"
# rejects: every Keras call runs under `keras_mode()`.


def keras_mode():
    return jax.numpy_rank_promotion("allow")


KERAS_KINDS = {  # name: (Keras layer class name, its kwargs, jrnn class)
    "simple_tanh": ("SimpleRNN", {}, jrnn.SimpleRNN),
    "simple_relu": ("SimpleRNN", dict(activation="relu"), jrnn.SimpleRNN),
    "simple_sigmoid": ("SimpleRNN", dict(activation="sigmoid"), jrnn.SimpleRNN),
    "simple_linear": ("SimpleRNN", dict(activation=None), jrnn.SimpleRNN),
    "lstm": ("LSTM", {}, jrnn.LSTM),
    "gru": ("GRU", {}, jrnn.GRU),
    "gru_reset_before": ("GRU", dict(reset_after=False), jrnn.GRU),
}
T = 5


def keras_layer(kind, use_bias=True, build=True, seed=0, **kw):
    name, layer_kw, _ = KERAS_KINDS[kind]
    with keras_mode():
        keras.utils.set_random_seed(seed)
        layer = getattr(keras.layers, name)(H, use_bias=use_bias, bias_initializer="random_normal",
                                            return_sequences=True, **layer_kw, **kw)
        if build:
            layer.build((2, T, I))
    return layer


def keras_bidirectional(kind, merge_mode="concat", seed=0, **kw):
    name, layer_kw, _ = KERAS_KINDS[kind]
    with keras_mode():
        keras.utils.set_random_seed(seed)
        layer = keras.layers.Bidirectional(
            getattr(keras.layers, name)(H, bias_initializer="random_normal", return_sequences=True,
                                        **layer_kw), merge_mode=merge_mode, **kw)
        layer.build((2, T, I))
    return layer


def held(layer):
    """The layer's variables as numpy, checked against `get_weights()` (which warns under numpy 2)."""
    values = [np.asarray(v.value) for v in layer.weights]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        legacy = layer.get_weights()
    assert len(values) == len(legacy)
    for v, w in zip(values, legacy, strict=True):
        np.testing.assert_array_equal(v, w, strict=True)
    return values


def keras_forward(layer, seed=1):
    xs = np.random.default_rng(seed).standard_normal((2, T, I)).astype(np.float32)
    with keras_mode():
        out = layer(xs)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


def check_round_trip(params, layer, fresh):
    weights = held(layer)
    exported = jrnn.to_keras(params)
    assert len(exported) == len(weights)
    for got, want in zip(exported, weights, strict=True):
        assert isinstance(got, np.ndarray)
        np.testing.assert_array_equal(got, want, strict=True)
    with keras_mode():
        fresh.set_weights(exported)
    for got, want in zip(held(fresh), weights, strict=True):
        np.testing.assert_array_equal(got, want, strict=True)
    if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)):
        for got, want in zip(keras_forward(fresh), keras_forward(layer), strict=True):
            np.testing.assert_array_equal(got, want)
    tree_equal(jrnn.from_keras(fresh), params)


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("kind", list(KERAS_KINDS))
def test_keras_layer_round_trip(kind, use_bias):
    layer = keras_layer(kind, use_bias)
    params = jrnn.from_keras(layer)
    _, layer_kw, cls = KERAS_KINDS[kind]
    assert type(params) is cls
    if cls is jrnn.SimpleRNN:
        assert params.activation == (layer_kw.get("activation", "tanh") or "linear")
    if cls is jrnn.GRU:
        assert params.reset_after == layer_kw.get("reset_after", True)
    arrays = [a for a in (params.kernel, params.recurrent_kernel, params.bias) if a is not None]
    for got, want in zip(arrays, held(layer), strict=True):
        assert isinstance(got, jax.Array)
        np.testing.assert_array_equal(np.asarray(got), want, strict=True)
    check_round_trip(params, layer, keras_layer(kind, use_bias, seed=7))


@pytest.mark.parametrize("kind", ["lstm", "gru_reset_before"])
def test_keras_cell_and_generic_rnn(kind):
    name, layer_kw, cls = KERAS_KINDS[kind]
    with keras_mode():
        cell = getattr(keras.layers, name + "Cell")(H, bias_initializer="random_normal", **layer_kw)
        cell.build((2, I))
        rnn = keras.layers.RNN(getattr(keras.layers, name + "Cell")(H, **layer_kw))
        rnn.build((2, T, I))
    params = jrnn.from_keras(cell)
    assert type(params) is cls
    check_round_trip(params, cell, rnn.cell)
    tree_equal(jrnn.from_keras(rnn), params)


def test_keras_stacked_cells():
    with keras_mode():
        keras.utils.set_random_seed(0)
        layer = keras.layers.RNN([keras.layers.LSTMCell(H), keras.layers.GRUCell(5, reset_after=False)],
                                 return_sequences=True)
        layer.build((2, T, I))
        fresh = keras.layers.RNN([keras.layers.LSTMCell(H), keras.layers.GRUCell(5, reset_after=False)],
                                 return_sequences=True)
        fresh.build((2, T, I))
    params = jrnn.from_keras(layer)
    assert isinstance(params, jrnn.Stack) and not params.residual
    assert [type(c) for c in params.layers] == [jrnn.LSTM, jrnn.GRU]
    assert params.layers[1].input_size == H and params.layers[1].hidden_size == 5
    check_round_trip(params, layer, fresh)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("kind", ["simple_relu", "lstm", "gru"])
def test_keras_bidirectional_round_trip(kind, merge_mode):
    layer = keras_bidirectional(kind, merge_mode)
    params = jrnn.from_keras(layer)
    assert isinstance(params, jrnn.Bidirectional) and params.merge == merge_mode
    # Keras orders the forward layer's weights first.
    weights = held(layer)
    for d, cell in enumerate((params.forward, params.backward)):
        assert type(cell) is KERAS_KINDS[kind][2]
        arrays = (cell.kernel, cell.recurrent_kernel, cell.bias)
        for got, want in zip(arrays, weights[3 * d:3 * d + 3], strict=True):
            np.testing.assert_array_equal(np.asarray(got), want, strict=True)
    assert not np.array_equal(np.asarray(params.forward.kernel), np.asarray(params.backward.kernel))
    for got, v in zip(jax.tree.leaves(params.forward), layer.forward_layer.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(v.value))
    check_round_trip(params, layer, keras_bidirectional(kind, merge_mode, seed=7))


def test_keras_default_merge_mode_is_concat():
    with keras_mode():
        layer = keras.layers.Bidirectional(keras.layers.GRU(H))
        layer.build((2, T, I))
    assert jrnn.from_keras(layer).merge == "concat"


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_to_keras_keeps_dtype(dtype):
    params = jrnn.GRU.init(jax.random.key(0), I, H, dtype=dtype, initializer="pytorch")
    weights = jrnn.to_keras(params)
    assert [w.dtype for w in weights] == [jnp.dtype(dtype)] * 3
    for got, want in zip(weights, jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(got, np.asarray(want))


def test_from_keras_errors():
    with pytest.raises(ValueError, match="`go_backwards=True`.*rnn_apply\\(..., reverse=True\\)"):
        jrnn.from_keras(keras_layer("lstm", go_backwards=True))
    with keras_mode():
        backwards = keras.layers.Bidirectional(keras.layers.LSTM(H, go_backwards=True),
                                               backward_layer=keras.layers.LSTM(H))
        backwards.build((2, T, I))
    with pytest.raises(ValueError, match="forward layer has `go_backwards=True`"):
        jrnn.from_keras(backwards)
    with pytest.raises(ValueError, match="Unsupported `activation` 'gelu' of the Keras SimpleRNNCell"):
        jrnn.from_keras(keras_layer("simple_tanh", activation="gelu"))
    with pytest.raises(ValueError, match="Unsupported `activation` 'relu' of the Keras LSTMCell"):
        jrnn.from_keras(keras_layer("lstm", activation="relu"))
    with pytest.raises(ValueError, match="`recurrent_activation` 'hard_sigmoid' of the Keras LSTMCell"):
        jrnn.from_keras(keras_layer("lstm", recurrent_activation="hard_sigmoid"))
    with pytest.raises(ValueError, match="Unsupported `activation` 'sigmoid' of the Keras GRUCell"):
        jrnn.from_keras(keras_layer("gru", activation="sigmoid"))
    with pytest.raises(ValueError, match="Unsupported `recurrent_activation` 'tanh' of the Keras GRUCell"):
        jrnn.from_keras(keras_layer("gru", recurrent_activation="tanh"))
    with pytest.raises(ValueError, match="`layer` \\(GRU\\) is not built"):
        jrnn.from_keras(keras_layer("gru", build=False))
    with pytest.raises(ValueError, match="`layer` \\(LSTMCell\\) is not built"):
        jrnn.from_keras(keras.layers.LSTMCell(H))
    with pytest.raises(ValueError, match="`layer` \\(ConvLSTM1D\\) is not built"):  # converted once built
        jrnn.from_keras(keras.layers.ConvLSTM1D(2, 3))
    with pytest.raises(TypeError, match="got Dense"):
        jrnn.from_keras(keras.layers.Dense(2))
    with pytest.raises(TypeError, match="got LSTM"):  # a torch module is not a Keras layer
        jrnn.from_keras(torch.nn.LSTM(I, H))


def test_to_keras_errors():
    with pytest.raises(ValueError, match="`residual=True`"):
        jrnn.to_keras(jrnn.Stack.init(jax.random.key(0), jrnn.LSTM, H, H, 2, residual=True))
    with pytest.raises(TypeError, match="`params` must be a jrnn cell.*got list"):
        jrnn.to_keras([np.zeros((I, H))])
