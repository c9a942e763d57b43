"""The few weight initializers the cells use (Keras' defaults and PyTorch's)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

INITIALIZERS = ("keras", "pytorch")


def glorot_uniform(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    """Keras' `glorot_uniform`: U(-l, l), l = sqrt(6 / (fan_in + fan_out))."""
    return jax.nn.initializers.glorot_uniform()(key, shape, dtype)


def orthogonal(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    """Keras' `orthogonal` for a `[H, G*H]` recurrent kernel: orthonormal rows (QR of a Gaussian)."""
    work = dtype if jnp.dtype(dtype).itemsize >= 4 else jnp.float32
    q = jax.nn.initializers.orthogonal()(key, shape, work)
    return q.astype(dtype)  # QR in at least float32 (CPUs have no bfloat16 QR)


def uniform(key: jax.Array, shape: tuple[int, ...], dtype, bound: float) -> jax.Array:
    """PyTorch's RNN default: U(-bound, bound) with bound = 1/sqrt(hidden_size)."""
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def rnn_weights(key, input_size, hidden_size, gates, bias_shape, initializer, dtype, recurrent_rows=None):
    """Returns `(kernel [I, G*H], recurrent_kernel [R, G*H], bias or None)` for one cell.

    `R` is `recurrent_rows`, by default `H` (an LSTM with a projection to `P` has `R = P`).
    `bias_shape=None` means no bias. With "keras" the bias is zeros; with "pytorch" every array
    is U(-1/sqrt(H), 1/sqrt(H)).
    """
    k1, k2, k3 = jax.random.split(key, 3)
    gh = gates * hidden_size
    rows = hidden_size if recurrent_rows is None else recurrent_rows
    if initializer == "keras":
        kernel = glorot_uniform(k1, (input_size, gh), dtype)
        recurrent = orthogonal(k2, (rows, gh), dtype)
        bias = None if bias_shape is None else jnp.zeros(bias_shape, dtype)
    else:
        bound = 1.0 / hidden_size**0.5
        kernel = uniform(k1, (input_size, gh), dtype, bound)
        recurrent = uniform(k2, (rows, gh), dtype, bound)
        bias = None if bias_shape is None else uniform(k3, bias_shape, dtype, bound)
    return kernel, recurrent, bias
