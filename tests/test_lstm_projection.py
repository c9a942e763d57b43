"""LSTM with projections (PyTorch's `nn.LSTM(proj_size=P)`): values and float64 gradients against torch with
the same weights (converted by hand here, not by `from_torch`), one step against a numpy loop, transforms
against a Python loop over `cell_apply`, conversion, save/load and the errors.
"""

import io
import json
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import jrnn
from tests.reference import loop

# torch warns once that its oneDNN path has no projections (it then runs its own): not our concern.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported:UserWarning")

I, H, P = 3, 5, 2
KEY = jax.random.key(0)
TIGHT = dict(rtol=1e-10, atol=1e-10)  # float64 on both sides
STEP = jax.jit(jrnn.cell_apply)  # one compile per shape, not one per eager op


def by_hand(module, suffix):
    """A jrnn LSTM with the weights of one torch layer direction, by the documented layout."""
    w = {n: getattr(module, n + suffix, None) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh",
                                                         "weight_hr")}
    w = {n: None if t is None else t.detach().numpy() for n, t in w.items()}
    bias = None if w["bias_ih"] is None else jnp.asarray(w["bias_ih"] + w["bias_hh"])
    return jrnn.LSTM(jnp.asarray(w["weight_ih"].T), jnp.asarray(w["weight_hh"].T), bias,
                     jnp.asarray(w["weight_hr"].T))


def torch_grads(module, suffix):
    """Torch's gradients of one direction in jrnn's layout: `(kernel, recurrent_kernel, bias, projection)`."""
    g = {n: getattr(module, n + suffix).grad.numpy() for n in ("weight_ih", "weight_hh", "weight_hr")}
    b_ih, b_hh = (getattr(module, n + suffix).grad.numpy() for n in ("bias_ih", "bias_hh"))
    np.testing.assert_allclose(b_ih, b_hh, **TIGHT)  # one sum in jrnn: the same gradient
    return g["weight_ih"].T, g["weight_hh"].T, b_ih, g["weight_hr"].T


def check_cell_grads(g_cell, module, suffix):
    for got, want in zip((g_cell.kernel, g_cell.recurrent_kernel, g_cell.bias, g_cell.projection),
                         torch_grads(module, suffix), strict=True):
        np.testing.assert_allclose(np.asarray(got), want, **TIGHT)


