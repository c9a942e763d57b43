"""`initial_state`, `cell_apply` and `rnn_apply`: the public entry points.

They check everything at trace time, move time to the front and flatten the batch axes once, and
hand flat time-major arrays to `jrnn.layers.run` (composites) and `jrnn.loop.run_cell` (one cell).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jrnn.cells.base import CellBase
from jrnn.cells.lstm import LSTMState
from jrnn.layers import MERGE_MODES, Bidirectional, Dropout, Params, Stack, run

MODES = ("auto", "sequential", "parallel")
State = Any  # an array `[..., H]`, an `LSTMState`, or tuples of them for composites


def _check_params(params, name: str = "params", in_stack: bool = False) -> None:
    """Checks the kinds and that the sizes of composites fit together."""
    if isinstance(params, CellBase):
        return
    if isinstance(params, Bidirectional):
        _check_params(params.forward, f"{name}.forward")
        _check_params(params.backward, f"{name}.backward")
        if params.merge not in MERGE_MODES or (in_stack and params.merge is None):
            allowed = MERGE_MODES[:-1] if in_stack else MERGE_MODES
            raise ValueError(f"Unknown `{name}.merge` {params.merge!r}; expected one of {allowed}")
        f, b = params.forward, params.backward
        if f.input_size != b.input_size or (params.merge != "concat" and f.output_size != b.output_size):
            raise ValueError(f"`{name}.forward` and `.backward` must take the same input size and give the "
                             f"same output size; got {f.input_size}->{f.output_size} and "
                             f"{b.input_size}->{b.output_size}")
        return
    if isinstance(params, Stack) and not in_stack:
        if not isinstance(params.layers, tuple) or not params.layers:
            raise ValueError(f"`{name}.layers` must be a non-empty tuple; got {params.layers!r}")
        for i, layer in enumerate(params.layers):
            _check_params(layer, f"{name}.layers[{i}]", in_stack=True)
            if i and layer.input_size != params.layers[i - 1].output_size:
                raise ValueError(
                    f"`{name}.layers[{i}]` takes {layer.input_size} input features but "
                    f"`{name}.layers[{i - 1}]` gives {params.layers[i - 1].output_size}")
        return
    raise TypeError(f"`{name}` must be jrnn params (SimpleRNN, LSTM, GRU, MinGRU, MinLSTM, LRU, Bidirectional"
                    f"{'' if in_stack else ', Stack'}); got {type(params).__name__}")


def _check_input(name: str, x, params, min_ndim: int, layout: str) -> jax.Array:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"`{name}` must be a floating array; got dtype {x.dtype}")
    if x.ndim < min_ndim or x.shape[-1] != params.input_size:
        raise ValueError(
            f"`{name}` must have shape {layout} with I = `input_size` (={params.input_size}); "
            f"got shape {tuple(x.shape)}")
    return x


def _check_state(name: str, h, params, batch_shape: tuple[int, ...]) -> State:
    """Checks a state's structure and shapes; broadcasts it over the batch; casts its dtype.

    A composite's state may hold None for a part that starts from zeros. A cell's state may omit
    leading batch axes (a learned `[H]` initial state is broadcast over the batch).
    """
    if h is None:
        return params.zero_state(batch_shape)
    if isinstance(params, (Stack, Bidirectional)):
        n = len(params.layers) if isinstance(params, Stack) else 2
        what = (f"a tuple of {n} per-layer states" if isinstance(params, Stack)
                else "a pair (forward, backward)")
        if not isinstance(h, (tuple, list)) or isinstance(h, LSTMState) or len(h) != n:
            raise TypeError(f"`{name}` of a {type(params).__name__} must be {what}; got {_describe(h)}")
        parts = params.layers if isinstance(params, Stack) else (params.forward, params.backward)
        return tuple(_check_state(f"{name}[{i}]", hi, p, batch_shape)
                     for i, (hi, p) in enumerate(zip(h, parts, strict=True)))
    full = (*batch_shape, params.hidden_size)
    expected = f"shape {full} or a suffix of it (broadcast over the batch)"
    if isinstance(params.zero_state(()), LSTMState):
        if not (isinstance(h, tuple) and len(h) == 2):
            raise TypeError(f"`{name}` of an LSTM must be an LSTMState(h, c), each of {expected}; "
                            f"got {_describe(h)}")
        leaves = list(h)
    else:
        if isinstance(h, tuple) or not hasattr(h, "shape") and not isinstance(h, list):
            raise TypeError(f"`{name}` of a {type(params).__name__} must be one array of {expected}; "
                            f"got {_describe(h)}")
        leaves = [h]
    out = []
    for leaf in leaves:
        leaf = jnp.asarray(leaf)
        complex_state = jnp.issubdtype(params.state_dtype, jnp.complexfloating)
        if not jnp.issubdtype(leaf.dtype, jnp.inexact if complex_state else jnp.floating):
            raise TypeError(f"`{name}` must be {'floating or complex' if complex_state else 'floating'}; "
                            f"got dtype {leaf.dtype}")
        if leaf.ndim > len(full) or tuple(leaf.shape) != full[len(full) - leaf.ndim:] or leaf.ndim == 0:
            shapes = [tuple(jnp.shape(v)) for v in leaves]
            raise ValueError(f"`{name}` must have {expected}; "
                             f"got {shapes if len(shapes) > 1 else shapes[0]}")
        out.append(jnp.broadcast_to(leaf.astype(params.state_dtype), full))
    return LSTMState(*out) if len(out) == 2 else out[0]


def _describe(h) -> str:
    if hasattr(h, "shape"):
        return f"{type(h).__name__} of shape {tuple(h.shape)}"
    return type(h).__name__


def _check_unroll(unroll) -> Union[int, bool]:
    if isinstance(unroll, (bool, np.bool_)):
        return True if unroll else 1
    if isinstance(unroll, (int, np.integer)) and unroll >= 1:
        return int(unroll)
    raise ValueError(f"`unroll` must be a bool or a positive int; got {unroll!r}")


def default_unroll(params: Params, T: int, B: int) -> int:
    """The unroll factor `rnn_apply` uses when none is given: 4 when `B * H <= 16384`, else 2.

    Fitted to `bench/scan_vs_unroll.py` and `bench/peers.py` on this project's 2-core CPU: taking 2-8
    steps per scan iteration (one input projection per chunk) beat the plain scan by 1.1-1.6x over
    T = 8..512 for both B=4/H=64 and B=64/H=512, forward and backward; the larger factors paid only
    for small steps and cost compile time. With the hand-written VJP, the LSTM at B=32, H=256 trained
    fastest at 4 (76 ms vs 98 ms at 2), B=128, H=512 at 2. A full unroll was never worth its compile time.
    """
    width = max(c.hidden_size for c in _cells(params))
    return max(1, min(T, 4 if B * width <= 16384 else 2))


def _check_lengths(lengths, batch_shape: tuple[int, ...], T: int) -> jax.Array:
    if not hasattr(lengths, "dtype"):
        lengths = np.asarray(lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"`lengths` must be an integer array; got dtype {lengths.dtype}")
    if tuple(lengths.shape) != tuple(batch_shape):
        raise ValueError(f"`lengths` must have the batch shape {tuple(batch_shape)}; "
                         f"got shape {tuple(lengths.shape)}")
    return jnp.clip(jnp.asarray(lengths), 0, T).astype(jnp.int32)


def _check_resets(resets, shape: tuple[int, ...], layout: str) -> jax.Array:
    if not hasattr(resets, "dtype"):
        resets = np.asarray(resets)
    if resets.dtype != jnp.bool_:
        raise TypeError(f"`resets` must be a bool array; got dtype {resets.dtype}")
    if tuple(resets.shape) != shape:
        raise ValueError(f"`resets` must have shape {layout} = {shape}; got shape {tuple(resets.shape)}")
    return jnp.asarray(resets)


def _check_dropout(key, dropout: float, recurrent_dropout: float, layer_dropout: float) -> Dropout:
    rates = Dropout(dropout, recurrent_dropout, layer_dropout)
    for name, rate in zip(("dropout", "recurrent_dropout", "layer_dropout"), rates, strict=True):
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ValueError(f"`{name}` must be a float in [0, 1); got {rate!r}")
    if key is not None and not (hasattr(key, "dtype") and (
            jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or key.dtype == jnp.uint32)):
        raise TypeError(f"`key` must be a PRNG key (jax.random.key) or None; got {_describe(key)}")
    return Dropout(*(float(r) for r in rates))


def _cells(params) -> list:
    if isinstance(params, Stack):
        return [c for layer in params.layers for c in _cells(layer)]
    if isinstance(params, Bidirectional):
        return [params.forward, params.backward]
    return [params]


def _check_mode(params, mode, rates: Dropout) -> None:
    if mode not in MODES:
        raise ValueError(f"Unknown `mode` {mode!r}; expected one of {MODES}")
    cells = _cells(params)
    if mode == "parallel" and not all(getattr(c, "linear", False) for c in cells):
        names = sorted({type(c).__name__ for c in cells if not getattr(c, "linear", False)})
        raise ValueError(f"`mode=\"parallel\"` needs linear-recurrence cells (MinGRU, MinLSTM, LRU); "
                         f"got {', '.join(names)}: use mode=\"sequential\"")
    if rates.recurrent and any(getattr(c, "linear", False) for c in cells):
        raise ValueError("`recurrent_dropout` needs a recurrent matmul, which MinGRU, MinLSTM and LRU do not "
                         "have; use `dropout`")


def initial_state(params: Params, batch_shape: tuple[int, ...] = ()) -> State:
    """Zero state `[*batch_shape, H]`; `LSTMState(h, c)` for an LSTM; tuples for composites."""
    _check_params(params)
    if isinstance(batch_shape, (int, np.integer)):
        batch_shape = (batch_shape,)
    if not (isinstance(batch_shape, tuple)
            and all(isinstance(d, (int, np.integer)) and d >= 0 for d in batch_shape)):
        raise ValueError(f"`batch_shape` must be a tuple of non-negative ints; got {batch_shape!r}")
    return params.zero_state(tuple(int(d) for d in batch_shape))


def cell_apply(params: Union[CellBase, Stack], x: jax.Array, h: State) -> tuple[jax.Array, State]:
    """One time step, like Keras' `out, h1 = cell(x, [h0])`.

    Args:
      params: cell params (`SimpleRNN`, `LSTM`, `GRU`), or a `Stack` of cells (each layer steps once,
        as Keras' `StackedRNNCells`).
      x: input `[..., I]` (any number of leading batch axes, or none).
      h: state `[..., H]` with the same batch axes (`LSTMState(h, c)` for an LSTM; a tuple of
        per-layer states for a stack).

    Returns:
      `(out, h_new)`: `out [..., H]` is the (last layer's) new hidden state (for an LRU its real
      readout `[..., I]`), `h_new` the new state.
    """
    _check_params(params)
    if isinstance(params, Bidirectional) or (
            isinstance(params, Stack) and any(isinstance(p, Bidirectional) for p in params.layers)):
        raise TypeError("`cell_apply` takes one time step, and a Bidirectional layer needs the whole "
                        "sequence: use `rnn_apply`")
    x = _check_input("x", x, params, 1, "[..., I]")
    h = _check_state("h", h, params, tuple(x.shape[:-1]))
    if isinstance(params, Stack):
        states = []
        for layer, hi in zip(params.layers, h, strict=True):
            out, hi = layer.recur(layer.project(x), hi)
            out = layer.readout(out, x)
            if params.residual and layer.input_size == layer.output_size:
                out = out + x.astype(out.dtype)
            x = out
            states.append(hi)
        return x, tuple(states)
    out, h = params.recur(params.project(x), h)
    return params.readout(out, x), h


def rnn_apply(params: Params, xs: jax.Array, h0: Optional[State] = None, *,
              unroll: Union[int, bool, None] = None, reverse: bool = False, time_major: bool = False,
              lengths: Optional[jax.Array] = None, resets: Optional[jax.Array] = None,
              key: Optional[jax.Array] = None, dropout: float = 0.0, recurrent_dropout: float = 0.0,
              layer_dropout: float = 0.0, checkpoint: Optional[int] = None,
              mode: str = "auto", reset_state: Optional[State] = None) -> tuple[Any, State]:
    """Runs a cell, a `Bidirectional` pair or a `Stack` over a sequence.

    Args:
      params: cell params, `Bidirectional` or `Stack`.
      xs: inputs `[..., T, I]`, or `[T, ..., I]` when `time_major`.
      h0: initial state `[..., H]` (`LSTMState` for an LSTM; a pair for `Bidirectional`, a tuple of
        per-layer states for a `Stack`, where None parts are zeros); None means zeros. Leading batch
        axes may be omitted and are broadcast: a trainable `[H]` array is a learned initial state.
      unroll: 1 (or False) is a `lax.scan`; an int k takes k steps per scan iteration, their input
        projection one matrix product; True unrolls all T steps in Python (one big graph); None
        (the default) picks k from the sizes, see `default_unroll`.
      reverse: run from the last step to the first; `ys` stays in the original time order.
      time_major: `xs` and `ys` are `[T, ..., *]` instead of `[..., T, *]`.
      lengths: int array of the batch shape, for right-padded sequences. Values are clipped to
        `[0, T]`. Outputs at steps `t >= length` are zero and the state stops changing after the
        last valid step; with `reverse`, only each sequence's valid part is reversed.
      resets: bool `[..., T]` (`[T, ...]` when `time_major`): the state goes back to `reset_state`
        before step `t` where `resets[..., t]` (an episode starts at `t`). In a reverse run the
        state goes back after step `t` instead, so every episode runs on its own either way.
      reset_state: what `resets` restores, structured and broadcast like `h0`; None means `h0`
        itself. When `h0` is a state carried over from the previous chunk (truncated BPTT, RL),
        pass the initial state here, e.g. `jrnn.initial_state(params)` for zeros.
      key: PRNG key; dropout is active only when one is given (no key: deterministic inference).
      dropout: input dropout rate, one mask per sequence and layer, reused at every step
        (variational, Keras' `dropout`), applied before the input projection.
      recurrent_dropout: dropout rate on the state entering the recurrent matmul, one mask per
        sequence and layer (Keras' `recurrent_dropout`).
      layer_dropout: dropout rate on each stacked layer's output but the last, a fresh mask per
        element (PyTorch's `dropout`).
      checkpoint: None, or an int c: the backward pass keeps the state only every c steps and
        recomputes the steps in between (`jax.checkpoint` per segment). `c ~ sqrt(T)` cuts the
        memory of a long sequence by about `sqrt(T)` for about one more forward pass of time.
        `c >= T` is one segment differentiated by autodiff (no hand-written VJP): the way to take
        forward-mode derivatives (`jax.jvp`) through SimpleRNN/LSTM/GRU.
      mode: "sequential" (scan or unroll, every cell), "parallel" (`jax.lax.associative_scan` over
        the affine steps: linear-recurrence cells only, MinGRU, MinLSTM and LRU; `unroll` and `checkpoint`
        do not apply), or "auto" (the default: parallel for those cells where the backend and `T`
        favour it, see `jrnn.layers.PARALLEL_MIN_T`; sequential otherwise).

    Returns:
      `(ys, h_T)`: outputs `[..., T, F]` (layout as `xs`; F the output width; a pair for a
      `Bidirectional` with `merge=None`) and the final state (same structure as `h0`).
    """
    _check_params(params)
    layout = "[T, ..., I]" if time_major else "[..., T, I]"
    xs = _check_input("xs", xs, params, 2, layout)
    rates = _check_dropout(key, dropout, recurrent_dropout, layer_dropout)
    _check_mode(params, mode, rates)
    if checkpoint is not None and (isinstance(checkpoint, (bool, np.bool_))
                                   or not isinstance(checkpoint, (int, np.integer)) or checkpoint < 1):
        raise ValueError(f"`checkpoint` must be None or a positive int; got {checkpoint!r}")
    if time_major:
        T, batch_shape = xs.shape[0], tuple(xs.shape[1:-1])
    else:
        T, batch_shape = xs.shape[-2], tuple(xs.shape[:-2])
        xs = jnp.moveaxis(xs, -2, 0)
    h0 = _check_state("h0", h0, params, batch_shape)
    B = math.prod(batch_shape)
    unroll = default_unroll(params, T, B) if unroll is None else _check_unroll(unroll)
    if reset_state is not None:
        reset_state = jax.tree.map(lambda a: a.reshape(B, a.shape[-1]),
                                   _check_state("reset_state", reset_state, params, batch_shape))
    if lengths is not None:
        lengths = _check_lengths(lengths, batch_shape, T).reshape(B)
    if resets is not None:
        shape, where = ((T, *batch_shape), "[T, ...]") if time_major else ((*batch_shape, T), "[..., T]")
        resets = _check_resets(resets, shape, where)
        resets = (resets if time_major else jnp.moveaxis(resets, -1, 0)).reshape(T, B)

    ys, h_T = run(params, xs.reshape(T, B, params.input_size),
                  jax.tree.map(lambda a: a.reshape(B, a.shape[-1]), h0),
                  k=T if unroll is True else unroll, reverse=reverse, lengths=lengths, resets=resets,
                  key=key, dropout=rates, checkpoint=None if checkpoint is None else int(checkpoint),
                  mode=mode, reset_state=reset_state)

    def unflat(y):
        y = y.reshape(T, *batch_shape, y.shape[-1])
        return y if time_major else jnp.moveaxis(y, 0, -2)

    ys = tuple(map(unflat, ys)) if isinstance(ys, tuple) else unflat(ys)
    return ys, jax.tree.map(lambda a: a.reshape(*batch_shape, a.shape[-1]), h_T)
