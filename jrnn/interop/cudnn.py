"""jrnn LSTM params to and from the flat cuDNN weight vector of `jax.experimental.rnn.lstm`, and back.

Internal (not in `jrnn.__all__`): the GPU bench uses it to give `jax.experimental.rnn.lstm` the very
weights of jrnn's LSTM, and it is the piece a cuDNN route would need.

Layout (`jax/experimental/rnn.py`, PyTorch's names): pseudo-layers `forward 0, reverse 0, forward 1,
...`; first every pseudo-layer's `W_ih [4H, I_k]` then `W_hh [4H, H]`, then every pseudo-layer's
`b_ih [4H]` then `b_hh [4H]`, each raveled row-major. Gate rows `i, f, g, o` are jrnn's columns `i, f,
c, o`, so `W_ih = kernel.T`, `W_hh = recurrent_kernel.T`, `b_ih = bias`, `b_hh = 0` (cuDNN always has
both biases; a cell without a bias gets zeros in both).

Decision: jrnn does NOT route its LSTM through cuDNN, by default or by a hidden condition.
`jax.experimental.rnn.lstm` is a `custom_vjp`: reverse mode only, so `jax.jvp`, `jax.jacfwd` and
`jax.hessian` of a loss through it fail, and jrnn's rule is that every transform works with the default
options. It also lowers on CUDA/ROCm only, takes float32 only, has no projection, mask, resets or
dropout masks of jrnn's kind. A route would pay for itself only if the portable path (`lax.scan` with
jrnn's own derivative) were much slower: no GPU measurement yet shows it more than 1.5x slower than
PyTorch's cuDNN LSTM (the H200 run of 2026-11-27 ran out of time before saving a peers table).
`bench/peers.py` times "jrnn default" against "jax.experimental.rnn (cuDNN)" fed by `to_cudnn`, so that
the next GPU session can decide with figures; an opt-in route, if any, would build on these two
functions.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from jrnn.cells.lstm import LSTM
from jrnn.interop.torch import _torch_layers
from jrnn.layers import Bidirectional, Stack


@functools.partial(jax.tree_util.register_dataclass, data_fields=[],
                   meta_fields=["input_size", "hidden_size", "num_layers", "bidirectional", "use_bias"])
@dataclasses.dataclass(frozen=True)
class CudnnLayout:
    """What the flat vector alone does not say: the sizes (static arguments of `rnn.lstm`) and whether
    the jrnn cells had a bias. A pytree without leaves, so `jax.jit(to_cudnn)` returns it as is."""

    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    use_bias: bool = True

    @property
    def lstm_kwargs(self) -> dict:
        """The keywords of `jax.experimental.rnn.lstm` (and `unpack_lstm_weights`) for these weights."""
        return dict(input_size=self.input_size, hidden_size=self.hidden_size, num_layers=self.num_layers,
                    bidirectional=self.bidirectional)

    def shapes(self) -> list[tuple[int, ...]]:
        """The arrays of the flat vector, in order (W_ih, W_hh per pseudo-layer, then b_ih, b_hh)."""
        H, D = self.hidden_size, 2 if self.bidirectional else 1
        linear = []
        for k in range(self.num_layers * D):
            linear += [(4 * H, self.input_size if k < D else D * H), (4 * H, H)]
        return linear + [(4 * H,)] * (2 * self.num_layers * D)


def to_cudnn(params) -> tuple[jnp.ndarray, CudnnLayout]:
    """The flat weights of `jax.experimental.rnn.lstm` holding jrnn LSTM params.

    Args:
      params: an `LSTM` without projection; a `Bidirectional` of two with `merge="concat"`
        (`bidirectional=True`); or a `Stack` of such layers, all alike, without `residual`, `skip` or
        functions between them (`num_layers`) — what PyTorch's `nn.LSTM` holds.

    Returns:
      `(weights [n], layout)`: `n = rnn.get_num_params_in_lstm(**layout.lstm_kwargs)`, in the params'
      dtype (`rnn.lstm` takes float32); jnp operations only, so it runs under `jax.jit` and gradients
      flow back to `params`.

    Raises:
      TypeError, ValueError: params cuDNN's LSTM cannot hold, with what differs.
    """
    layers = _torch_layers(params)  # PyTorch's nn.LSTM and cuDNN hold the same networks
    for k, dirs in enumerate(layers):
        for c in dirs:
            if not isinstance(c, LSTM):
                raise TypeError(f"cuDNN holds LSTMs only; layer {k} is a {type(c).__name__}")
            if c.projection is not None:
                raise ValueError(f"`jax.experimental.rnn.lstm` has no projection; layer {k} has "
                                 f"`projection` {tuple(c.projection.shape)}")
    first = layers[0][0]
    layout = CudnnLayout(first.input_size, first.hidden_size, len(layers), len(layers[0]) == 2,
                         first.bias is not None)
    cells = [c for dirs in layers for c in dirs]  # pseudo-layer order: forward 0, reverse 0, forward 1...
    linear = [a for c in cells for a in (c.kernel.T, c.recurrent_kernel.T)]
    zeros = jnp.zeros(4 * layout.hidden_size, first.dtype)
    bias = [a for c in cells for a in ((zeros, zeros) if c.bias is None else (c.bias, zeros))]
    return jnp.concatenate([a.ravel() for a in linear + bias]), layout


def from_cudnn(weights, layout: CudnnLayout):
    """jrnn params from flat cuDNN LSTM weights: the inverse of `to_cudnn`.

    Args:
      weights: `[n]`, the layout of `to_cudnn` (and of `rnn.init_lstm_weight`).
      layout: the sizes; `use_bias=False` drops both biases (cells with `bias` None), else
        `bias = b_ih + b_hh` (`b_ih` itself where `b_hh` is zero, so `from_cudnn(*to_cudnn(p))` is `p`
        bitwise).

    Returns:
      An `LSTM` (one layer, one direction), a `Bidirectional(forward, backward, "concat")`, or a
      `Stack` of `num_layers` of them, in the dtype of `weights`.

    Raises:
      ValueError: `weights` is not a vector of the layout's length.
    """
    shapes = layout.shapes()
    sizes = [math.prod(s) for s in shapes]
    weights = jnp.asarray(weights)
    if weights.ndim != 1 or weights.shape[0] != sum(sizes):
        raise ValueError(f"`weights` must be a vector of {sum(sizes)} values for {layout}; got shape "
                         f"{tuple(weights.shape)}")
    arrays, start = [], 0
    for shape, size in zip(shapes, sizes, strict=True):
        arrays.append(weights[start:start + size].reshape(shape))
        start += size
    n = len(shapes) // 2  # W_ih, W_hh pairs, then b_ih, b_hh pairs
    cells = []
    for k in range(n // 2):
        w_ih, w_hh = arrays[2 * k], arrays[2 * k + 1]
        b_ih, b_hh = arrays[n + 2 * k], arrays[n + 2 * k + 1]
        bias = jnp.where(b_hh == 0, b_ih, b_ih + b_hh) if layout.use_bias else None
        cells.append(LSTM(w_ih.T, w_hh.T, bias))
    D = 2 if layout.bidirectional else 1
    layers = [Bidirectional(*cells[k:k + 2], "concat") if D == 2 else cells[k]
              for k in range(0, len(cells), D)]
    return layers[0] if len(layers) == 1 else Stack(tuple(layers), False)