def torch_lstm(num_layers=1, bidirectional=False, bias=True, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return torch.nn.LSTM(I, H, num_layers=num_layers, bidirectional=bidirectional, bias=bias,
                         proj_size=P, batch_first=True).to(dtype)


def test_one_layer_values_and_float64_gradients_match_torch():
    B, T = 3, 6
    module = torch_lstm()
    rng = np.random.default_rng(1)
    xs, h0, c0 = rng.standard_normal((B, T, I)), rng.standard_normal((B, P)), rng.standard_normal((B, H))
    w_out, w_h, w_c = rng.standard_normal((B, T, P)), rng.standard_normal((B, P)), rng.standard_normal((B, H))

    x_t, h_t, c_t = (torch.tensor(a, requires_grad=True) for a in (xs, h0[None], c0[None]))
    out, (hn, cn) = module(x_t, (h_t, c_t))
    loss = ((out * torch.from_numpy(w_out)).sum() + (hn[0] * torch.from_numpy(w_h)).sum()
            + (cn[0] * torch.from_numpy(w_c)).sum())
    loss.backward()

    with jax.enable_x64(True):
        params = by_hand(module, "_l0")
        assert params.projection.dtype == jnp.float64 and params.output_size == P

        def f(params, xs, h0):
            ys, h_T = jrnn.rnn_apply(params, xs, h0)
            return jnp.sum(ys * w_out) + jnp.sum(h_T.h * w_h) + jnp.sum(h_T.c * w_c), (ys, h_T)

        (value, (ys, h_T)), (g_params, g_xs, g_h0) = jax.jit(jax.value_and_grad(f, (0, 1, 2), has_aux=True))(
            params, jnp.asarray(xs), jrnn.LSTMState(jnp.asarray(h0), jnp.asarray(c0)))
    assert ys.shape == (B, T, P) and h_T.h.shape == (B, P) and h_T.c.shape == (B, H)
    np.testing.assert_allclose(ys, out.detach().numpy(), **TIGHT)
    np.testing.assert_allclose(h_T.h, hn[0].detach().numpy(), **TIGHT)
    np.testing.assert_allclose(h_T.c, cn[0].detach().numpy(), **TIGHT)
    np.testing.assert_allclose(value, loss.item(), rtol=1e-12)
    check_cell_grads(g_params, module, "_l0")
    np.testing.assert_allclose(g_xs, x_t.grad.numpy(), **TIGHT)
    np.testing.assert_allclose(g_h0.h, h_t.grad[0].numpy(), **TIGHT)
    np.testing.assert_allclose(g_h0.c, c_t.grad[0].numpy(), **TIGHT)


def test_two_bidirectional_layers_packed_lengths_match_torch_float64():
    B, T, lengths = 3, 5, np.array([5, 2, 4])
    module = torch_lstm(num_layers=2, bidirectional=True)
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((B, T, I))
    w_out, w_h, w_c = (rng.standard_normal(s) for s in ((B, T, 2 * P), (4, B, P), (4, B, H)))
    valid = np.arange(T)[None, :] < lengths[:, None]  # [B, T]
    w_out = w_out * valid[..., None]  # the loss sees valid steps only

    x_t = torch.tensor(xs, requires_grad=True)
    packed = pack_padded_sequence(x_t, torch.from_numpy(lengths), batch_first=True, enforce_sorted=False)
    out, (hn, cn) = module(packed)  # zero initial state
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
    loss = ((out * torch.from_numpy(w_out)).sum() + (hn * torch.from_numpy(w_h)).sum()
            + (cn * torch.from_numpy(w_c)).sum())
    loss.backward()

    with jax.enable_x64(True):
        layer = lambda k: jrnn.Bidirectional(by_hand(module, f"_l{k}"), by_hand(module, f"_l{k}_reverse"))  # noqa: E731
        params = jrnn.Stack((layer(0), layer(1)))
        assert params.layers[1].forward.input_size == 2 * P

        def f(params, xs):
            ys, states = jrnn.rnn_apply(params, xs, lengths=jnp.asarray(lengths, jnp.int32), unroll=1)
            finals = [s for layer in states for s in layer]  # torch's order: l0, l0_reverse, l1, l1_reverse
            total = jnp.sum(ys * w_out)
            for n, s in enumerate(finals):
                total = total + jnp.sum(s.h * w_h[n]) + jnp.sum(s.c * w_c[n])
            return total, (ys, finals)

        (value, (ys, finals)), (g_params, g_xs) = jax.jit(jax.value_and_grad(f, (0, 1), has_aux=True))(
            params, jnp.asarray(xs))
    out = out.detach().numpy()
    np.testing.assert_allclose(np.asarray(ys)[valid], out[valid], **TIGHT)
    for n, s in enumerate(finals):
        np.testing.assert_allclose(s.h, hn[n].detach().numpy(), **TIGHT)
        np.testing.assert_allclose(s.c, cn[n].detach().numpy(), **TIGHT)
    np.testing.assert_allclose(value, loss.item(), rtol=1e-12)
    np.testing.assert_allclose(g_xs, x_t.grad.numpy(), **TIGHT)
    for k, layer in enumerate(g_params.layers):
        check_cell_grads(layer.forward, module, f"_l{k}")
        check_cell_grads(layer.backward, module, f"_l{k}_reverse")


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


@pytest.mark.parametrize("batch", [(2,), ()])
def test_cell_apply_matches_a_numpy_step(batch):
    params = jrnn.LSTM.init(KEY, I, H, proj_size=P, initializer="pytorch")
    rng = np.random.default_rng(3)
    x, h, c = (rng.standard_normal((*batch, n)).astype(np.float32) for n in (I, P, H))
    out, state = STEP(params, jnp.asarray(x), jrnn.LSTMState(jnp.asarray(h), jnp.asarray(c)))

    K, R, b, W = (np.asarray(a, np.float64) for a in (params.kernel, params.recurrent_kernel, params.bias,
                                                       params.projection))
    u = x @ K + h @ R + b
    i, f, g, o = (u[..., n * H:(n + 1) * H] for n in range(4))
    c_new = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h_new = (sigmoid(o) * np.tanh(c_new)) @ W
    assert out.shape == state.h.shape == (*batch, P) and state.c.shape == (*batch, H)
    np.testing.assert_allclose(out, h_new, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.h, h_new, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.c, c_new, rtol=1e-5, atol=1e-6)


def test_jit_vmap_jvp_of_rnn_apply_match_a_python_loop():
    """vmap over sequences `[T, I]` with their lengths, run backwards, under jit, forward-mode derivative
    with respect to params and inputs: against a loop of `cell_apply` steps (`tests/reference.py`)."""
    B, T = 3, 5
    params = jrnn.LSTM.init(KEY, I, H, proj_size=P)
    assert not params.fused and jrnn.LSTM.init(KEY, I, H).fused  # the plain LSTM keeps its derivative
    keys = jax.random.split(jax.random.key(4), 3)
    xs = jax.random.normal(keys[0], (B, T, I))
    lengths = jnp.asarray([5, 1, 3], jnp.int32)
    leaves, tree = jax.tree.flatten(params)
    dkeys = jax.random.split(keys[1], len(leaves))
    dparams = jax.tree.unflatten(tree, [jax.random.normal(k, a.shape)
                                        for a, k in zip(leaves, dkeys, strict=True)])
    dxs = jax.random.normal(keys[2], xs.shape)

    def scanned(params, xs):
        one = lambda x, n: jrnn.rnn_apply(params, x, lengths=n, reverse=True, unroll=2)  # noqa: E731
        return jax.vmap(one)(xs, lengths)

    def looped(params, xs):
        return loop(lambda x, h: jrnn.cell_apply(params, x, h), xs, jrnn.initial_state(params, (B,)),
                    reverse=True, lengths=np.asarray(lengths))

    jvp = lambda f: jax.jit(lambda p, x, dp, dx: jax.jvp(f, (p, x), (dp, dx)))  # noqa: E731
    got, want = (jvp(f)(params, xs, dparams, dxs) for f in (scanned, looped))
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    assert got[0][0].shape == (B, T, P)


def test_init_sizes_and_initializers():
    torch_like = jrnn.LSTM.init(KEY, I, H, proj_size=P, initializer="pytorch")
    keras_like = jrnn.LSTM.init(KEY, I, H, proj_size=P)
    for p in (torch_like, keras_like):
        assert (p.kernel.shape, p.recurrent_kernel.shape, p.bias.shape, p.projection.shape) == (
            (I, 4 * H), (P, 4 * H), (4 * H,), (H, P))
        assert (p.input_size, p.hidden_size, p.proj_size, p.output_size) == (I, H, P, P)
    bound = 1 / H**0.5  # PyTorch: U(+-1/sqrt(H)) for every array, weight_hr included
    for a in (torch_like.kernel, torch_like.recurrent_kernel, torch_like.bias, torch_like.projection):
        assert np.all(np.abs(a) <= bound) and np.abs(a).max() > bound / 2
    glorot = (6 / (H + P)) ** 0.5
    projection = np.abs(keras_like.projection)
    assert np.all(projection <= glorot) and projection.max() > glorot / 2
    np.testing.assert_array_equal(keras_like.bias[H:2 * H], 1.0)  # unit forget bias as without projection
    for none in (None, 0):  # no projection: today's LSTM, bit for bit
        plain = jrnn.LSTM.init(KEY, I, H, proj_size=none)
        assert plain.projection is None and plain.fused and plain.output_size == H
        for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(jrnn.LSTM.init(KEY, I, H)), strict=True):
            np.testing.assert_array_equal(a, b)
    stack = jrnn.Stack.init(KEY, jrnn.LSTM, I, H, 2, bidirectional=True, proj_size=P)
    assert stack.layers[1].forward.input_size == 2 * P and stack.output_size == 2 * P


