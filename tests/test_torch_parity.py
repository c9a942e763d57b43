"""Parity with PyTorch: jrnn's cells against nn.RNN / nn.LSTM / nn.GRU and nn.*Cell.

Both sides get the same weights (torch's, converted to jrnn's Keras layout), inputs and initial
state; outputs, final states and gradients must agree to float32 round-off. Padded batches are
compared with torch's packed sequences, `reverse=True` with the backward half of a bidirectional layer.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import jrnn

KINDS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
SIZES = [(3, 11, 7, 13), (1, 1, 1, 1), (1, 4, 3, 1), (2, 1, 1, 3)]  # B, T, I, H
RTOL = ATOL = 1e-5

# One jitted entry point for the whole file: compiles are the cost, and the cache is keyed on shapes.
_apply = jax.jit(jrnn.rnn_apply, static_argnames=("unroll", "reverse", "time_major"))


# ---------------------------------------------------------------------------------------------
# Test-local conversion between torch modules and jrnn params.


def _gru_order(a):
    """torch's GRU blocks `r, z, n` (along axis 0) -> Keras' `z, r, h`."""
    r, z, n = np.split(a, 3, axis=0)
    return np.concatenate([z, r, n], axis=0)


def _to_keras(kind, w_ih, w_hh, b_ih, b_hh, *, sum_bias=True):
    """torch-layout arrays (weights, or their gradients) -> `(kernel, recurrent_kernel, bias)`.

    LSTM and SimpleRNN have one bias, `b_ih + b_hh` (for gradients, `sum_bias=False` gives the
    gradient of either, which is the same); the GRU keeps both as rows 0 and 1.
    """
    order = _gru_order if kind == "gru" else (lambda a: a)
    kernel, recurrent = order(w_ih).T, order(w_hh).T
    if b_ih is None:
        bias = None
    elif kind == "gru":
        bias = np.stack([order(b_ih), order(b_hh)])
    else:
        bias = b_ih + b_hh if sum_bias else b_ih
    return kernel, recurrent, bias


def _torch_arrays(module, suffix, attr=None):
    """`(w_ih, w_hh, b_ih, b_hh)` of a torch module as numpy (`attr="grad"` for their gradients)."""
    out = []
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        p = getattr(module, name + suffix, None)
        if p is not None and attr is not None:
            p = getattr(p, attr)
        out.append(None if p is None else p.detach().numpy().copy())
    return out


def _params(kind, module, suffix=""):
    """jrnn params with the weights of a torch layer (`suffix="_l0"`, `"_l0_reverse"`) or cell (`""`)."""
    kernel, recurrent, bias = (None if a is None else jnp.asarray(a)
                               for a in _to_keras(kind, *_torch_arrays(module, suffix)))
    if kind.startswith("rnn"):
        return jrnn.SimpleRNN(kernel, recurrent, bias, kind[4:])
    if kind == "lstm":
        return jrnn.LSTM(kernel, recurrent, bias)
    return jrnn.GRU(kernel, recurrent, bias, True)


def _torch_layer(kind, I, H, *, bias=True, bidirectional=False, seed=0):
    torch.manual_seed(seed)
    kw = dict(bias=bias, batch_first=True, bidirectional=bidirectional)
    if kind.startswith("rnn"):
        return torch.nn.RNN(I, H, nonlinearity=kind[4:], **kw)
    return {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](I, H, **kw)


def _torch_cell(kind, I, H, *, bias=True, seed=0):
    torch.manual_seed(seed)
    if kind.startswith("rnn"):
        return torch.nn.RNNCell(I, H, bias=bias, nonlinearity=kind[4:])
    return {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[kind](I, H, bias=bias)


def _inputs(kind, B, T, I, H, *, dirs=1, seed=1):
    """`xs [B, T, I]` and the initial state as a list of torch-layout arrays `[dirs, B, H]` (h, c)."""
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((B, T, I)).astype(np.float32)
    states = [(0.5 * rng.standard_normal((dirs, B, H))).astype(np.float32)
              for _ in range(2 if kind == "lstm" else 1)]
    return xs, states


def _jrnn_state(states, d):
    """Direction `d` of a torch-layout initial state, as a jrnn state."""
    return jrnn.LSTMState(*(s[d] for s in states)) if len(states) == 2 else states[0][d]


def _leaves(state):
    """The arrays of a state: `[h, c]` for an LSTM (jrnn's LSTMState or torch's tuple), else `[h]`."""
    return list(state) if isinstance(state, tuple) else [state]


def _torch_run(module, xs, states, lengths=None):
    """Runs a torch layer on `xs [B, T, I]` (packed when `lengths` is given); `states` are tensors."""
    x = torch.from_numpy(xs)
    if lengths is not None:
        x = pack_padded_sequence(x, torch.as_tensor(np.asarray(lengths), dtype=torch.int64),
                                 batch_first=True, enforce_sorted=False)
    out, hn = module(x, tuple(states) if len(states) == 2 else states[0])
    if lengths is not None:
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=xs.shape[1])
    return out.detach().numpy(), [h.detach().numpy() for h in _leaves(hn)]


def _close(actual, expected, *, scaled=False):
    expected = np.asarray(expected)
    atol = ATOL * max(1.0, float(np.abs(expected).max(initial=0.0))) if scaled else ATOL
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=RTOL, atol=atol)


def _check_direction(kind, module, suffix, d, xs, states, out, hn, **kw):
    """jrnn with the weights of direction `d` must give torch's outputs half `d` and `h_n[d]`."""
    H = hn[0].shape[-1]
    ys, h_T = _apply(_params(kind, module, suffix), jnp.asarray(xs), _jrnn_state(states, d), **kw)
    _close(ys, out[..., d * H:(d + 1) * H])
    assert len(_leaves(h_T)) == len(hn)
    for got, want in zip(_leaves(h_T), hn, strict=True):
        _close(got, want[d])


