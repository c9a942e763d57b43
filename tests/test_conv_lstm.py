"""ConvLSTM (1D, 2D, one 3D case): against Keras 3's `ConvLSTM1D/2D/3D` with the same weights, against a
Python loop over `cell_apply` (values and float64 gradients, with `lengths` and `reverse`), a Stack against
its layers in turn, save/load, Keras' initializers, and the errors. Small sizes: spatial 5-6, C=2, F=3,
T=4, B=2."""

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

import jrnn

B, T, C, F = 2, 4, 2, 3
TOL = dict(rtol=1e-5, atol=1e-5)
NO_INIT = dict(kernel_initializer="zeros", recurrent_initializer="zeros", bias_initializer="zeros")
RUN = jax.jit(jrnn.rnn_apply, static_argnames=jrnn.STATIC_ARGNAMES)


def make(spatial, kernel_size=3, *, use_bias=True, seed=0, dtype=jnp.float32, **kw):
    """A ConvLSTM with Keras' initializers and a random (nonzero) bias."""
    cell = jrnn.ConvLSTM.init(jax.random.key(seed), (*spatial, C), F, kernel_size, use_bias=use_bias,
                              dtype=dtype, **kw)
    if use_bias:
        bias = 0.3 * jax.random.normal(jax.random.key(seed + 1), cell.bias.shape, dtype)
        cell = jrnn.ConvLSTM(cell.kernel, cell.recurrent_kernel, bias, cell.spatial_shape, cell.strides,
                             cell.padding, cell.dilation)
    return cell