@pytest.mark.parametrize("bias", [True, False])
def test_from_torch_and_back(bias):
    module = torch_lstm(num_layers=2, bidirectional=True, bias=bias, dtype=torch.float32)
    params = jrnn.from_torch(module)  # no longer refused
    for k in range(2):
        layer = params.layers[k]
        for cell, suffix in ((layer.forward, f"_l{k}"), (layer.backward, f"_l{k}_reverse")):
            for field, name in (("projection", "weight_hr"), ("recurrent_kernel", "weight_hh")):
                np.testing.assert_array_equal(getattr(cell, field),
                                              getattr(module, name + suffix).detach().numpy().T)
            assert (cell.bias is None) == (not bias)
    from_dict = jrnn.from_torch(module.state_dict())
    assert jax.tree.structure(from_dict) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(from_dict), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)

    state, original = jrnn.to_torch(params), module.state_dict()
    assert list(state) == list(original)
    for name, tensor in state.items():
        if name.startswith("bias_hh"):  # jrnn holds one bias: all of it goes to bias_ih
            np.testing.assert_array_equal(tensor, 0.0)
        elif name.startswith("bias_ih"):
            want = original[name] + original[name.replace("_ih", "_hh")]
            np.testing.assert_allclose(tensor, want.numpy(), rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(tensor, original[name]), name
    fresh = torch_lstm(num_layers=2, bidirectional=True, bias=bias, seed=7, dtype=torch.float32)
    fresh.load_state_dict(state, strict=True)
    x = torch.from_numpy(np.random.default_rng(5).standard_normal((2, 4, I)).astype(np.float32))
    with torch.no_grad():
        for got, want in zip(jax.tree.leaves(fresh(x)), jax.tree.leaves(module(x)), strict=True):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-6)