# ---------------------------------------------------------------------------------------------
# 1. Whole sequences, same weights and initial state.


@pytest.mark.parametrize("B,T,I,H", SIZES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_rnn_apply_matches_torch(kind, bias, B, T, I, H):
    module = _torch_layer(kind, I, H, bias=bias)
    xs, states = _inputs(kind, B, T, I, H)
    out, hn = _torch_run(module, xs, [torch.from_numpy(s) for s in states])
    _check_direction(kind, module, "_l0", 0, xs, states, out, hn)


@pytest.mark.parametrize("kind", KINDS)
def test_time_major_and_zero_initial_state_match_torch(kind):
    B, T, I, H = 3, 6, 4, 5
    module = _torch_layer(kind, I, H)
    xs, _ = _inputs(kind, B, T, I, H)
    out, hn = module(torch.from_numpy(xs))  # no hx: zeros
    ys, h_T = _apply(_params(kind, module, "_l0"), jnp.asarray(xs.transpose(1, 0, 2)), time_major=True)
    _close(jnp.swapaxes(ys, 0, 1), out.detach().numpy())
    for got, want in zip(_leaves(h_T), _leaves(hn), strict=True):
        _close(got, want[0].detach().numpy())


# ---------------------------------------------------------------------------------------------
# 2. Gradients of a scalar loss w.r.t. every params field and the initial state.

GRAD_CASES = {  # B, T, I, H, unroll, lengths
    "big": (3, 11, 7, 13, 1, None),
    "tiny": (1, 1, 1, 1, 1, None),
    "unroll3_lengths": (4, 7, 3, 5, 3, [7, 1, 4, 2]),
}


@pytest.mark.parametrize("case,bias",
                         [("big", True), ("big", False), ("tiny", True), ("unroll3_lengths", True)])
@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_torch(kind, case, bias):
    B, T, I, H, unroll, lengths = GRAD_CASES[case]
    module = _torch_layer(kind, I, H, bias=bias)
    params = _params(kind, module, "_l0")
    xs, states = _inputs(kind, B, T, I, H)
    rng = np.random.default_rng(2)
    w_out = rng.standard_normal((B, T, H)).astype(np.float32)
    w_state = [rng.standard_normal((B, H)).astype(np.float32) for _ in states]

    # torch
    states_t = [torch.from_numpy(s.copy()).requires_grad_(True) for s in states]
    x = torch.from_numpy(xs)
    if lengths is not None:
        x = pack_padded_sequence(x, torch.as_tensor(lengths), batch_first=True, enforce_sorted=False)
    out, hn = module(x, tuple(states_t) if kind == "lstm" else states_t[0])
    if lengths is not None:
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
    loss = (out * torch.from_numpy(w_out)).sum()
    for h, w in zip(_leaves(hn), w_state, strict=True):
        loss = loss + (h[0] * torch.from_numpy(w)).sum()
    loss.backward()

    # jrnn
    def jax_loss(params, h0):
        ys, h_T = jrnn.rnn_apply(params, jnp.asarray(xs), h0, unroll=unroll,
                                 lengths=None if lengths is None else np.asarray(lengths, np.int32))
        total = jnp.sum(ys * w_out)
        for h, w in zip(_leaves(h_T), w_state, strict=True):
            total = total + jnp.sum(h * w)
        return total

    grad_fn = jax.jit(jax.value_and_grad(jax_loss, argnums=(0, 1)))
    value, (g_params, g_h0) = grad_fn(params, _jrnn_state(states, 0))
    _close(value, loss.item(), scaled=True)

    g_ih, g_hh, g_bih, g_bhh = _torch_arrays(module, "_l0", "grad")
    if bias and kind != "gru":  # the two torch biases enter as one sum: equal gradients
        _close(g_bih, g_bhh, scaled=True)
    kernel, recurrent, b = _to_keras(kind, g_ih, g_hh, g_bih, g_bhh, sum_bias=False)
    _close(g_params.kernel, kernel, scaled=True)
    _close(g_params.recurrent_kernel, recurrent, scaled=True)
    if bias:
        _close(g_params.bias, b, scaled=True)
    else:
        assert g_params.bias is None
    for got, want in zip(_leaves(g_h0), states_t, strict=True):
        _close(got, want.grad[0].numpy(), scaled=True)


# ---------------------------------------------------------------------------------------------
# 3. Every unroll mode, eager and jitted: whole sequences forward, padded sequences reversed.


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("unroll", [1, 3, True])  # T = 7: unroll=3 is two scanned chunks and a rest of 1
@pytest.mark.parametrize("kind", KINDS)
def test_unroll_modes_and_jit_match_torch(kind, unroll, jit):
    B, T, I, H = 3, 7, 3, 5
    lengths = [7, 1, 4]
    module = _torch_layer(kind, I, H, bidirectional=True)
    xs, states = _inputs(kind, B, T, I, H, dirs=2)
    states_t = [torch.from_numpy(s) for s in states]
    apply = _apply if jit else jrnn.rnn_apply
    for lens, reverse in [(None, False), (lengths, True)]:
        out, hn = _torch_run(module, xs, states_t, lens)
        d = int(reverse)
        params = _params(kind, module, "_l0_reverse" if reverse else "_l0")
        ys, h_T = apply(params, jnp.asarray(xs), _jrnn_state(states, d), unroll=unroll, reverse=reverse,
                        lengths=None if lens is None else jnp.asarray(lens, jnp.int32))
        _close(ys, out[..., d * H:(d + 1) * H])
        for got, want in zip(_leaves(h_T), hn, strict=True):
            _close(got, want[d])


# ---------------------------------------------------------------------------------------------
# 4, 5. Padded batches (`lengths`) against packed sequences through a bidirectional layer: the
# forward half against jrnn, the backward half (and `h_n[1]`) against jrnn with `reverse=True`.

LENGTH_CASES = [  # B, T, I, H, lengths (torch allows 1..T), bias
    (4, 9, 5, 6, [9, 1, 5, 3], True),
    (4, 9, 5, 6, [9, 1, 5, 3], False),
    (1, 1, 1, 1, [1], True),
    (2, 5, 1, 4, [5, 5], True),
    (3, 7, 4, 5, None, True),  # no lengths: reverse of whole sequences
]


@pytest.mark.parametrize("B,T,I,H,lengths,bias", LENGTH_CASES)
@pytest.mark.parametrize("kind", KINDS)
def test_lengths_and_reverse_match_bidirectional_packed(kind, B, T, I, H, lengths, bias):
    module = _torch_layer(kind, I, H, bias=bias, bidirectional=True)
    xs, states = _inputs(kind, B, T, I, H, dirs=2)
    out, hn = _torch_run(module, xs, [torch.from_numpy(s) for s in states], lengths)
    assert out.shape == (B, T, 2 * H)
    lens = None if lengths is None else np.asarray(lengths, np.int32)
    if lens is not None:  # torch pads with zeros: the comparison covers jrnn's zero padding
        for t in range(T):
            assert np.all(out[lens <= t, t] == 0)
    _check_direction(kind, module, "_l0", 0, xs, states, out, hn, lengths=lens)
    _check_direction(kind, module, "_l0_reverse", 1, xs, states, out, hn, lengths=lens, reverse=True)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_length_zero_keeps_initial_state(kind, reverse):
    """torch refuses length 0; jrnn gives zero outputs and `h_T == h0`, other rows unaffected."""
    B, T, I, H = 3, 5, 4, 6
    lengths = np.asarray([0, 3, 0], np.int32)
    module = _torch_layer(kind, I, H, bidirectional=True)
    xs, states = _inputs(kind, B, T, I, H, dirs=2)
    d = int(reverse)
    params = _params(kind, module, "_l0_reverse" if reverse else "_l0")
    h0 = _jrnn_state(states, d)
    ys, h_T = _apply(params, jnp.asarray(xs), h0, reverse=reverse, lengths=lengths)
    assert ys.shape == (B, T, H)
    np.testing.assert_array_equal(np.asarray(ys)[[0, 2]], 0.0)
    for got, want in zip(_leaves(h_T), _leaves(h0), strict=True):
        np.testing.assert_array_equal(np.asarray(got)[[0, 2]], np.asarray(want)[[0, 2]])
    # The row with length 3 matches torch run on that row alone.
    out, hn = _torch_run(module, xs[[1]], [torch.from_numpy(s[:, [1]].copy()) for s in states], [3])
    _close(ys[1], out[0, :, d * H:(d + 1) * H])
    for got, want in zip(_leaves(h_T), hn, strict=True):
        _close(got[1], want[d, 0])


# ---------------------------------------------------------------------------------------------
# 6. One step: `cell_apply` against nn.RNNCell / LSTMCell / GRUCell.


@pytest.mark.parametrize("batch", [(3,), (1,), ()])
@pytest.mark.parametrize("I,H", [(7, 13), (1, 1)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_cell_apply_matches_torch_cell(kind, bias, I, H, batch):
    cell = _torch_cell(kind, I, H, bias=bias)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((*batch, I)).astype(np.float32)
    states = [(0.5 * rng.standard_normal((*batch, H))).astype(np.float32)
              for _ in range(2 if kind == "lstm" else 1)]
    got = cell(torch.from_numpy(x), tuple(map(torch.from_numpy, states)) if kind == "lstm"
               else torch.from_numpy(states[0]))
    want = [t.detach().numpy() for t in _leaves(got)]
    h = jrnn.LSTMState(*states) if kind == "lstm" else states[0]
    out, h1 = jrnn.cell_apply(_params(kind, cell), jnp.asarray(x), h)
    assert out.shape == (*batch, H)
    _close(out, want[0])
    assert len(_leaves(h1)) == len(want)
    for g, w in zip(_leaves(h1), want, strict=True):
        _close(g, w)
