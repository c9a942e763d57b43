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
from jrnn.loop import Masks, run_cell

MERGE_MODES = ("concat", "sum", "mul", "ave", None)


def _layer_error(name: str, layer, in_stack: bool) -> Optional[str]:
    allowed = "a Cell or a Bidirectional (jrnn params), or a function" if in_stack else "a Cell (jrnn params)"
    if isinstance(layer, Cell) or (in_stack and isinstance(layer, (Bidirectional, Function))):
        return None
    return f"`{name}` must be {allowed}; got {type(layer).__name__}"


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class Function:
    """A function between the layers of a `Stack`, as in Haiku's `DeepRNN([lstm, jax.nn.relu, lstm])`:
    `fn(y [..., F]) -> [..., F']` maps each step's output (it sees `[T, B, F]` at once, so it must act
    on the last axis only). No params; its state in the Stack's state is None. `Stack` wraps the plain
    functions it is given in this. `fn` is a static setting (define it once: a new function is a new
    compilation under jit); it cannot be saved.
    """

    fn: Callable = dataclasses.field(metadata=dict(static=True))

    def __post_init__(self):
        if not callable(self.fn):
            raise TypeError(f"`fn` must be callable; got {type(self.fn).__name__}")

    cells = ()

    def zero_state(self, batch_shape: tuple[int, ...] = ()):
        return None

    def output_spec(self, width: int, dtype, name: str = "fn") -> jax.ShapeDtypeStruct:
        """`fn`'s output for an input `[1, width]`, read off `jax.eval_shape`."""
        out = jax.eval_shape(self.fn, jax.ShapeDtypeStruct((1, width), dtype))
        if not isinstance(out, jax.ShapeDtypeStruct) or out.shape[:-1] != (1,):
            raise TypeError(f"`{name}` must map an array [..., F] to one array [..., F']; for an input of "
                            f"shape (1, {width}) it gives {out}")
        return out


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

    def final_output(self, state) -> jax.Array:
        """The merged output of the last step each direction ran, from the final state `(h_f, h_b)` that
        `rnn_apply` returns (the forward cell's at the last valid step, the backward cell's at the first):
        Keras' `Bidirectional(layer, merge_mode)` with `return_sequences=False`. `[..., F]`; for cells
        whose output is the hidden part of their state (every built-in cell but the LRU)."""
        for part in self.cells:
            if part.has_readout:
                raise TypeError(f"`final_output` needs cells whose output is their state; "
                                f"{type(part).__name__} reads its output out of the state and input")
        if type(state) not in (tuple, list) or len(state) != 2:
            raise TypeError(f"`state` must be the pair (forward, backward) of final states; got "
                            f"{type(state).__name__}")
        return merge(self.merge, self.forward.hidden(state[0]), self.backward.hidden(state[1]))

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
    """Layers run one after the other (PyTorch's `num_layers`, Keras' stacked RNN layers, Haiku's
    `DeepRNN`).

    `layers` is a tuple of cells, `Bidirectional` pairs and plain functions between them (e.g.
    `jax.nn.relu`, applied to each step's output; wrapped in `Function`); kinds and sizes may differ.
    Static settings: with `residual`, a cell layer whose input and output widths are equal adds its
    input to its output; with `skip` (Haiku's `deep_rnn_with_skip_connections`; cell layers only),
    every layer after the first takes the stack's input concatenated with the previous layer's output
    (`[x, y]`), and the stack outputs every layer's output concatenated. State: a tuple of the
    per-layer states (None for a function).
    """

    layers: tuple
    residual: bool = dataclasses.field(default=False, metadata=dict(static=True))
    skip: bool = dataclasses.field(default=False, metadata=dict(static=True))

    def __post_init__(self):
        if isinstance(self.layers, (tuple, list)):  # plain functions become `Function` layers
            layers = tuple(Function(layer) if _is_function(layer) else layer for layer in self.layers)
            object.__setattr__(self, "layers", layers)
        self.validate()

    def validate(self, name: str = "Stack") -> None:
        """Raises `TypeError`/`ValueError` naming the layer when the layers do not fit together."""
        if not isinstance(self.layers, tuple) or not self.layers:
            raise ValueError(f"`{name}.layers` must be a non-empty tuple; got {self.layers!r}")
        for flag in ("residual", "skip"):
            value = getattr(self, flag)
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"`{name}.{flag}` must be a bool; got {value!r}")
            # A static setting: a plain bool (np.bool_ becomes one), so that jit caches one entry per value.
            object.__setattr__(self, flag, bool(value))
        if self.residual and self.skip:
            raise ValueError(f"`{name}` takes `residual` or `skip`, not both")
        for i, layer in enumerate(self.layers):
            error = _layer_error(f"{name}.layers[{i}]", layer, in_stack=True)
            if error:
                raise TypeError(error)
            if isinstance(layer, Bidirectional) and layer.merge is None:
                raise ValueError(f"Unknown `{name}.layers[{i}].merge` None; "
                                 f"expected one of {MERGE_MODES[:-1]}")
            if isinstance(layer, Function) and (i == 0 or self.skip):
                why = "`skip` connects cell layers only" if self.skip else "a stack starts with a cell layer"
                raise ValueError(f"`{name}.layers[{i}]` is a function: {why}")
        widths = self.widths(name)
        for i, layer in enumerate(self.layers[1:], 1):
            if isinstance(layer, Function):
                continue
            if layer.input_size != widths[i]:
                what = (f"the input ({self.input_size}) and `{name}.layers[{i - 1}]`'s output together give"
                        if self.skip else f"`{name}.layers[{i - 1}]` gives")
                raise ValueError(f"`{name}.layers[{i}]` takes {layer.input_size} input features but "
                                 f"{what} {widths[i]}")
            want, prev = (layer if isinstance(layer, Cell) else layer.forward).input_shape, self.layers[i - 1]
            if len(want) > 1 and not isinstance(prev, Function) and want != _output_shape(prev):
                raise ValueError(f"`{name}.layers[{i}]` takes inputs of shape {want} but `{name}.layers"
                                 f"[{i - 1}]` gives {_output_shape(prev)}")

    def widths(self, name: str = "Stack") -> tuple[int, ...]:
        """The input width of each layer, and then the stack's output width (`len(layers) + 1` ints)."""
        x = self.layers[0].input_size
        widths, width, dtype, outs = [x], x, None, []
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Function):
                out = layer.output_spec(width, dtype, f"{name}.layers[{i}]")
                width, dtype = out.shape[-1], out.dtype
            else:
                width, dtype = layer.output_size, cells_of(layer)[-1].output_dtype
                outs.append(width)
            widths.append(x + width if self.skip and i < len(self.layers) - 1 else width)
        if self.skip:
            widths[-1] = sum(outs)
        return tuple(widths)

    @classmethod
    def init(cls, key: jax.Array, kind: type, input_size: int, hidden_size: int, num_layers: int, *,
             bidirectional: bool = False, merge: Union[str, Callable, None] = "concat",
             residual: bool = False, skip: bool = False, **options) -> Stack:
        """`num_layers` layers of `kind`, as PyTorch's `nn.LSTM(I, H, num_layers, bidirectional=...)`.

        Layer 0 takes `input_size` features, the next ones the previous layer's output width
        (`2 * hidden_size` for a concatenating bidirectional layer), plus `input_size` with `skip`.
        """
        check_key(key)
        num_layers = check_positive_int("num_layers", num_layers)
        bidirectional = check_bool("bidirectional", bidirectional)
        check_bool("residual", residual)
        skip = check_bool("skip", skip)
        if bidirectional and not callable(merge):
            check_choice("merge", merge, MERGE_MODES[:-1])
        layers, size = [], input_size
        for k in jax.random.split(key, num_layers):
            if bidirectional:
                layer = Bidirectional.init(k, kind, size, hidden_size, merge=merge, **options)
            else:
                layer = kind.init(k, size, hidden_size, **options)
            layers.append(layer)
            size = layer.output_size + (input_size if skip else 0)
        return cls(tuple(layers), residual, skip)

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
        return self.widths()[-1]

    # The connections between layers, shared by `run` (whole sequences) and `cell_apply` (one step).
    def layer_input(self, i: int, inputs: jax.Array, x: jax.Array) -> jax.Array:
        """What layer `i` takes: the previous output `x`, or with `skip` `[inputs, x]` (`i > 0`)."""
        return jnp.concatenate([inputs, x.astype(inputs.dtype)], axis=-1) if self.skip and i else x

    def layer_output(self, layer, out: jax.Array, x: jax.Array) -> jax.Array:
        """A cell layer's output `out` from its input `x`: plus `x` with `residual` where widths agree."""
        if self.residual and layer.input_size == layer.output_size:
            return out + x.astype(out.dtype)
        return out

    def stack_output(self, outs: list, last: jax.Array) -> jax.Array:
        """Every cell layer's output concatenated with `skip`, else the last layer's."""
        return jnp.concatenate(outs, axis=-1) if self.skip else last


