"""Composites: `Bidirectional` (a forward and a backward cell) and `Stack` (a tuple of layers), and `run`,
which runs any params over a sequence by handing each cell to `jrnn.loop.run_cell`.

Both composites are frozen dataclass pytrees like the cells, checked once where they are built
(`validate`); JAX's own rebuilding of the pytree (`jax.tree.map`, `vmap`, `jit`) skips the check.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jrnn.cell import Cell
from jrnn.cells.base import check_bool, check_choice, check_key, check_positive_int, pytree_dataclass
from jrnn.loop import Masks, run_cell, valid_steps

MERGE_MODES = ("concat", "sum", "mul", "ave", None)


def _layer_error(name: str, layer, in_stack: bool) -> Optional[str]:
    allowed = "a Cell or a Bidirectional" if in_stack else "a Cell"
    if isinstance(layer, Cell) or (in_stack and isinstance(layer, Bidirectional)):
        return None
    return f"`{name}` must be {allowed} (jrnn params); got {type(layer).__name__}"


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class Bidirectional:
    """A forward and a backward cell over the same sequence (Keras `Bidirectional`).

    The backward cell runs with `reverse=True` (only the valid part when `lengths` is given); its
    outputs come back in the original time order. `merge` is static: "concat" (`[..., 2H]`, forward
    first), "sum", "mul", "ave", None (the pair `(ys_forward, ys_backward)`), or a function
    `merge(ys_forward [..., F], ys_backward [..., F']) -> [..., F'']` (Flax's `merge_fn`; define it
    once: a new function is a new setting, so a new compilation under jit; it cannot be saved).
    State: the pair `(forward_state, backward_state)`.
    """

    forward: Cell
    backward: Cell
    merge: Union[str, Callable, None] = dataclasses.field(default="concat", metadata=dict(static=True))

    def __post_init__(self):
        self.validate()

    def validate(self, name: str = "Bidirectional") -> None:
        """Raises `TypeError`/`ValueError` naming the field when the parts do not fit together."""
        for part in ("forward", "backward"):
            error = _layer_error(f"{name}.{part}", getattr(self, part), in_stack=False)
            if error:
                raise TypeError(error)
        if not callable(self.merge):
            check_choice(f"{name}.merge" if name != "Bidirectional" else "merge", self.merge, MERGE_MODES)
        f, b = self.forward, self.backward
        same_width = self.merge == "concat" or callable(self.merge)  # a function decides for itself
        if callable(self.merge):
            self.output_size  # noqa: B018 (raises TypeError when the function does not give one array)
        if f.input_size != b.input_size or (not same_width and f.output_size != b.output_size):
            raise ValueError(f"`{name}.forward` and `.backward` must take the same input size and give the "
                             f"same output size; got {f.input_size}->{f.output_size} and "
                             f"{b.input_size}->{b.output_size}")

    @classmethod
    def init(cls, key: jax.Array, kind: type, input_size: int, hidden_size: int, *,
             merge: Union[str, Callable, None] = "concat", **options) -> Bidirectional:
        """Two cells of class `kind` (e.g. `jrnn.LSTM`), each made by `kind.init(..., **options)`."""
        check_key(key)
        if not callable(merge):
            check_choice("merge", merge, MERGE_MODES)
        kf, kb = jax.random.split(key)
        return cls(kind.init(kf, input_size, hidden_size, **options),
                   kind.init(kb, input_size, hidden_size, **options), merge)

    @property
    def cells(self) -> tuple[Cell, ...]:
        return (self.forward, self.backward)

    @property
    def input_size(self) -> int:
        return self.forward.input_size

    def zero_state(self, batch_shape: tuple[int, ...] = ()):
        return (self.forward.zero_state(batch_shape), self.backward.zero_state(batch_shape))

    @property
    def output_size(self) -> int:
        if self.merge == "concat":
            return self.forward.output_size + self.backward.output_size
        if callable(self.merge):
            f, b = (jax.ShapeDtypeStruct((1, c.output_size), c.dtype) for c in (self.forward, self.backward))
            out = jax.eval_shape(self.merge, f, b)
            if not isinstance(out, jax.ShapeDtypeStruct) or out.shape[:-1] != (1,):
                raise TypeError(f"`merge` must map two arrays [..., F] to one array [..., F'']; for inputs "
                                f"of shape (1, {f.shape[1]}) and (1, {b.shape[1]}) it gives {out}")
            return out.shape[-1]
        return self.forward.output_size


def _output_shape(layer) -> tuple[int, ...]:
    """The trailing axes of a layer's output (a cell's `output_shape`, e.g. a ConvLSTM's `(H', W', F)`);
    a Bidirectional that concatenates or merges by a function gives flat features."""
    if isinstance(layer, Cell):
        return layer.output_shape
    flat = layer.merge == "concat" or callable(layer.merge)
    return (layer.output_size,) if flat else layer.forward.output_shape


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class Stack:
    """Layers run one after the other (PyTorch's `num_layers`, Keras' stacked RNN layers).

    `layers` is a tuple of cells and `Bidirectional` pairs; kinds and sizes may differ. With
    `residual` (static), a layer whose input and output widths are equal adds its input to its
    output. State: a tuple of the per-layer states.
    """

    layers: tuple
    residual: bool = dataclasses.field(default=False, metadata=dict(static=True))

    def __post_init__(self):
        self.validate()

    def validate(self, name: str = "Stack") -> None:
        """Raises `TypeError`/`ValueError` naming the layer when the layers do not fit together."""
        if not isinstance(self.layers, tuple) or not self.layers:
            raise ValueError(f"`{name}.layers` must be a non-empty tuple; got {self.layers!r}")
        if not isinstance(self.residual, (bool, np.bool_)):
            raise TypeError(f"`{name}.residual` must be a bool; got {self.residual!r}")
        # A static setting: a plain bool (np.bool_ becomes one), so that jit caches one entry per value.
        object.__setattr__(self, "residual", bool(self.residual))
        for i, layer in enumerate(self.layers):
            error = _layer_error(f"{name}.layers[{i}]", layer, in_stack=True)
            if error:
                raise TypeError(error)
            if isinstance(layer, Bidirectional) and layer.merge is None:
                raise ValueError(f"Unknown `{name}.layers[{i}].merge` None; "
                                 f"expected one of {MERGE_MODES[:-1]}")
            if i and layer.input_size != self.layers[i - 1].output_size:
                raise ValueError(
                    f"`{name}.layers[{i}]` takes {layer.input_size} input features but "
                    f"`{name}.layers[{i - 1}]` gives {self.layers[i - 1].output_size}")
            want = (layer if isinstance(layer, Cell) else layer.forward).input_shape
            if i and len(want) > 1 and want != _output_shape(self.layers[i - 1]):
                raise ValueError(f"`{name}.layers[{i}]` takes inputs of shape {want} but `{name}.layers"
                                 f"[{i - 1}]` gives {_output_shape(self.layers[i - 1])}")

    @classmethod
    def init(cls, key: jax.Array, kind: type, input_size: int, hidden_size: int, num_layers: int, *,
             bidirectional: bool = False, merge: Union[str, Callable, None] = "concat",
             residual: bool = False, **options) -> Stack:
        """`num_layers` layers of `kind`, as PyTorch's `nn.LSTM(I, H, num_layers, bidirectional=...)`.

        Layer 0 takes `input_size` features, the next ones the previous layer's output width
        (`2 * hidden_size` for a concatenating bidirectional layer).
        """
        check_key(key)
        num_layers = check_positive_int("num_layers", num_layers)
        bidirectional = check_bool("bidirectional", bidirectional)
        check_bool("residual", residual)
        if bidirectional and not callable(merge):
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
    def cells(self) -> tuple[Cell, ...]:
        return tuple(c for layer in self.layers for c in cells_of(layer))

    @property
    def input_size(self) -> int:
        return self.layers[0].input_size

    def zero_state(self, batch_shape: tuple[int, ...] = ()):
        return tuple(layer.zero_state(batch_shape) for layer in self.layers)

    @property
    def output_size(self) -> int:
        return self.layers[-1].output_size


Layer = Union[Cell, Bidirectional]
Params = Union[Cell, Bidirectional, Stack]


def cells_of(params: Params) -> tuple[Cell, ...]:
    """The cells of any params, in order."""
    return (params,) if isinstance(params, Cell) else params.cells


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


def _mask(key, rate, shape, dtype) -> Optional[jax.Array]:
    """Inverted-dropout mask: 0 with probability `rate`, else `1 / (1 - rate)` (`rate` may be traced;
    `rate = 1` gives zeros)."""
    if key is None or (not isinstance(rate, jax.core.Tracer) and rate == 0.0):
        return None
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    kept = jnp.asarray(1.0 - rate, dtype)
    scale = jnp.where(kept > 0, 1 / jnp.where(kept > 0, kept, 1), 0)  # no 1/0, in values or gradients
    return keep.astype(dtype) * scale


def run(params: Params, xs: jax.Array, h0, *, k: int, reverse: bool, lengths: Optional[jax.Array],
        resets: Optional[jax.Array], key: Optional[jax.Array], dropout: Dropout,
        remat: Optional[int] = None, mode: str = "auto", reset_state=None):
    """Runs any params on flat time-major `xs [T, B, I]` and flat state; returns `(ys, h_T)`.

    `reset_state` (same structure as `h0`, or None for zeros) is what `resets` restores.
    """
    sub = lambda i: None if reset_state is None else reset_state[i]  # noqa: E731
    kw = dict(k=k, lengths=lengths, resets=resets, dropout=dropout, remat=remat, mode=mode)
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
    valid = None if lengths is None else valid_steps(lengths, T)
    if resets is not None:
        if valid is not None:  # a flag on a padded step starts no episode (filtered before the shift)
            resets = resets & valid
        if reverse:  # reset before step t when step t + 1 starts an episode
            resets = jnp.concatenate([resets[1:], jnp.zeros_like(resets[:1])])
    h_reset = params.zero_state((B,)) if reset_state is None else reset_state
    rec_mask = None
    if params.recurrent_dropout and k_rec is not None:  # the width of what enters the recurrent matmul
        rec_width = jax.tree.leaves(params.hidden(h0))[0].shape[-1]
        rec_mask = _mask(k_rec, dropout.recurrent, (B, rec_width), params.dtype)
    masks = Masks(valid=valid, resets=resets,
                  h_reset=None if resets is None else h_reset,
                  in_mask=_mask(k_in, dropout.input, (B, params.input_size), params.dtype),
                  rec_mask=rec_mask)
    return run_cell(params, xs, h0, k=k, reverse=reverse, masks=masks, remat=remat, mode=mode)


def merge(mode: Union[str, Callable, None], yf: jax.Array, yb: jax.Array):
    """Keras' `merge_mode`: "concat", "sum", "mul", "ave", None for the pair; or a function of the two."""
    if callable(mode):
        return mode(yf, yb)
    if mode == "concat":
        return jnp.concatenate([yf, yb], axis=-1)
    if mode == "sum":
        return yf + yb
    if mode == "mul":
        return yf * yb
    if mode == "ave":
        return (yf + yb) / 2
    return yf, yb
