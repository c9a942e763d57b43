"""Composites (`Bidirectional`, `Stack`), dropout, resets and learned initial states.

Every expectation comes from an independent reference: PyTorch's multi-layer bidirectional modules
(with packed sequences and autograd), Keras' `Bidirectional` and stacked layers, or a hand-written
composition of single-cell runs. Never from jrnn's own earlier output.
"""

import functools

import jax
import jax.numpy as jnp
import keras  # noqa: E402
import numpy as np
import pytest
import torch  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import jrnn

# Compiles dominate the run time. Eager and unrolled in Python, each op is compiled once per shape for
# the whole file (most tests share B, T, I, H = 3, 6, 5, 4): much cheaper than compiling a scan where
# the loop mode is not what a test is about.
_eager = functools.partial(jrnn.rnn_apply, unroll=True)

CELLS = {"simple": jrnn.SimpleRNN, "lstm": jrnn.LSTM, "gru": jrnn.GRU}


def make(kind, I, H, seed=0, **kw):
    """Cells with every bias nonzero (`initializer="pytorch"`)."""
    return CELLS[kind].init(jax.random.key(seed), I, H, initializer="pytorch", **kw)


def rand_state(params, batch_shape, seed=1):
    """A nonzero state of any params (cell, Bidirectional, Stack) with the given batch axes."""
    leaves, tree = jax.tree.flatten(jrnn.initial_state(params, batch_shape))
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [0.5 * jax.random.normal(k, z.shape, z.dtype)
                                     for k, z in zip(keys, leaves, strict=True)])