def rand(shape, seed, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def rand_state(cell, seed=5):
    shape = (B, *cell.state_shape)
    return jrnn.LSTMState(jnp.asarray(0.5 * rand(shape, seed)), jnp.asarray(0.5 * rand(shape, seed + 1)))


# name: (spatial, kernel_size, jrnn init kwargs, Keras layer kwargs besides those, with an initial state)
CASES = {
    "2d_same_sequences": ((5, 6), 3, {}, dict(return_sequences=True), True),
    "2d_valid_stride2_last": ((5, 6), (2, 3), dict(padding="valid", strides=2), dict(return_sequences=False),
                              False),
    "1d_same_even_kernel_no_bias": ((6,), 2, dict(use_bias=False), dict(return_sequences=True), True),
    "1d_valid_stride2_dilation": ((6,), 2, dict(padding="valid", dilation=2), dict(return_sequences=True),
                                  False),
    "3d_same_last": ((3, 4, 3), 2, {}, dict(return_sequences=False), False),
}


def keras_layer(cell, **kw):
    """A built Keras ConvLSTM{1,2}D of `cell`'s settings holding `cell`'s weights."""
    name = f"ConvLSTM{len(cell.spatial_shape)}D"  # 1D, 2D (and one 3D case)
    with jax.numpy_rank_promotion("allow"):  # Keras' ops broadcast a bias `[n]` against `[..., n]`
        layer = getattr(keras.layers, name)(
            F, cell.kernel_size, strides=cell.strides, padding=cell.padding, dilation_rate=cell.dilation,
            use_bias=cell.bias is not None, return_state=True, **NO_INIT, **kw)
        layer.build((B, T, *cell.input_shape))
        layer.set_weights(jrnn.to_keras(cell))
    return layer


def run_keras(layer, xs, h0=None):
    with jax.numpy_rank_promotion("allow"):
        outs = layer(xs) if h0 is None else layer(xs, initial_state=[np.asarray(a) for a in h0])
    return [np.asarray(o) for o in outs]


@pytest.mark.parametrize("case", list(CASES))
def test_matches_keras(case):
    spatial, ks, init_kw, layer_kw, with_state = CASES[case]
    cell = make(spatial, ks, **init_kw)
    layer = keras_layer(cell, **layer_kw)
    # from_keras reads back exactly the arrays and settings (a new ConvLSTM: its checks ran).
    back = jrnn.from_keras(layer)
    assert isinstance(back, jrnn.ConvLSTM)
    assert (back.spatial_shape, back.strides, back.padding, back.dilation) == \
           (cell.spatial_shape, cell.strides, cell.padding, cell.dilation)
    for got, want in zip(jrnn.to_keras(back), jrnn.to_keras(cell), strict=True):
        np.testing.assert_array_equal(got, want)
    xs = rand((B, T, *cell.input_shape), 2)
    h0 = rand_state(cell) if with_state else None
    y_k, h_k, c_k = run_keras(layer, xs, h0)
    ys, h_T = RUN(cell, jnp.asarray(xs), h0)
    assert ys.shape == (B, T, *cell.output_shape) and h_T.h.shape == (B, *cell.state_shape)
    np.testing.assert_allclose(np.asarray(ys if layer_kw["return_sequences"] else ys[:, -1]), y_k, **TOL)
    np.testing.assert_allclose(np.asarray(h_T.h), h_k, **TOL)
    np.testing.assert_allclose(np.asarray(h_T.c), c_k, **TOL)


def test_go_backwards_is_reverse():
    cell = make((5, 6))
    layer = keras_layer(cell, return_sequences=True, go_backwards=True)
    xs, h0 = rand((B, T, *cell.input_shape), 3), rand_state(cell)
    y_k, h_k, c_k = run_keras(layer, xs, h0)
    ys, h_T = RUN(cell, jnp.asarray(xs), h0, reverse=True)
    # Keras gives the outputs in processing order (its step 0 is the last input step); jrnn keeps the
    # original time order.
    np.testing.assert_allclose(np.asarray(ys), y_k[:, ::-1], **TOL)
    np.testing.assert_allclose(np.asarray(h_T.h), h_k, **TOL)
    np.testing.assert_allclose(np.asarray(h_T.c), c_k, **TOL)
    with pytest.raises(ValueError, match="go_backwards=True.*reverse=True"):
        jrnn.from_keras(layer)


def test_from_keras_refuses_channels_first_and_bidirectional():
    with jax.numpy_rank_promotion("allow"):
        layer = keras.layers.ConvLSTM1D(F, 3, data_format="channels_first", **NO_INIT)
        layer.build((B, T, C, 6))
    with pytest.raises(ValueError, match="`data_format` 'channels_first'"):
        jrnn.from_keras(layer)
    with jax.numpy_rank_promotion("allow"):
        pair = keras.layers.Bidirectional(keras.layers.ConvLSTM1D(F, 3, **NO_INIT))
        pair.build((B, T, 6, C))
    with pytest.raises(TypeError, match="Bidirectional of ConvLSTM layers"):
        jrnn.from_keras(pair)


def loop_reference(cell, xs, h, lengths):
    """`rnn_apply(..., reverse=True, lengths=lengths)` as a Python loop over `cell_apply`: from the last
    step to the first, skipping each sequence's padded steps (their outputs are zero)."""
    ys = [None] * xs.shape[1]
    for t in reversed(range(xs.shape[1])):
        out, new = jrnn.cell_apply(cell, xs[:, t], h)
        ok = (t < lengths).reshape(-1, *(1,) * len(cell.state_shape))
        h = jax.tree.map(lambda a, b, ok=ok: jnp.where(ok, a, b), new, h)
        ys[t] = jnp.where(ok, out, jnp.zeros_like(out))
    return jnp.stack(ys, axis=1), h


def test_lengths_reverse_and_gradient_match_a_loop_over_cell_apply():
    """Values and float64 gradients (params, inputs, initial state) against the loop, 2D "valid"."""
    cell32 = make((5, 6), padding="valid")  # made outside x64, whose jit cache is another
    with jax.enable_x64(True):
        cell = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), cell32)
        xs = jnp.asarray(rand((B, T, *cell.input_shape), 4, np.float64))
        h0 = jax.tree.map(lambda a: a.astype(jnp.float64), rand_state(cell))
        lengths = jnp.array([T, 2])
        w = jnp.asarray(rand((B, T, *cell.output_shape), 6, np.float64))

        def value_and_grad(run):
            def f(cell, xs, h0):
                ys, h = run(cell, xs, h0)
                return jnp.sum(ys * w) + jnp.sum(h.h * h.c), (ys, h)
            return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))

        fast = lambda c, x, h: jrnn.rnn_apply(c, x, h, reverse=True, lengths=lengths, unroll=2)  # noqa: E731
        slow = lambda c, x, h: loop_reference(c, x, h, lengths)  # noqa: E731
        (_, (ys, h_T)), g = value_and_grad(fast)(cell, xs, h0)
        (_, (ys_ref, h_ref)), g_ref = value_and_grad(slow)(cell, xs, h0)
        np.testing.assert_allclose(ys, ys_ref, rtol=1e-12, atol=1e-12)
        for got, want in zip(h_T, h_ref, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        assert not np.any(np.asarray(ys[1, 2:]))  # padded steps give zeros
        for got, want in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
        assert not np.any(np.asarray(g[1][1, 2:]))  # no gradient reaches the padding


def conv_input_shapes(jaxpr) -> list:
    """The lhs shapes of every `conv_general_dilated` in `jaxpr` and its sub-jaxprs."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            found.append(tuple(eqn.invars[0].aval.shape))
        for p in eqn.params.values():
            inner = getattr(p, "jaxpr", p)
            if hasattr(inner, "eqns"):
                found += conv_input_shapes(inner)
    return found


def test_project_is_one_convolution_per_chunk():
    cell = make((5, 6))
    xs = jnp.zeros((B, T, *cell.input_shape))
    shapes = conv_input_shapes(jax.make_jaxpr(lambda x: jrnn.rnn_apply(cell, x, unroll=2))(xs).jaxpr)
    # The scan body: one input convolution of k*B = 4 frames, then k = 2 recurrent ones of B frames.
    assert sorted(shapes) == sorted([(2 * B, 5, 6, C), (B, 5, 6, F), (B, 5, 6, F)])


def test_save_load(tmp_path):
    cell = make((6,), 3, padding="valid", strides=2)
    jrnn.save(tmp_path / "c.jrnn", cell)
    back = jrnn.load(tmp_path / "c.jrnn")
    assert type(back) is jrnn.ConvLSTM
    assert (back.spatial_shape, back.strides, back.padding, back.dilation) == ((6,), (2,), "valid", (1,))
    for got, want in zip(jax.tree.leaves(back), jax.tree.leaves(cell), strict=True):
        np.testing.assert_array_equal(got, want)


def test_init_is_keras():
    cell = jrnn.ConvLSTM.init(jax.random.key(0), (5, 6, C), F, (3, 2))
    assert cell.kernel.shape == (3, 2, C, 4 * F) and cell.recurrent_kernel.shape == (3, 2, F, 4 * F)
    np.testing.assert_array_equal(cell.bias, np.r_[np.zeros(F), np.ones(F), np.zeros(2 * F)])
    # Keras' orthogonal: the kernel as a [prod(k) * F, 4F] matrix has orthonormal columns.
    r = np.asarray(cell.recurrent_kernel).reshape(-1, 4 * F)
    np.testing.assert_allclose(r.T @ r, np.eye(4 * F), atol=1e-5)
    # glorot_uniform with fans prod(k) * C and prod(k) * 4F.
    limit = np.sqrt(6 / (6 * C + 6 * 4 * F))
    k = np.abs(np.asarray(cell.kernel))
    assert k.max() <= limit and k.max() > 0.8 * limit


def test_bad_kernel_shape_names_the_field():
    cell = make((5, 6))
    with pytest.raises(ValueError, match=r"`kernel` of ConvLSTM \(2D\) must have shape .*got \(3, 3, 2, 8\)"):
        jrnn.ConvLSTM(cell.kernel[..., :8], cell.recurrent_kernel, cell.bias, (5, 6))
    with pytest.raises(ValueError, match=r"`recurrent_kernel` of ConvLSTM \(2D\) must have shape "
                                         r"\(k0, k1, F, 4F\); got \(3, 3, 4, 12\)"):
        jrnn.ConvLSTM(cell.kernel, jnp.zeros((3, 3, F + 1, 4 * F)), cell.bias, (5, 6))
    with pytest.raises(ValueError, match=r"`bias` of ConvLSTM \(2D\) must have shape .*got \(3,\)"):
        jrnn.ConvLSTM(cell.kernel, cell.recurrent_kernel, cell.bias[:3], (5, 6))
    with pytest.raises(ValueError, match=r"`kernel` of ConvLSTM \(1D\).*does not fit `spatial_shape` \(2,\)"):
        jrnn.ConvLSTM(cell.kernel[0], cell.recurrent_kernel[0], cell.bias, (2,), padding="valid")


def test_wrong_spatial_shape_names_xs_and_h0():
    cell = make((5, 6))
    with pytest.raises(ValueError, match=r"`xs` must have shape \[\.\.\., T, \*input_shape\] with "
                                         r"`input_shape` = \(5, 6, 2\); got shape \(2, 4, 6, 5, 2\)"):
        jrnn.rnn_apply(cell, jnp.zeros((B, T, 6, 5, C)))
    with pytest.raises(ValueError, match=r"`x` must have shape \[\.\.\., \*input_shape\].*got shape "
                                         r"\(2, 60\)"):
        jrnn.cell_apply(cell, jnp.zeros((B, 60)), jrnn.initial_state(cell, (B,)))
    h0 = jrnn.LSTMState(jnp.zeros((B, 5, 6, F + 1)), jnp.zeros((B, 5, 6, F + 1)))
    with pytest.raises(ValueError, match=r"`h0` must have shape \(2, 5, 6, 3\) or a suffix"):
        jrnn.rnn_apply(cell, jnp.zeros((B, T, 5, 6, C)), h0)


def test_stack_runs_flat_like_its_layers_in_turn():
    """Composites see their cells flat: `xs [..., T, prod(input_shape)]`, flat outputs and states."""
    first, second = make((5, 6)), jrnn.ConvLSTM.init(jax.random.key(7), (5, 6, F), F, 3)
    xs = jnp.asarray(rand((B, T, *first.input_shape), 8))
    ys, (h1, h2) = RUN(jrnn.Stack((first, second)), xs.reshape(B, T, -1))
    mid, g1 = RUN(first, xs)
    want, g2 = RUN(second, mid)
    np.testing.assert_allclose(ys, want.reshape(B, T, -1), **TOL)
    for got, ref in zip((*h1, *h2), (*g1, *g2), strict=True):
        np.testing.assert_allclose(got, ref.reshape(B, -1), **TOL)
    transposed = jrnn.ConvLSTM.init(jax.random.key(7), (6, 5, F), F, 3)  # as many features, other axes
    with pytest.raises(ValueError, match=r"`Stack.layers\[1\]` takes inputs of shape \(6, 5, 3\) but "
                                         r"`Stack.layers\[0\]` gives \(5, 6, 3\)"):
        jrnn.Stack((first, transposed))
