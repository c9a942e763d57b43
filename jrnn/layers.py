"""Composites: `Bidirectional` (a forward and a backward cell) and `Stack` (a tuple of layers).

Both are frozen dataclass pytrees like the cells; `rnn_apply` runs them (see `jrnn/rnn.py`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from jrnn.cells.base import CellBase, check_choice, check_positive_int
from jrnn.loop import Masks, run_cell, run_parallel, valid_steps

MERGE_MODES = ("concat", "sum", "mul", "ave", None)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Bidirectional:
    """A forward and a backward cell over the same sequence (Keras `Bidirectional`).

    The backward cell runs with `reverse=True` (only the valid part when `lengths` is given); its
    outputs come back in the original time order. `merge` is static: "concat" (`[..., 2H]`, forward
    first), "sum", "mul", "ave", or None (the pair `(ys_forward, ys_backward)`). State: the pair
    `(forward_state, backward_state)`.
    """

    forward: Any
    backward: Any
    merge: Optional[str] = dataclasses.field(default="concat", metadata=dict(static=True))

    @classmethod
    def init(cls, key: jax.Array, kind: type, input_size: int, hidden_size: int, *,
             merge: Optional[str] = "concat", **options) -> Bidirectional:
        """Two cells of class `kind` (e.g. `jrnn.LSTM`), each made by `kind.init(..., **options)`."""
        check_choice("merge", merge, MERGE_MODES)
        kf, kb = jax.random.split(key)
        return cls(kind.init(kf, input_size, hidden_size, **options),
                   kind.init(kb, input_size, hidden_size, **options), merge)

    @property
    def input_size(self) -> int:
        return self.forward.input_size

    def zero_state(self, batch_shape: tuple[int, ...] = ()):
        return (self.forward.zero_state(batch_shape), self.backward.zero_state(batch_shape))

    @property
    def output_size(self) -> int:
        if self.merge == "concat":
            return self.forward.output_size + self.backward.output_size
        return self.forward.output_size


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Stack:
    """Layers run one after the other (PyTorch's `num_layers`, Keras' stacked RNN layers).

    `layers` is a tuple of cells and `Bidirectional` pairs; kinds and sizes may differ. With
    `residual` (static), a layer whose input and output widths are equal adds its input to its
    output. State: a tuple of the per-layer states.
    """

    layers: tuple
    residual: bool = dataclasses.field(default=False, metadata=dict(static=True))

    @classmethod
    def init(cls, key: jax.Array, kind: type, input_size: int, hidden_size: int, num_layers: int, *,
             bidirectional: bool = False, merge: Optional[str] = "concat", residual: bool = False,
             **options) -> Stack:
        """`num_layers` layers of `kind`, as PyTorch's `nn.LSTM(I, H, num_layers, bidirectional=...)`.

        Layer 0 takes `input_size` features, the next ones the previous layer's output width
        (`2 * hidden_size` for a concatenating bidirectional layer).
        """
        num_layers = check_positive_int("num_layers", num_layers)
        if bidirectional:
            check_choice("merge", merge, MERGE_MODES[:-1])
        layers, size = [], input_size
        for k in jax.random.split(key, num_layers):
            if bidirectional:
                layer = Bidirectional.init(k, kind, size, hidden_size, merge=merge, **options)
            else:
                layer = kind.init(k, size, hidden_size, **options)
            layers.append(layer)
            size = layer.output_size
        return cls(tuple(layers), residual)

    @property
    def input_size(self) -> int:
        return self.layers[0].input_size

    def zero_state(self, batch_shape: tuple[int, ...] = ()):
        return tuple(layer.zero_state(batch_shape) for layer in self.layers)

    @property
    def output_size(self) -> int:
        return self.layers[-1].output_size


Layer = Union[CellBase, Bidirectional]
Params = Union[CellBase, Bidirectional, Stack]


class Dropout(NamedTuple):
    """Dropout rates, active only when `rnn_apply` gets a `key`.

    input: on each layer's input, one mask per sequence reused at every step (Keras' `dropout`).
    recurrent: on the state entering the recurrent matmul, one mask per sequence (Keras'
      `recurrent_dropout`).
    layer: on every stacked layer's output but the last, a fresh mask per element (PyTorch's
      `dropout`).
    """

    input: float = 0.0
    recurrent: float = 0.0
    layer: float = 0.0


def _mask(key, rate: float, shape, dtype) -> Optional[jax.Array]:
    """Inverted-dropout mask: 0 with probability `rate`, else `1 / (1 - rate)`."""
    if key is None or rate == 0.0:
        return None
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return keep.astype(dtype) / jnp.asarray(1.0 - rate, dtype)


def run(params: Params, xs: jax.Array, h0, *, k: int, reverse: bool, lengths: Optional[jax.Array],
        resets: Optional[jax.Array], key: Optional[jax.Array], dropout: Dropout,
        checkpoint: Optional[int] = None, mode: str = "auto", reset_state=None):
    """Runs any params on flat time-major `xs [T, B, I]` and flat state; returns `(ys, h_T)`.

    `reset_state` (same structure as `h0`, or None for `h0` itself) is what `resets` restores.
    """
    sub = lambda i: None if reset_state is None else reset_state[i]  # noqa: E731
    kw = dict(k=k, lengths=lengths, resets=resets, dropout=dropout, checkpoint=checkpoint, mode=mode)
    if isinstance(params, Bidirectional):
        kf, kb = (None, None) if key is None else jax.random.split(key)
        yf, hf = run(params.forward, xs, h0[0], reverse=reverse, key=kf, reset_state=sub(0), **kw)
        yb, hb = run(params.backward, xs, h0[1], reverse=not reverse, key=kb, reset_state=sub(1), **kw)
        return merge(params.merge, yf, yb), (hf, hb)
    if isinstance(params, Stack):
        keys = [None] * len(params.layers) if key is None else jax.random.split(key, len(params.layers))
        states = []
        for i, (layer, h, kl) in enumerate(zip(params.layers, h0, keys, strict=True)):
            kl, kd = (None, None) if kl is None else jax.random.split(kl)
            ys, h = run(layer, xs, h, reverse=reverse, key=kl, reset_state=sub(i), **kw)
            if params.residual and layer.input_size == layer.output_size:
                ys = ys + xs.astype(ys.dtype)
                if lengths is not None:
                    ys = jnp.where(valid_steps(lengths, xs.shape[0])[..., None], ys, jnp.zeros_like(ys))
            if i < len(params.layers) - 1:
                m = _mask(kd, dropout.layer, ys.shape, ys.dtype)
                ys = ys if m is None else ys * m
            xs = ys
            states.append(h)
        return xs, tuple(states)
    T, B, _ = xs.shape
    k_in, k_rec = (None, None) if key is None else jax.random.split(key)
    if resets is not None and reverse:  # reset before step t when step t + 1 starts an episode
        resets = jnp.concatenate([resets[1:], jnp.zeros_like(resets[:1])])
    h_reset = h0 if reset_state is None else reset_state
    masks = Masks(lengths=lengths, resets=resets, h_reset=None if resets is None else h_reset,
                  in_mask=_mask(k_in, dropout.input, (B, params.input_size), params.dtype),
                  rec_mask=_mask(k_rec, dropout.recurrent, (B, params.hidden_size), params.dtype))
    if parallel(params, mode, T):
        ys, h = run_parallel(params, xs, h0, reverse=reverse, masks=masks)
    else:
        ys, h = run_cell(params, xs, h0, k=k, reverse=reverse, masks=masks, checkpoint=checkpoint)
    if params.has_readout and T:  # a readout from the states and inputs of all steps at once
        x_in = xs if masks.in_mask is None else xs * masks.in_mask.astype(xs.dtype)[None]
        ys = params.readout(ys, x_in)
        if lengths is not None:
            ys = jnp.where(valid_steps(lengths, T)[..., None], ys, jnp.zeros_like(ys))
    return ys, h


PARALLEL_MIN_T = {"cpu": None, "gpu": 64, "tpu": 64}  # `mode="auto"`: parallel from this T (None: never)


def parallel(cell, mode: str, T: int) -> bool:
    """Whether `cell` runs by associative scan: `mode="auto"` picks by backend and length.

    On this project's 2-core CPU the sequential scan won at every length measured (bench/parallel.py);
    on accelerators the parallel form is expected to win from a few dozen steps.
    """
    if not getattr(cell, "linear", False) or mode == "sequential":
        return False
    if mode == "parallel":
        return True
    threshold = PARALLEL_MIN_T.get(jax.default_backend())
    return threshold is not None and T >= threshold


def merge(mode: Optional[str], yf: jax.Array, yb: jax.Array):
    """Keras' `merge_mode`: "concat", "sum", "mul", "ave", or None for the pair."""
    if mode == "concat":
        return jnp.concatenate([yf, yb], axis=-1)
    if mode == "sum":
        return yf + yb
    if mode == "mul":
        return yf * yb
    if mode == "ave":
        return (yf + yb) / 2
    return yf, yb