def rand(shape, seed=2, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def assert_tree_close(actual, expected, rtol=1e-5, atol=1e-5):
    leaves_a, tree_a = jax.tree.flatten(actual)
    leaves_e, tree_e = jax.tree.flatten(expected)
    assert tree_a == tree_e
    for a, e in zip(leaves_a, leaves_e, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol)


def keras_mode():
    """Keras' own ops broadcast by rank, which the conftest's `rank_promotion="raise"` rejects."""
    return jax.numpy_rank_promotion("allow")


# ---------------------------------------------------------------------------------------------
# 1. PyTorch: 3-layer bidirectional modules, packed sequences, nonzero h0, gradients.

TORCH_MODULES = {"rnn": lambda *a, **kw: torch.nn.RNN(*a, nonlinearity="tanh", **kw),
                 "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
TORCH_UNROLL = {"rnn": 3, "lstm": 1, "gru": 1}  # T = 7: unroll 3 is two chunks and a rest


def _to_torch_layout(state, lstm):
    """jrnn Stack-of-Bidirectional state -> torch's leaves `[L*2, B, H]` (h, and c for the LSTM)."""
    per_dir = [d for layer in state for d in layer]
    if lstm:
        return [jnp.stack([s.h for s in per_dir]), jnp.stack([s.c for s in per_dir])]
    return [jnp.stack(per_dir)]


def _from_torch_layout(leaves, lstm, num_layers):
    """torch's `[L*2, B, H]` leaves -> a jrnn Stack-of-Bidirectional state."""
    def one(i):
        return jrnn.LSTMState(leaves[0][i], leaves[1][i]) if lstm else leaves[0][i]
    return tuple((one(2 * l), one(2 * l + 1)) for l in range(num_layers))


@pytest.mark.parametrize("kind", list(TORCH_MODULES))
def test_three_layer_bidirectional_packed_matches_torch_with_gradients(kind):
    B, T, I, H, L = 3, 7, 5, 4, 3
    lengths = [7, 2, 5]
    lstm = kind == "lstm"
    torch.manual_seed(0)
    module = TORCH_MODULES[kind](I, H, num_layers=L, bidirectional=True, batch_first=True)
    xs = rand((B, T, I), seed=1)
    h0 = [rand((2 * L, B, H), seed=2 + i, scale=0.5) for i in range(2 if lstm else 1)]
    w_out = rand((B, T, 2 * H), seed=5)
    w_state = [rand((2 * L, B, H), seed=6 + i) for i in range(len(h0))]

    # torch: packed (unsorted) sequences, padded back with zeros.
    h0_t = [torch.from_numpy(h.copy()).requires_grad_(True) for h in h0]
    packed = pack_padded_sequence(torch.from_numpy(xs), torch.as_tensor(lengths), batch_first=True,
                                  enforce_sorted=False)
    out_p, hn = module(packed, tuple(h0_t) if lstm else h0_t[0])
    out, _ = pad_packed_sequence(out_p, batch_first=True, total_length=T)
    hn = list(hn) if lstm else [hn]
    loss = (out * torch.from_numpy(w_out)).sum()
    for h, w in zip(hn, w_state, strict=True):
        loss = loss + (h * torch.from_numpy(w)).sum()
    loss.backward()

    # jrnn, same weights.
    params = jrnn.from_torch(module)
    assert isinstance(params, jrnn.Stack) and len(params.layers) == L
    assert all(isinstance(layer, jrnn.Bidirectional) for layer in params.layers)
    unroll = TORCH_UNROLL[kind]

    def run(params, h0):
        return jrnn.rnn_apply(params, jnp.asarray(xs), h0, unroll=unroll,
                              lengths=np.asarray(lengths, np.int32))

    def jax_loss(params, h0):
        ys, h_T = run(params, h0)
        total = jnp.sum(ys * w_out)
        for h, w in zip(_to_torch_layout(h_T, lstm), w_state, strict=True):
            total = total + jnp.sum(h * w)
        return total, (ys, h_T)

    h0_j = _from_torch_layout([jnp.asarray(h) for h in h0], lstm, L)
    (value, (ys, h_T)), (g_params, g_h0) = jax.jit(
        jax.value_and_grad(jax_loss, argnums=(0, 1), has_aux=True))(params, h0_j)
    out_np = out.detach().numpy()
    for b, n in enumerate(lengths):  # torch pads with zeros; so must jrnn
        assert np.all(out_np[b, n:] == 0) and np.all(np.asarray(ys)[b, n:] == 0)
    np.testing.assert_allclose(np.asarray(ys), out_np, rtol=1e-5, atol=1e-5)
    for got, want in zip(_to_torch_layout(h_T, lstm), hn, strict=True):
        np.testing.assert_allclose(np.asarray(got), want.detach().numpy(), rtol=1e-5, atol=1e-5)

    np.testing.assert_allclose(float(value), loss.item(), rtol=1e-5)

    # torch's gradients in jrnn's layout, by the same conversion as the weights. The SimpleRNN and LSTM
    # biases enter as one sum `b_ih + b_hh`: both torch gradients equal jrnn's, so keep b_ih's alone
    # (a zero `bias_hh` makes from_torch take `bias_ih` as it is).
    grads = {name: p.grad.detach().clone() for name, p in module.named_parameters()}
    if kind != "gru":
        for name in [n for n in grads if n.startswith("bias_hh")]:
            ih = grads[name.replace("bias_hh", "bias_ih")]
            np.testing.assert_allclose(ih.numpy(), grads[name].numpy(), rtol=1e-6, atol=1e-6)
            grads[name] = torch.zeros_like(grads[name])
    want = jrnn.from_torch(grads)
    scale = max(float(np.abs(np.asarray(leaf)).max()) for leaf in jax.tree.leaves(want))
    assert_tree_close(g_params, want, rtol=1e-4, atol=1e-5 * scale)
    for got, h in zip(_to_torch_layout(g_h0, lstm), h0_t, strict=True):
        g = h.grad.numpy()
        np.testing.assert_allclose(np.asarray(got), g, rtol=1e-4, atol=1e-5 * np.abs(g).max())


# ---------------------------------------------------------------------------------------------
# 2. Keras: Bidirectional in every merge mode, and stacked layers.

KERAS_NAMES = {"simple": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}
NO_INIT = dict(kernel_initializer="zeros", recurrent_initializer="zeros", bias_initializer="zeros")


def _set_random_weights(layer, seed):
    """Overwrites a built Keras layer's variables with random values (set_weights, layer.weights order)."""
    rng = np.random.default_rng(seed)
    weights = [(0.5 * rng.standard_normal(tuple(v.shape))).astype(np.float32) for v in layer.weights]
    with keras_mode():
        layer.set_weights(weights)
    return weights


@pytest.mark.parametrize("merge", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("kind", list(KERAS_NAMES))
def test_bidirectional_matches_keras(kind, merge):
    B, T, I, H = 3, 6, 5, 4
    with keras_mode():
        inner = getattr(keras.layers, KERAS_NAMES[kind])(H, return_sequences=True, return_state=True,
                                                         **NO_INIT)
        layer = keras.layers.Bidirectional(inner, merge_mode=merge)
        layer.build((B, T, I))
    weights = _set_random_weights(layer, seed=3)
    params = jrnn.from_keras(layer)
    assert isinstance(params, jrnn.Bidirectional) and params.merge == merge
    # The arrays are Keras' own variables (forward first), read through `.value`.
    for got, v in zip(jax.tree.leaves(params), layer.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(v.value))
    np.testing.assert_array_equal(np.asarray(params.backward.kernel), weights[len(weights) // 2])

    xs = rand((B, T, I), seed=4)
    h0 = rand_state(params, (B,), seed=5)
    with keras_mode():
        outs = layer(xs, initial_state=[np.asarray(s) for s in jax.tree.leaves(h0)])
    outs = [np.asarray(o) for o in outs]
    ys, h_T = _eager(params, jnp.asarray(xs), h0)
    if merge is None:
        assert isinstance(ys, tuple) and len(ys) == 2
        ys_k, states_k = outs[:2], outs[2:]
        for got, want in zip(ys, ys_k, strict=True):
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    else:
        ys_k, states_k = outs[0], outs[1:]
        assert ys.shape == ys_k.shape == (B, T, 2 * H if merge == "concat" else H)
        np.testing.assert_allclose(np.asarray(ys), ys_k, rtol=1e-5, atol=1e-5)
    leaves = jax.tree.leaves(h_T)  # (forward state, backward state), Keras' order
    assert len(leaves) == len(states_k)
    for got, want in zip(leaves, states_k, strict=True):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kinds", [("lstm", "lstm"), ("gru", "simple")])
def test_stack_matches_keras_sequential(kinds):
    B, T, I, H1, H2 = 3, 6, 5, 4, 3
    with keras_mode():
        layers = [getattr(keras.layers, KERAS_NAMES[k])(h, return_sequences=True, **NO_INIT)
                  for k, h in zip(kinds, (H1, H2), strict=True)]
        model = keras.Sequential([keras.Input((T, I), batch_size=B), *layers])
    for i, layer in enumerate(layers):
        _set_random_weights(layer, seed=10 + i)
    xs = rand((B, T, I), seed=4)
    with keras_mode():
        ys_k = np.asarray(model(xs))
    stack = jrnn.Stack(tuple(jrnn.from_keras(layer) for layer in layers))
    ys, h_T = _eager(stack, jnp.asarray(xs))
    assert ys.shape == ys_k.shape == (B, T, H2)
    np.testing.assert_allclose(np.asarray(ys), ys_k, rtol=1e-5, atol=1e-5)
    last = jax.tree.leaves(h_T[-1])[0]  # h of the last layer: its output at the last step
    np.testing.assert_allclose(np.asarray(last), ys_k[:, -1], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# 3. Dropout.


def _identity_rnn(n, *, kernel=True, recurrent=False):
    """A linear SimpleRNN without bias whose kernel / recurrent kernel are the identity or zero."""
    eye, zero = jnp.eye(n, dtype=jnp.float32), jnp.zeros((n, n), jnp.float32)
    return jrnn.SimpleRNN(eye if kernel else zero, eye if recurrent else zero, None, "linear")


def _assert_rate(values, p, scale):
    """`values` are dropout masks: each 0 or `scale`, the zeros a fraction p within 3 sigma."""
    values = np.asarray(values).ravel()
    zero = values == 0
    np.testing.assert_allclose(values[~zero], scale, rtol=1e-6)
    sigma = np.sqrt(p * (1 - p) / values.size)
    assert abs(zero.mean() - p) < 3 * sigma, (zero.mean(), p, sigma)


def test_no_key_means_no_dropout():
    stack = jrnn.Stack.init(jax.random.key(0), jrnn.LSTM, 5, 4, 2, initializer="pytorch")
    xs = jnp.asarray(rand((3, 6, 5)))
    ys0, h0 = _eager(stack, xs)
    ys1, h1 = _eager(stack, xs, dropout=0.5, recurrent_dropout=0.5, layer_dropout=0.5)
    assert_tree_close((ys1, h1), (ys0, h0), rtol=0, atol=0)


def test_same_key_same_output_different_key_different():
    stack = jrnn.Stack.init(jax.random.key(0), jrnn.GRU, 5, 4, 2, bidirectional=True,
                            initializer="pytorch")
    xs = jnp.asarray(rand((3, 6, 5)))
    ys_off, _ = _eager(stack, xs)
    for rates in [dict(dropout=0.3), dict(recurrent_dropout=0.3), dict(layer_dropout=0.3),
                  dict(dropout=0.2, recurrent_dropout=0.2, layer_dropout=0.2)]:
        a = _eager(stack, xs, key=jax.random.key(1), **rates)
        b = _eager(stack, xs, key=jax.random.key(1), **rates)
        c = _eager(stack, xs, key=jax.random.key(2), **rates)
        assert_tree_close(a, b, rtol=0, atol=0)
        assert not np.allclose(np.asarray(a[0]), np.asarray(c[0])), rates
        assert not np.allclose(np.asarray(a[0]), np.asarray(ys_off)), rates
    # Legacy uint32 keys work too.
    legacy = _eager(stack, xs, key=jax.random.PRNGKey(1), dropout=0.3)
    assert np.all(np.isfinite(np.asarray(legacy[0])))


def test_input_dropout_mask_is_one_per_sequence():
    """No recurrence, no bias, the same x at every step: a per-sequence mask gives constant outputs."""
    B, T, I, H = 8, 6, 5, 4
    cell = make("simple", I, H)
    cell = jrnn.SimpleRNN(cell.kernel, jnp.zeros((H, H), jnp.float32), None, "tanh")
    xs = jnp.broadcast_to(jnp.asarray(rand((I,), seed=3)), (B, T, I))
    ys, _ = _eager(cell, xs, key=jax.random.key(0), dropout=0.5)
    ys = np.asarray(ys)
    for t in range(T):
        np.testing.assert_array_equal(ys[:, t], ys[:, 0])
    assert len({tuple(row) for row in ys[:, 0]}) > 1  # rows draw their own masks
    full, _ = _eager(cell, xs)
    assert not np.allclose(ys, np.asarray(full))


def test_input_dropout_rate_and_scale():
    B, T, n, p = 512, 3, 16, 0.3
    ys, _ = _eager(_identity_rnn(n), jnp.ones((B, T, n), jnp.float32), key=jax.random.key(7), dropout=p)
    ys = np.asarray(ys)  # = the input mask itself
    _assert_rate(ys[:, 0], p, 1 / (1 - p))
    for t in range(1, T):
        np.testing.assert_array_equal(ys[:, t], ys[:, 0])


def test_recurrent_dropout_mask_is_one_per_sequence():
    """Identity recurrence, zero kernel, h0 = 1: the outputs are `m ** (t + 1)` for one mask m per
    sequence (a fresh mask per step would zero a fraction 1 - (1 - p) ** (t + 1))."""
    B, T, n, p = 256, 4, 16, 0.25
    cell = _identity_rnn(n, kernel=False, recurrent=True)
    ys, _ = _eager(cell, jnp.asarray(rand((B, T, n))), jnp.ones((n,), jnp.float32),
                   key=jax.random.key(3), recurrent_dropout=p)
    ys = np.asarray(ys)
    _assert_rate(ys[:, 0], p, 1 / (1 - p))
    for t in range(T):
        np.testing.assert_array_equal(ys[:, t] == 0, ys[:, 0] == 0)
        _assert_rate(ys[:, t], p, (1 / (1 - p)) ** (t + 1))


def test_layer_dropout_is_fresh_per_element_and_spares_the_last_layer():
    B, T, n, p = 64, 8, 16, 0.4
    stack = jrnn.Stack((_identity_rnn(n), _identity_rnn(n)))
    xs = jnp.ones((B, T, n), jnp.float32)
    ys, _ = _eager(stack, xs, key=jax.random.key(5), layer_dropout=p)
    ys = np.asarray(ys)  # = the mask between the two layers
    _assert_rate(ys, p, 1 / (1 - p))
    changed = np.mean(ys[:, 1:] != ys[:, :-1])  # fresh per step: 2 p (1 - p) of the entries change
    assert abs(changed - 2 * p * (1 - p)) < 0.05
    one, _ = _eager(jrnn.Stack((_identity_rnn(n),)), xs, key=jax.random.key(5), layer_dropout=p)
    np.testing.assert_array_equal(np.asarray(one), np.asarray(xs))


def test_dropout_gradients_are_finite_on_a_stack():
    stack = jrnn.Stack.init(jax.random.key(0), jrnn.LSTM, 5, 4, 2, bidirectional=True, merge="sum",
                            initializer="pytorch")
    xs = jnp.asarray(rand((3, 6, 5)))

    def loss(params, key):
        ys, h_T = jrnn.rnn_apply(params, xs, key=key, dropout=0.3, recurrent_dropout=0.3,
                                 layer_dropout=0.3, lengths=np.array([6, 2, 4], np.int32), unroll=True)
        return jnp.sum(ys**2) + sum(jnp.sum(h) for h in jax.tree.leaves(h_T))

    grads = jax.grad(loss)(stack, jax.random.key(1))
    for g in jax.tree.leaves(grads):
        assert np.all(np.isfinite(np.asarray(g)))
    assert all(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads))


# ---------------------------------------------------------------------------------------------
# 4. The tutorial model: two SimpleRNN layers of 64 units on [4, 80, 100].


def test_tutorial_two_layer_simple_rnn():
    k1, k2, kx, key = jax.random.split(jax.random.key(0), 4)
    stack = jrnn.Stack((jrnn.SimpleRNN.init(k1, 100, 64), jrnn.SimpleRNN.init(k2, 64, 64)))
    xs = jax.random.normal(kx, (4, 80, 100))
    ys, states = jrnn.rnn_apply(stack, xs, key=key, dropout=0.5, unroll=True)
    assert ys.shape == (4, 80, 64) and len(states) == 2
    assert all(s.shape == (4, 64) for s in states)
    assert np.all(np.isfinite(np.asarray(ys)))
    np.testing.assert_array_equal(np.asarray(states[1]), np.asarray(ys[:, -1]))

    ys_eval, states_eval = jrnn.rnn_apply(stack, xs, key=None, dropout=0.5, unroll=True)  # inference
    y1, s1 = _eager(stack.layers[0], xs)
    y2, s2 = _eager(stack.layers[1], y1)
    np.testing.assert_allclose(np.asarray(ys_eval), np.asarray(y2), rtol=1e-5, atol=1e-5)
    assert_tree_close(states_eval, (s1, s2))
    assert not np.allclose(np.asarray(ys), np.asarray(ys_eval))


# ---------------------------------------------------------------------------------------------
# 5. Resets: the same as running every episode on its own: the first one run from h0, the others from
#    zeros (the default `reset_state`).

RESET_B, RESET_T = 4, 7
RESET_AT = [[0, 3], [2, 5], [4], [1, 2, 5, 6]]  # a reset at 0 is a no-op
RESET_LENGTHS = [7, 6, 2, 5]  # row 2: its reset is past the end; row 3: resets at and past the end


def _resets():
    r = np.zeros((RESET_B, RESET_T), bool)
    for b, ts in enumerate(RESET_AT):
        r[b, ts] = True
    return r


def _row(state, b):
    """Row b of a state whose leaves are `[B, H]` (leaves without a batch axis are shared)."""
    return jax.tree.map(lambda a: a[b] if a.ndim == 2 else a, state)


def _reference(params, xs, h0, lengths, reverse, finals, reset_state=None):
    """Each row split at its resets (and cut at its length), each piece run alone: the piece run first
    (the first in time, or the last when `reverse`) from h0 unless a reset flag is on its first step, the
    others from `reset_state` (None: zeros)."""
    ys = np.zeros((*xs.shape[:2], params.output_size), np.float32)
    out_states = []
    zeros = jrnn.initial_state(params)
    for b in range(xs.shape[0]):
        L = RESET_T if lengths is None else lengths[b]
        starts = [0] + [t for t in RESET_AT[b] if 0 < t < L] + [L]
        h0_b = _row(h0, b)
        fresh = zeros if reset_state is None else _row(reset_state, b)
        pieces = []
        n = len(starts) - 1
        for i, (s, e) in enumerate(zip(starts[:-1], starts[1:], strict=True)):
            first_run = i == (n - 1 if reverse else 0) and not (not reverse and 0 in RESET_AT[b])
            start = h0_b if first_run else fresh
            y, h = jrnn.rnn_apply(params, xs[b, s:e], start, reverse=reverse, unroll=True)
            ys[b, s:e] = np.asarray(y)
            pieces.append(h)
        out_states.append(finals(pieces[0], pieces[-1]) if pieces else h0_b)
    return ys, jax.tree.map(lambda *a: jnp.stack(a), *out_states)


@functools.cache
def _reset_case(kind):
    """Params, inputs, h0 and the scanned runs (unroll 1 and 3, i.e. a plain scan and, with T = 7, two
    chunks and a rest; both directions, with and without lengths) of one cell kind: one compile per
    kind, shared by its four tests."""
    params = make(kind, 3, 4)
    xs = rand((RESET_B, RESET_T, 3), seed=3)
    h0 = rand_state(params, (RESET_B,))

    @jax.jit
    def scanned(params, xs, h0, lengths, resets):
        return {(reverse, with_lengths): tuple(
            jrnn.rnn_apply(params, xs, h0, unroll=unroll, reverse=reverse, resets=resets,
                           lengths=lengths if with_lengths else None) for unroll in (1, 3))
            for reverse in (False, True) for with_lengths in (False, True)}

    lengths = jnp.asarray(RESET_LENGTHS, jnp.int32)
    return params, xs, h0, scanned(params, jnp.asarray(xs), h0, lengths, jnp.asarray(_resets()))


@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", list(CELLS))
def test_resets_equal_separate_episodes(kind, reverse, with_lengths):
    params, xs, h0, scanned = _reset_case(kind)
    lengths = np.asarray(RESET_LENGTHS, np.int32) if with_lengths else None
    want = _reference(params, xs, h0, lengths, reverse,
                      lambda first, last: first if reverse else last)
    unrolled = _eager(params, jnp.asarray(xs), h0, reverse=reverse, lengths=lengths,
                      resets=jnp.asarray(_resets()))
    for got in (*scanned[reverse, with_lengths], unrolled):
        assert_tree_close(got, want, atol=1e-5)


@pytest.mark.parametrize("reverse", [False, True])
def test_resets_with_learned_initial_state(reverse):
    I, H = 3, 4
    params = make("lstm", I, H)
    h0 = rand_state(params, ())  # LSTMState of two [H]: broadcast over the batch, and the reset target
    xs = rand((RESET_B, RESET_T, I), seed=3)
    lengths = np.asarray(RESET_LENGTHS, np.int32)
    want = _reference(params, xs, h0, lengths, reverse, lambda first, last: first if reverse else last,
                      reset_state=h0)
    got = _eager(params, jnp.asarray(xs), h0, reverse=reverse, lengths=lengths,
                 resets=jnp.asarray(_resets()), reset_state=h0)
    assert_tree_close(got, want, atol=1e-5)
    # Time-major resets are [T, B]; two batch axes [2, 2, T] give the same as [4, T].
    ys_tm, h_tm = _eager(params, jnp.asarray(xs.swapaxes(0, 1)), h0, reverse=reverse, lengths=lengths,
                         resets=jnp.asarray(_resets().T), time_major=True, reset_state=h0)
    assert_tree_close((jnp.swapaxes(ys_tm, 0, 1), h_tm), want, atol=1e-5)
    ys_2d, h_2d = _eager(params, jnp.asarray(xs.reshape(2, 2, RESET_T, I)), h0, reverse=reverse,
                         lengths=lengths.reshape(2, 2), resets=jnp.asarray(_resets().reshape(2, 2, RESET_T)),
                         reset_state=h0)
    assert_tree_close((ys_2d.reshape(want[0].shape), jax.tree.map(lambda a: a.reshape(RESET_B, H), h_2d)),
                      want, atol=1e-5)


def test_resets_through_a_stack_of_bidirectional_and_cell():
    I, H = 3, 4
    k1, k2 = jax.random.split(jax.random.key(4))
    stack = jrnn.Stack((jrnn.Bidirectional.init(k1, jrnn.GRU, I, H, initializer="pytorch"),
                        jrnn.LSTM.init(k2, 2 * H, H, initializer="pytorch")))
    xs = rand((RESET_B, RESET_T, I), seed=3)
    h0 = rand_state(stack, (RESET_B,))
    lengths = np.asarray(RESET_LENGTHS, np.int32)

    def finals(first, last):  # the forward GRU and the LSTM end in the last episode, the backward GRU
        return ((last[0][0], first[0][1]), last[1])  # in the first

    want = _reference(stack, xs, h0, lengths, False, finals, reset_state=h0)  # episodes start from h0
    resets = jnp.asarray(_resets())

    @jax.jit
    def scanned(stack, xs, h0, lengths, resets):  # a plain scan, and chunks of 3 (T = 7: 2 and a rest)
        return [jrnn.rnn_apply(stack, xs, h0, unroll=u, lengths=lengths, resets=resets, reset_state=h0)
                for u in (1, 3)]

    for got in (*scanned(stack, jnp.asarray(xs), h0, lengths, resets),
                _eager(stack, jnp.asarray(xs), h0, lengths=lengths, resets=resets, reset_state=h0)):
        assert_tree_close(got, want, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# 6. Learned (broadcast) initial state.


@pytest.mark.parametrize("kind", list(CELLS))
def test_learned_initial_state_broadcasts_and_gets_gradients(kind):
    B, T, I, H = 3, 6, 5, 4
    params = make(kind, I, H)
    xs = jnp.asarray(rand((B, T, I)))
    h_small = rand_state(params, ())  # [H] (LSTMState of two [H])
    h_full = jax.tree.map(lambda a: jnp.broadcast_to(a, (B, H)), h_small)
    assert_tree_close(_eager(params, xs, h_small), _eager(params, xs, h_full), rtol=0, atol=0)

    w_out, w_state = rand((B, T, H), seed=7), rand((B, H), seed=8)

    def loss(h0):
        ys, h_T = _eager(params, xs, h0)
        return jnp.sum(ys * w_out) + sum(jnp.sum(h * w_state) for h in jax.tree.leaves(h_T))

    g_small = jax.grad(loss)(h_small)
    g_full = jax.grad(loss)(h_full)
    for gs, gf in zip(jax.tree.leaves(g_small), jax.tree.leaves(g_full), strict=True):
        assert gs.shape == (H,) and gf.shape == (B, H)
        assert np.any(np.asarray(gs) != 0)
        np.testing.assert_allclose(np.asarray(gs), np.asarray(gf).sum(0), rtol=1e-5, atol=1e-6)


def test_learned_initial_state_in_composites_and_partial_batch_axes():
    B1, B2, T, I, H = 2, 3, 6, 5, 4
    k1, k2 = jax.random.split(jax.random.key(0))
    stack = jrnn.Stack((jrnn.Bidirectional.init(k1, jrnn.GRU, I, H, merge="sum", initializer="pytorch"),
                        jrnn.LSTM.init(k2, H, H, initializer="pytorch")))
    xs = jnp.asarray(rand((B1, B2, T, I)))
    h_suffix = rand_state(stack, (B2,))  # leaves [B2, H]: broadcast over B1
    h_full = jax.tree.map(lambda a: jnp.broadcast_to(a, (B1, B2, H)), h_suffix)
    assert_tree_close(_eager(stack, xs, h_suffix), _eager(stack, xs, h_full), rtol=0, atol=0)
    h_vec = rand_state(stack, ())  # leaves [H]
    h_vec_full = jax.tree.map(lambda a: jnp.broadcast_to(a, (B1, B2, H)), h_vec)
    assert_tree_close(_eager(stack, xs, h_vec), _eager(stack, xs, h_vec_full), rtol=0, atol=0)
    # None parts are zeros.
    partial = ((None, h_vec[0][1]), None)
    explicit = ((jnp.zeros((H,)), h_vec[0][1]), jrnn.LSTMState(jnp.zeros((H,)), jnp.zeros((H,))))
    assert_tree_close(_eager(stack, xs, partial), _eager(stack, xs, explicit), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# 7. Stacks: residual connections, cell_apply, errors.


def _manual_stack(layers, xs, h0, residual, lengths=None):
    x, states = xs, []
    for layer, h in zip(layers, h0, strict=True):
        y, h_T = _eager(layer, x, h, lengths=lengths)
        if residual and layer.input_size == layer.output_size:
            y = y + x
            if lengths is not None:
                valid = np.arange(x.shape[1])[None, :, None] < np.asarray(lengths)[:, None, None]
                y = jnp.where(valid, y, 0.0)
        x = y
        states.append(h_T)
    return x, tuple(states)


@pytest.mark.parametrize("case", ["gru_equal", "lstm_first_wider", "bidir_ave"])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_residual_stack_matches_manual_composition(case, with_lengths):
    key = jax.random.key(3)
    B, T = 3, 6
    if case == "gru_equal":
        stack = jrnn.Stack.init(key, jrnn.GRU, 4, 4, 3, residual=True, initializer="pytorch")
    elif case == "lstm_first_wider":  # layer 0 (5 -> 4) has no skip connection, the others have
        stack = jrnn.Stack.init(key, jrnn.LSTM, 5, 4, 3, residual=True, initializer="pytorch")
    else:
        stack = jrnn.Stack.init(key, jrnn.SimpleRNN, 4, 4, 2, bidirectional=True, merge="ave",
                                residual=True, initializer="pytorch")
    xs = jnp.asarray(rand((B, T, stack.input_size)))
    h0 = rand_state(stack, (B,))
    lengths = np.asarray([6, 2, 3], np.int32) if with_lengths else None
    got = _eager(stack, xs, h0, lengths=lengths)
    want = _manual_stack(stack.layers, xs, h0, True, lengths)
    assert_tree_close(got, want, atol=1e-5)
    plain = _manual_stack(stack.layers, xs, h0, False, lengths)
    assert not np.allclose(np.asarray(got[0]), np.asarray(plain[0]))  # the skip connections do something


def test_concat_of_unequal_directions_feeds_the_next_layer():
    """`merge="concat"` allows directions of different widths (only the other merges need equal ones):
    the output is `H_forward + H_backward` wide, and the next layer of a Stack takes that many features."""
    fwd, bwd = make("gru", 5, 4, seed=1), make("gru", 5, 3, seed=2)
    bidir = jrnn.Bidirectional(fwd, bwd, "concat")
    xs = jnp.asarray(rand((3, 6, 5)))
    yf, hf = _eager(fwd, xs)
    yb, hb = _eager(bwd, xs, reverse=True)
    ys, h_T = _eager(bidir, xs)
    assert_tree_close((ys, h_T), (jnp.concatenate([yf, yb], axis=-1), (hf, hb)), rtol=1e-6, atol=1e-6)
    assert bidir.output_size == ys.shape[-1] == 7
    top = make("lstm", 7, 4, seed=3)
    y2, h2 = _eager(top, ys)
    assert_tree_close(_eager(jrnn.Stack((bidir, top)), xs), (y2, ((hf, hb), h2)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("residual", [False, True])
def test_cell_apply_on_stack_steps_each_layer(residual):
    layers = (make("lstm", 5, 4, seed=1), make("gru", 4, 4, seed=2), make("simple", 4, 4, seed=3))
    stack = jrnn.Stack(layers, residual)
    x = jnp.asarray(rand((3, 5)))
    h = rand_state(stack, (3,))
    out, h1 = jrnn.cell_apply(stack, x, h)
    inp, want_states = x, []
    for layer, hi in zip(layers, h, strict=True):
        o, hi = jrnn.cell_apply(layer, inp, hi)
        if residual and layer.input_size == layer.output_size:
            o = o + inp
        inp = o
        want_states.append(hi)
    assert_tree_close((out, h1), (inp, tuple(want_states)), rtol=1e-6, atol=1e-6)
    # One step of cell_apply equals rnn_apply over a sequence of length 1.
    ys, h_T = _eager(stack, x[:, None], h)
    assert_tree_close((ys[:, 0], h_T), (out, h1), rtol=1e-6, atol=1e-6)


def test_errors():
    key = jax.random.key(0)
    lstm = make("lstm", 3, 4)
    xs = jnp.ones((2, 5, 3), jnp.float32)
    # Composites are checked where they are built, naming the part.
    with pytest.raises(ValueError,
                       match=r"`Stack.layers\[1\]` takes 5 input features but `Stack.layers\[0\]` gives 4"):
        jrnn.Stack((lstm, make("gru", 5, 4)))
    bidir_none = jrnn.Bidirectional.init(key, jrnn.GRU, 3, 4, merge=None)
    with pytest.raises(ValueError, match=r"Unknown `Stack\.layers\[0\]\.merge` None"):
        jrnn.Stack((bidir_none, make("gru", 8, 4)))
    with pytest.raises(TypeError, match=r"`Stack.layers\[1\]` must be a Cell or a Bidirectional"):
        jrnn.Stack((lstm, {"kernel": 1}))
    with pytest.raises(TypeError, match=r"`Bidirectional.backward` must be a Cell"):
        jrnn.Bidirectional(lstm, jrnn.Stack((lstm,)))
    with pytest.raises(ValueError, match=r"Unknown `merge` 'max'"):
        jrnn.Bidirectional(lstm, lstm, "max")
    # JAX's own rebuilding of the pytree does not re-check (leaves may be anything there).
    rebuilt = jax.tree.map(lambda a: None, jrnn.Stack((lstm, jrnn.LSTM.init(key, 4, 4))))
    assert rebuilt.layers[0].kernel is None
    with pytest.raises(ValueError, match="Unknown `merge` None"):
        jrnn.Stack.init(key, jrnn.GRU, 3, 4, 2, bidirectional=True, merge=None)
    with pytest.raises(TypeError, match="Bidirectional"):
        jrnn.cell_apply(jrnn.Bidirectional.init(key, jrnn.LSTM, 3, 4), xs[:, 0], None)
    with pytest.raises(TypeError, match="Bidirectional"):
        jrnn.cell_apply(jrnn.Stack((jrnn.Bidirectional.init(key, jrnn.LSTM, 3, 4),)), xs[:, 0], None)

    stack = jrnn.Stack((lstm, make("simple", 4, 4)))
    for bad in [jnp.zeros((2, 4)), (jnp.zeros((2, 4)),), (None, None, None),
                jrnn.LSTMState(jnp.zeros((2, 4)), jnp.zeros((2, 4))),
                (None, jrnn.LSTMState(jnp.zeros((2, 4)), jnp.zeros((2, 4)))),
                (jnp.zeros((2, 4)), None)]:
        with pytest.raises(TypeError):
            jrnn.rnn_apply(stack, xs, bad)
    with pytest.raises(ValueError, match="must have shape"):
        jrnn.rnn_apply(stack, xs, (None, jnp.zeros((3, 4))))

    for name in ("dropout", "recurrent_dropout", "layer_dropout"):
        for rate in (1.5, -0.1):
            with pytest.raises(ValueError, match=rf"`{name}` must be a float in \[0, 1\]; got {rate}"):
                jrnn.rnn_apply(stack, xs, key=key, **{name: rate})
        with pytest.raises(ValueError, match=rf"`{name}` must be a float in \[0, 1\]"):
            jrnn.rnn_apply(stack, xs, **{name: 1.5})  # checked without a key too

    with pytest.raises(TypeError, match="`resets` must be a bool array"):
        jrnn.rnn_apply(stack, xs, resets=np.zeros((2, 5), np.int32))
    with pytest.raises(TypeError, match="`resets` must be a bool array"):
        jrnn.rnn_apply(stack, xs, resets=np.zeros((2, 5), np.float32))
    for shape in [(5, 2), (2, 4), (2,), (2, 5, 1)]:
        with pytest.raises(ValueError, match="`resets` must have shape"):
            jrnn.rnn_apply(stack, xs, resets=np.zeros(shape, bool))
    with pytest.raises(ValueError, match="`resets` must have shape"):  # time-major wants [T, B]
        jrnn.rnn_apply(stack, jnp.swapaxes(xs, 0, 1), time_major=True, resets=np.zeros((2, 5), bool))


def test_reset_state_restores_zeros_while_h0_is_carried():
    """Truncated BPTT: `h0` is the carried state, `reset_state` the fresh one that episodes start from."""
    p = jrnn.LSTM.init(jax.random.key(0), 3, 4, initializer="pytorch")
    xs = jax.random.normal(jax.random.key(1), (2, 6, 3))
    carried = jrnn.LSTMState(jnp.ones((2, 4)), -jnp.ones((2, 4)))
    resets = jnp.zeros((2, 6), bool).at[:, 2].set(True)
    zeros = jrnn.initial_state(p)  # [H] parts, broadcast over the batch
    for unroll in (1, True):
        ys, _ = jrnn.rnn_apply(p, xs, carried, resets=resets, reset_state=zeros, unroll=unroll)
        alone, _ = jrnn.rnn_apply(p, xs[:, 2:])  # the episode from step 2, from zeros
        np.testing.assert_allclose(ys[:, 2:], alone, rtol=1e-5, atol=1e-6)
        head, _ = jrnn.rnn_apply(p, xs[:, :2], carried)
        np.testing.assert_allclose(ys[:, :2], head, rtol=1e-5, atol=1e-6)


def _gated(yf, yb):
    """A merge function (Flax's `merge_fn`) of width 2H + 1 from two [..., H]."""
    return jnp.concatenate([yf * jax.nn.sigmoid(yb), yf - yb, yb[..., :1]], axis=-1)


def test_merge_function_of_the_two_directions_inside_a_stack(tmp_path):
    """`merge=fn` gives fn(forward outputs, backward outputs), each direction a Python loop over
    `cell_apply`; a Stack reads the next layer's input width off the function."""
    from reference import apply

    k0, k1, k2 = jax.random.split(jax.random.key(0), 3)
    bi = jrnn.Bidirectional(jrnn.GRU.init(k0, 3, 4), jrnn.LSTM.init(k1, 3, 4), merge=_gated)
    assert bi.output_size == 9
    stack = jrnn.Stack((bi, jrnn.SimpleRNN.init(k2, 9, 5)))
    xs, lengths = jnp.asarray(rand((2, 6, 3))), np.array([6, 2])
    ys, (h_bi, h_2) = jax.jit(jrnn.rnn_apply)(stack, xs, lengths=lengths)

    yf, hf = apply(bi.forward, xs, lengths=lengths)
    yb, hb = apply(bi.backward, xs, reverse=True, lengths=lengths)
    want_2, want_h2 = apply(stack.layers[1], _gated(yf, yb), lengths=lengths)
    for got, want in zip(jax.tree.leaves((ys, h_bi, h_2)), jax.tree.leaves((want_2, (hf, hb), want_h2)),
                         strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    with pytest.raises(TypeError, match=r"`merge` must map two arrays \[\.\.\., F\] to one array"):
        jrnn.Bidirectional(bi.forward, bi.backward, merge=lambda f, b: (f, b))
    with pytest.raises(TypeError, match=r"Cannot save `params\.layers\[0\]\.merge`: a static setting"):
        jrnn.save(tmp_path / "fn.ckpt", stack)