def check_no_functions(stack: Stack, where: str) -> None:
    """Raises `ValueError` for a `Stack` holding a function layer, which `where` (a framework) cannot hold."""
    for i, layer in enumerate(stack.layers):
        if isinstance(layer, Function):
            raise ValueError(f"`params.layers[{i}]` is a function: {where} has no layers between "
                             f"recurrent layers")


def _is_function(layer) -> bool:
    return callable(layer) and not isinstance(layer, (Cell, Bidirectional, Stack, Function))


Layer = Union[Cell, Bidirectional, Function]
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


def run(params: Params, xs: jax.Array, h0, *, k: int, reverse: bool, valid: Optional[jax.Array],
        resets: Optional[jax.Array], key: Optional[jax.Array], dropout: Dropout,
        remat: Optional[int] = None, mode: str = "auto", reset_state=None, states: bool = False,
        axis_name: Optional[str] = None):
    """Runs any params on flat time-major `xs [T, B, I]` and flat state; returns `(ys, h_T)`, or with
    `states` `(ys, hs)`: the state after every step, structured as `h0` with `[T, B, F]` leaves.

    `valid [T, B]` (or None) is False at the steps to skip (padding, masked steps): such a step keeps
    the state and outputs zeros. `reset_state` (same structure as `h0`, or None for zeros) is what
    `resets` restores.
    """
    sub = lambda i: None if reset_state is None else reset_state[i]  # noqa: E731
    kw = dict(k=k, valid=valid, resets=resets, dropout=dropout, remat=remat, mode=mode, states=states,
              axis_name=axis_name)
    if isinstance(params, Bidirectional):
        kf, kb = (None, None) if key is None else jax.random.split(key)
        yf, hf = run(params.forward, xs, h0[0], reverse=reverse, key=kf, reset_state=sub(0), **kw)
        yb, hb = run(params.backward, xs, h0[1], reverse=not reverse, key=kb, reset_state=sub(1), **kw)
        return merge(params.merge, yf, yb), (hf, hb)
    if isinstance(params, Stack):
        keys = [None] * len(params.layers) if key is None else jax.random.split(key, len(params.layers))
        zero = lambda ys: ys if valid is None else jnp.where(valid[..., None], ys, jnp.zeros_like(ys))  # noqa: E731
        inputs, outs, states = xs, [], []
        for i, (layer, h, kl) in enumerate(zip(params.layers, h0, keys, strict=True)):
            if isinstance(layer, Function):  # skipped steps output zeros, whatever fn(0) is
                xs = zero(layer.fn(xs))
                states.append(None)
                continue
            xs = params.layer_input(i, inputs, xs)
            kl, kd = (None, None) if kl is None else jax.random.split(kl)
            ys, h = run(layer, xs, h, reverse=reverse, key=kl, reset_state=sub(i), **kw)
            if params.residual:
                ys = zero(params.layer_output(layer, ys, xs))
            outs.append(ys)
            if i < len(params.layers) - 1:
                m = _mask(kd, dropout.layer, ys.shape, ys.dtype)
                ys = ys if m is None else ys * m
            xs = ys
            states.append(h)
        return params.stack_output(outs, xs), tuple(states)
    T, B, _ = xs.shape
    k_in, k_rec = (None, None) if key is None else jax.random.split(key)
    if resets is not None:
        if valid is not None:  # a flag on a skipped step starts no episode (filtered before the shift)
            resets = resets & valid
        if reverse:  # reset before step t when the next step run after it starts an episode
            resets = _reverse_resets(resets, valid)
    h_reset = params.zero_state((B,)) if reset_state is None else reset_state
    rec_mask = None
    if params.recurrent_dropout and k_rec is not None:  # the width of what enters the recurrent matmul
        rec_width = jax.tree.leaves(params.hidden(h0))[0].shape[-1]
        rec_mask = _mask(k_rec, dropout.recurrent, (B, rec_width), params.dtype)
    masks = Masks(valid=valid, resets=resets,
                  h_reset=None if resets is None else h_reset,
                  in_mask=_mask(k_in, dropout.input, (B, params.input_size), params.dtype),
                  rec_mask=rec_mask)
    return run_cell(params, xs, h0, k=k, reverse=reverse, masks=masks, remat=remat, mode=mode, states=states,
                    axis_name=axis_name)


def _reverse_resets(resets: jax.Array, valid: Optional[jax.Array]) -> jax.Array:
    """A reverse run's reset flags `[T, B]`: before step `t` where the next valid step after `t` (in time
    order; `t + 1` without skipped steps) starts an episode, so that each episode runs on its own."""
    T = resets.shape[0]
    if valid is None:
        return jnp.concatenate([resets[1:], jnp.zeros_like(resets[:1])])
    steps = jnp.arange(T, dtype=jnp.int32)[:, None]
    # The first valid step after t: a reversed running minimum of the valid steps' indices (T: none).
    after = jax.lax.cummin(jnp.where(valid, steps, T), axis=0, reverse=True)
    after = jnp.concatenate([after[1:], jnp.full_like(after[:1], T)])
    flags = jnp.concatenate([resets, jnp.zeros_like(resets[:1])])  # row T: no step, no episode
    return valid & jnp.take_along_axis(flags, after, axis=0)


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