def test_save_load_round_trip_and_files_from_before_projections(tmp_path):
    params = {"rnn": jrnn.Stack.init(KEY, jrnn.LSTM, I, H, 2, bidirectional=True, proj_size=P),
              "plain": jrnn.LSTM.init(KEY, I, H)}
    jrnn.save(tmp_path / "p.ckpt", params)
    loaded = jrnn.load(tmp_path / "p.ckpt")
    assert jax.tree.structure(loaded) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b, strict=True)

    # A file written before `projection` existed: the plain LSTM's spec without that field.
    path = tmp_path / "old.ckpt"
    with zipfile.ZipFile(tmp_path / "p.ckpt") as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    header = json.loads(members["__jrnn__.json"])
    plain = header["tree"]["values"][header["tree"]["keys"].index("plain")]
    assert plain["fields"].pop("projection") == {"type": "none"}
    members["__jrnn__.json"] = json.dumps(header).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    path.write_bytes(buffer.getvalue())
    old = jrnn.load(path)["plain"]
    assert type(old) is jrnn.LSTM and old.projection is None
    np.testing.assert_array_equal(old.recurrent_kernel, params["plain"].recurrent_kernel)


def test_bad_projections_and_conversions_raise_naming_the_field():
    p = jrnn.LSTM.init(KEY, I, H, proj_size=P)
    want = r"`projection` of LSTM must have shape \(H, P\) = \(5, 2\) \(P = 2 from `recurrent_kernel`, H = .*"
    with pytest.raises(ValueError, match=want + r"got \(5, 3\)"):
        jrnn.LSTM(p.kernel, p.recurrent_kernel, p.bias, jnp.zeros((H, 3)))
    with pytest.raises(ValueError, match=want + r"got \(2, 5\)"):
        jrnn.LSTM(p.kernel, p.recurrent_kernel, p.bias, p.projection.T)
    with pytest.raises(ValueError, match=r"`recurrent_kernel` of LSTM must have shape \(H, 4H\); got \(2, 2"):
        jrnn.LSTM(p.kernel, p.recurrent_kernel, p.bias)  # P rows need a projection
    with pytest.raises(TypeError, match=r"`projection` of LSTM must have the dtype of `recurrent_kernel` "
                                        r"\(float32\); got bfloat16"):
        jrnn.LSTM(p.kernel, p.recurrent_kernel, p.bias, p.projection.astype(jnp.bfloat16))
    with pytest.raises(TypeError, match=r"`projection` of LSTM must be an array or None; got list"):
        jrnn.LSTM(p.kernel, p.recurrent_kernel, p.bias, [[0.0]])
    for bad in (-1, True, 2.0):
        with pytest.raises(ValueError, match=rf"`proj_size` must be None, 0 or a positive int; got {bad!r}"):
            jrnn.LSTM.init(KEY, I, H, proj_size=bad)
    with pytest.raises(TypeError, match=r"`params` is an LSTM with a `projection` \(5, 2\).*Keras' LSTM"):
        jrnn.to_keras(jrnn.Bidirectional(p, p))
    with pytest.raises(ValueError, match=r"`proj_size` \(=5\) must be smaller than `hidden_size` \(=5\)"):
        jrnn.to_torch(jrnn.LSTM.init(KEY, I, H, proj_size=H))
    with pytest.raises(ValueError, match=r"`cell=True` .*nn.LSTMCell has no projection"):
        jrnn.to_torch(p, cell=True)
    with pytest.raises(ValueError, match=r"proj_size 2 \(layer 0\) vs 0 \(layer 1\)"):
        jrnn.to_torch(jrnn.Stack((p, jrnn.LSTM.init(KEY, P, H))))
    state = torch_lstm(dtype=torch.float32).state_dict()
    with pytest.raises(ValueError, match=r"`weight_hr_l0` of an LSTM with projections must have shapes "
                                         r"\[4H, I\], \[4H, P\] and \[P, H\]; got .* and \(2, 4\)"):
        jrnn.from_torch({**state, "weight_hr_l0": state["weight_hr_l0"][:, :4]})
    with pytest.raises(ValueError, match=r"no `weight_hr_l0_reverse` key"):
        jrnn.from_torch({k: v for k, v in torch_lstm(bidirectional=True).state_dict().items()
                         if k != "weight_hr_l0_reverse"})
