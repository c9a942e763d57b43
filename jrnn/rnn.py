"""`initial_state`, `cell_apply` and `rnn_apply`: the public entry points.

They check everything at trace time, move time to the front and flatten the batch axes once, and
hand flat time-major arrays to `jrnn.layers.run`.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jrnn import policy
from jrnn.cell import Cell
from jrnn.cells.base import check_key
from jrnn.layers import Bidirectional, Dropout, Function, Params, Stack, cells_of, run
from jrnn.loop import valid_steps

MODES = ("auto", "sequential", "chunked", "parallel")
State = Any  # a cell's state pytree (an array `[..., H]`, an `LSTMState`, ...), or tuples for composites

# The arguments of `rnn_apply` that must be static under `jax.jit`:
# `jax.jit(jrnn.rnn_apply, static_argnames=jrnn.STATIC_ARGNAMES)` jits it with every option usable.
STATIC_ARGNAMES = ("unroll", "reverse", "time_major", "remat", "mode", "return_states", "axis_name")


def _check_static(name: str, value) -> None:
    if isinstance(value, jax.core.Tracer):
        raise TypeError(f"`{name}` must be static under jax.jit; got a tracer. Mark it static: "
                        f"jax.jit(jrnn.rnn_apply, static_argnames=jrnn.STATIC_ARGNAMES)")


def _check_params(params, allow=(Cell, Bidirectional, Stack)) -> None:
    """Checks the kind; composites checked their parts where they were built."""
    if not isinstance(params, allow):
        names = "a jrnn.Cell (SimpleRNN, LSTM, GRU, MinGRU, MinLSTM, LRU, or your own)"
        names += ", Bidirectional or Stack" if Bidirectional in allow else " or a Stack of cells"
        raise TypeError(f"`params` must be {names}; got {type(params).__name__}")


def _check_input(name: str, x, params, min_ndim: int, layout: str) -> jax.Array:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        try:
            array = jnp.asarray(x)
        except (TypeError, ValueError):
            array = None
        if array is None:
            raise TypeError(f"`{name}` must be a floating array of shape {layout}; got {_describe(x)}")
        x = array
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"`{name}` must be a floating array; got dtype {x.dtype}")
    shape = _declared(params, "input_shape") or (params.input_size,)
    if len(shape) > 1:  # a cell with spatial axes (ConvLSTM) sees them flat: `[..., prod(input_shape)]`
        if x.ndim < min_ndim + len(shape) - 1 or tuple(x.shape[x.ndim - len(shape):]) != shape:
            raise ValueError(f"`{name}` must have shape {layout.replace('I]', '*input_shape]')} with "
                             f"`input_shape` = {shape}; got shape {tuple(x.shape)}")
        return x.reshape(*x.shape[:x.ndim - len(shape)], math.prod(shape))
    if x.ndim < min_ndim or x.shape[-1] != params.input_size:
        raise ValueError(
            f"`{name}` must have shape {layout} with I = `input_size` (={params.input_size}); "
            f"got shape {tuple(x.shape)}")
    return x


def _declared(params, name: str) -> Optional[tuple[int, ...]]:
    """A cell's declared `input_shape`/`output_shape`/`state_shape` (`jrnn.Cell`); None for composites,
    which run flat."""
    return getattr(params, name) if isinstance(params, Cell) else None


def _unflatten(a: jax.Array, shape: Optional[tuple[int, ...]]) -> jax.Array:
    """`a [..., prod(shape)]` as `[..., *shape]` (a cell's declared spatial axes); as it is otherwise."""
    return a if shape is None or len(shape) < 2 else a.reshape(*a.shape[:-1], *shape)


def _check_state(name: str, h, params, batch_shape: tuple[int, ...], spatial: bool = True) -> State:
    """Checks a state's structure and shapes; broadcasts it over the batch; casts its dtype.

    A composite's state may hold None for a part that starts from zeros. A cell's state must have the
    structure of its `zero_state`; each leaf may omit leading batch axes (a learned `[H]` initial state
    is broadcast over the batch).
    """
    if h is None:
        return params.zero_state(batch_shape)
    if isinstance(params, Function):
        raise TypeError(f"`{name}` of a function layer must be None (it has no state); got {_describe(h)}")
    if isinstance(params, (Stack, Bidirectional)):
        n = len(params.layers) if isinstance(params, Stack) else 2
        what = (f"a tuple of {n} per-layer states" if isinstance(params, Stack)
                else "a pair (forward, backward)")
        if type(h) not in (tuple, list) or len(h) != n:
            raise TypeError(f"`{name}` of a {type(params).__name__} must be {what}; got {_describe(h)}")
        parts = params.layers if isinstance(params, Stack) else (params.forward, params.backward)
        return tuple(_check_state(f"{name}[{i}]", hi, p, batch_shape, spatial=False)  # composites run flat
                     for i, (hi, p) in enumerate(zip(h, parts, strict=True)))
    zero = params.zero_state(batch_shape)
    zeros, treedef = jax.tree.flatten(zero)
    if treedef.num_leaves == 1 and treedef.num_nodes == 1:  # one array: anything array-like
        if isinstance(h, (tuple, dict)) or not (hasattr(h, "shape") or isinstance(h, (list, float, int))):
            raise TypeError(f"`{name}` of {type(params).__name__} params must be one array of shape "
                            f"{tuple(zeros[0].shape)} or a suffix of it; got {_describe(h)}")
        leaves = [h]
    else:
        leaves, h_def = jax.tree.flatten(h)
        if h_def != treedef:
            hint = ""
            if hasattr(zero, "_fields") and type(h) in (tuple, list):  # (h, c) or Flax's (c, h)?
                hint = (f" (a plain {type(h).__name__} is refused: its order is ambiguous; build "
                        f"{type(zero).__name__}({', '.join(f + '=...' for f in zero._fields)}))")
            raise TypeError(f"`{name}` of {type(params).__name__} params must be structured like its zero "
                            f"state, {_structure(zero)}; got {_describe(h)}{hint}")
    out, spatial = [], params.state_shape if spatial else None  # users see `[..., *state_shape]`
    for leaf, z in zip(leaves, zeros, strict=True):
        leaf = jnp.asarray(leaf)
        kind = jnp.inexact if jnp.issubdtype(z.dtype, jnp.complexfloating) else jnp.floating
        if not jnp.issubdtype(leaf.dtype, kind):
            what = "floating or complex" if kind is jnp.inexact else "floating"
            raise TypeError(f"`{name}` must be {what}; got dtype {leaf.dtype}")
        full = tuple(z.shape) if spatial is None else (*z.shape[:-1], *spatial)
        if leaf.ndim > len(full) or tuple(leaf.shape) != full[len(full) - leaf.ndim:] or leaf.ndim == 0:
            shapes = [tuple(jnp.shape(v)) for v in leaves]
            raise ValueError(f"`{name}` must have shape {full} or a suffix of it (broadcast over the batch); "
                             f"got {shapes if len(shapes) > 1 else shapes[0]}")
        out.append(jnp.broadcast_to(leaf.astype(z.dtype), full).reshape(z.shape))
    return jax.tree.unflatten(treedef, out)


def _structure(zero) -> str:
    return type(zero).__name__ + (f"({', '.join(zero._fields)})" if hasattr(zero, "_fields") else "")


def _describe(h) -> str:
    if hasattr(h, "shape"):
        return f"{type(h).__name__} of shape {tuple(h.shape)}"
    return type(h).__name__


def _check_flag(name: str, value) -> bool:
    _check_static(name, value)
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool; got {value!r}")
    return bool(value)


def _check_unroll(unroll) -> Union[int, bool]:
    _check_static("unroll", unroll)
    if isinstance(unroll, (bool, np.bool_)):
        return True if unroll else 1
    if isinstance(unroll, (int, np.integer)) and unroll >= 1:
        return int(unroll)
    raise ValueError(f"`unroll` must be a bool or a positive int; got {unroll!r}")


def _check_lengths(lengths, batch_shape: tuple[int, ...], T: int) -> jax.Array:
    if not hasattr(lengths, "dtype"):
        lengths = np.asarray(lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"`lengths` must be an integer array; got dtype {lengths.dtype}")
    if tuple(lengths.shape) != tuple(batch_shape):
        raise ValueError(f"`lengths` must have the batch shape {tuple(batch_shape)}; "
                         f"got shape {tuple(lengths.shape)}")
    if isinstance(lengths, np.ndarray):  # clipped before the cast: 2**32 + 1 stays long without x64
        return jnp.asarray(np.clip(lengths, 0, T).astype(np.int32))
    return jnp.clip(lengths, 0, T).astype(jnp.int32)


def _check_resets(name: str, resets, shape: tuple[int, ...], layout: str) -> jax.Array:
    """A bool array of the given shape (`resets`, `reset`, `mask`)."""
    if not hasattr(resets, "dtype"):
        resets = np.asarray(resets)
    if resets.dtype != jnp.bool_:
        raise TypeError(f"`{name}` must be a bool array; got dtype {resets.dtype}")
    if tuple(resets.shape) != shape:
        raise ValueError(f"`{name}` must have shape {layout} = {shape}; got shape {tuple(resets.shape)}")
    return jnp.asarray(resets)


def _check_dropout(key, dropout, recurrent_dropout, layer_dropout) -> Dropout:
    """Rates are Python floats in [0, 1], or traced scalars (under `jax.jit`; then unchecked)."""
    rates = Dropout(dropout, recurrent_dropout, layer_dropout)
    for name, rate in zip(("dropout", "recurrent_dropout", "layer_dropout"), rates, strict=True):
        if isinstance(rate, jax.core.Tracer):
            if rate.shape != () or not jnp.issubdtype(rate.dtype, jnp.floating):
                raise ValueError(f"`{name}` must be a float scalar; got a tracer of shape {rate.shape}, "
                                 f"dtype {rate.dtype}")
        elif isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (int, float, np.floating)) \
                or not 0 <= rate <= 1:
            raise ValueError(f"`{name}` must be a float in [0, 1]; got {rate!r}")
    if key is not None:
        check_key(key)
    return Dropout(*(r if isinstance(r, jax.core.Tracer) else float(r) for r in rates))


def _check_mode(params, mode, rates: Dropout) -> None:
    _check_static("mode", mode)
    if mode not in MODES:
        raise ValueError(f"Unknown `mode` {mode!r}; expected one of {MODES}")
    cells = cells_of(params)
    if mode in ("parallel", "chunked") and not all(c.linear for c in cells):
        names = sorted({type(c).__name__ for c in cells if not c.linear})
        raise ValueError(f"`mode=\"{mode}\"` needs cells that declare `linear` (MinGRU, MinLSTM, LRU); "
                         f"got {', '.join(names)}: use mode=\"sequential\"")
    rate = rates.recurrent
    if (isinstance(rate, jax.core.Tracer) or rate > 0) and not all(c.recurrent_dropout for c in cells):
        names = sorted({type(c).__name__ for c in cells if not c.recurrent_dropout})
        raise ValueError(f"`recurrent_dropout` needs cells that declare `recurrent_dropout` (a recurrent "
                         f"matmul: SimpleRNN, LSTM, GRU); got {', '.join(names)}: use `dropout`")


def _check_axis_name(params, axis_name, mode, reverse_resets: bool) -> None:
    if not isinstance(axis_name, str):
        raise TypeError(f"`axis_name` must be a str, a mesh axis name; got {axis_name!r}")
    cells = cells_of(params)
    if not all(c.linear for c in cells):
        names = sorted({type(c).__name__ for c in cells if not c.linear})
        raise ValueError(f"`axis_name` (a sequence split across devices) needs cells that declare `linear` "
                         f"(MinGRU, MinLSTM, LRU); got {', '.join(names)}")
    if mode == "sequential":
        raise ValueError("`axis_name` runs each block by the chunked or parallel scan; got "
                         "mode=\"sequential\": use \"auto\", \"chunked\" or \"parallel\"")
    if reverse_resets:
        raise ValueError("`axis_name` with `resets` and `reverse` together is not supported: a reverse "
                         "run's reset moves to the step before, which may sit on another device")
    try:
        jax.lax.axis_index(axis_name)
    except NameError:
        raise ValueError(f"`axis_name` {axis_name!r} is not a mesh axis here: call `rnn_apply` inside "
                         f"`jax.shard_map` over a mesh with that axis") from None


def initial_state(params: Params, batch_shape: tuple[int, ...] = ()) -> State:
    """Zero state `[*batch_shape, H]`; `LSTMState(h, c)` for an LSTM; tuples for composites."""
    _check_params(params)
    if isinstance(batch_shape, (int, np.integer)):
        batch_shape = (batch_shape,)
    if not (isinstance(batch_shape, tuple)
            and all(isinstance(d, (int, np.integer)) and d >= 0 for d in batch_shape)):
        raise ValueError(f"`batch_shape` must be a tuple of non-negative ints; got {batch_shape!r}")
    zero = params.zero_state(tuple(int(d) for d in batch_shape))
    return jax.tree.map(lambda a: _unflatten(a, _declared(params, "state_shape")), zero)


def cell_apply(params: Union[Cell, Stack], x: jax.Array, h: State, *, reset: Optional[jax.Array] = None,
               reset_state: Optional[State] = None) -> tuple[jax.Array, State]:
    """One time step, like Keras' `out, h1 = cell(x, [h0])`.

    Args:
      params: a cell (any `jrnn.Cell`), or a `Stack` of cells (each layer steps once, as Keras'
        `StackedRNNCells`).
      x: input `[..., I]` (any number of leading batch axes, or none).
      h: state `[..., H]` with the same batch axes (structured as the cell's `zero_state`:
        `LSTMState(h, c)` for an LSTM; a tuple of per-layer states for a stack).
      reset: bool of the batch shape `[...]`, or None: where True the state goes back to
        `reset_state` before the step (an episode starts here), the rule of `rnn_apply`'s `resets`.
      reset_state: what `reset` restores, structured and broadcast like `h`; None means zeros.

    Returns:
      `(out, h_new)`: `out [..., H]` is the (last layer's) new hidden state (`[..., P]` for an LSTM
      with a projection; for an LRU its real readout `[..., I]`), `h_new` the new state.
    """
    _check_params(params, allow=(Cell, Stack))
    if isinstance(params, Stack) and any(isinstance(p, Bidirectional) for p in params.layers):
        raise TypeError("`cell_apply` takes one time step, and a Bidirectional layer needs the whole "
                        "sequence: use `rnn_apply`")
    x = _check_input("x", x, params, 1, "[..., I]")
    batch_shape = tuple(x.shape[:-1])
    try:
        h = _check_state("h", h, params, batch_shape)
    except ValueError:
        h_ndim = max((jnp.ndim(leaf) for leaf in jax.tree.leaves(h)), default=0)
        if x.ndim > h_ndim >= 2:  # `x` has an axis more than `h` has: most likely a whole sequence
            raise ValueError(f"`x` must be one step, [..., I] with the batch axes of `h`; got shape "
                             f"{tuple(x.shape)} for `h` of {h_ndim - 1} batch axes (a sequence "
                             f"[..., T, I] goes to `rnn_apply`)") from None
        raise
    if reset is not None:
        reset = _check_resets("reset", reset, batch_shape, "[...] (the batch axes of `x`)")
        target = _check_state("reset_state", reset_state, params, batch_shape)
        h = jax.tree.map(lambda r, a: jnp.where(reset[..., None], r, a), target, h)
    if isinstance(params, Stack):
        inputs, outs, states = x, [], []
        for i, (layer, hi) in enumerate(zip(params.layers, h, strict=True)):
            if isinstance(layer, Function):
                x = layer.fn(x)
                states.append(None)
                continue
            x = params.layer_input(i, inputs, x)
            out, hi = layer.recur(layer.project(x), hi)
            x = params.layer_output(layer, layer.readout(out, x), x)
            outs.append(x)
            states.append(hi)
        return params.stack_output(outs, x), tuple(states)
    out, h = params.recur(params.project(x), h)
    out = _unflatten(params.readout(out, x), params.output_shape)  # a cell here, never a Stack
    return out, jax.tree.map(lambda a: _unflatten(a, params.state_shape), h)


def rnn_apply(params: Params, xs: jax.Array, h0: Optional[State] = None, *,
              unroll: Union[int, bool, None] = None, reverse: bool = False, time_major: bool = False,
              lengths: Optional[jax.Array] = None, resets: Optional[jax.Array] = None,
              key: Optional[jax.Array] = None, dropout: float = 0.0, recurrent_dropout: float = 0.0,
              layer_dropout: float = 0.0, remat: Optional[int] = None,
              mode: str = "auto", reset_state: Optional[State] = None, mask: Optional[jax.Array] = None,
              return_states: bool = False, axis_name: Optional[str] = None) -> tuple[Any, State]:
    """Runs a cell, a `Bidirectional` pair or a `Stack` over a sequence.

    For one cell it is, to float32 rounding, this loop over `cell_apply` (with `lengths`, steps past a
    sequence's length keep the state and output zeros):

    >>> import jax, jax.numpy as jnp, jrnn
    >>> cell = jrnn.GRU.init(jax.random.key(0), 3, 4)
    >>> xs, h = jnp.ones((2, 5, 3)), jnp.zeros((2, 4))
    >>> ys, h_T = jrnn.rnn_apply(cell, xs, h)
    >>> outs = []
    >>> for t in range(xs.shape[1]):
    ...     out, h = jrnn.cell_apply(cell, xs[:, t], h)
    ...     outs.append(out)
    >>> bool(jnp.allclose(ys, jnp.stack(outs, axis=1), atol=1e-6) and jnp.allclose(h_T, h, atol=1e-6))
    True

    Under `jax.jit`, the options in `jrnn.STATIC_ARGNAMES` must be static (the rest may be traced,
    dropout rates included): `jax.jit(jrnn.rnn_apply, static_argnames=jrnn.STATIC_ARGNAMES)`.

    Args:
      params: a cell (any `jrnn.Cell`), `Bidirectional` or `Stack`.
      xs: inputs `[..., T, I]`, or `[T, ..., I]` when `time_major`. A cell with spatial axes (`ConvLSTM`)
        takes `[..., T, *input_shape]` and gives `ys [..., T, *output_shape]` and state leaves
        `[..., *state_shape]`; a `Stack` or `Bidirectional` of them runs on flat features.
      h0: initial state `[..., H]` (structured as `jrnn.initial_state(params)`: `LSTMState` for an LSTM;
        a pair for `Bidirectional`, a tuple of per-layer states for a `Stack`, where None parts are
        zeros); None means zeros. Leading batch axes may be omitted and are broadcast: a trainable
        `[H]` array is a learned initial state.
      unroll: 1 (or False) is a `lax.scan`; an int k takes k steps per scan iteration, their input
        projection one matrix product; True unrolls all T steps in Python (one big graph); None
        (the default) picks k from the sizes (4 for `B * H <= 16384`, else 2; measured).
      reverse: run from the last step to the first; `ys` stays in the original time order.
      time_major: `xs` and `ys` are `[T, ..., *]` instead of `[..., T, *]`.
      lengths: int array of the batch shape, for right-padded sequences. Values are clipped to
        `[0, T]`. Outputs at steps `t >= length` are zero and the state stops changing after the
        last valid step; with `reverse`, only each sequence's valid part is reversed. Padded
        steps never read the padding: NaN or inf there reaches no output and no gradient.
      mask: bool `[..., T]` (`[T, ...]` when `time_major`), for any pattern of skipped steps (holes,
        left padding; Keras' `mask`): a step where `mask` is False keeps the state, outputs zeros
        and never reads its input, as a padded step. With `reverse` the unmasked steps run in
        reverse order. `lengths` is the fast common case; given both, a step runs where both allow.
      resets: bool `[..., T]` (`[T, ...]` when `time_major`): the state goes back to `reset_state`
        before step `t` where `resets[..., t]` (an episode starts at `t`; a flag at a padded step
        is ignored). In a reverse run the state goes back after step `t` instead, so every
        episode runs on its own either way.
      reset_state: what `resets` restores, structured and broadcast like `h0`; None means zeros
        (Haiku's `ResetCore`), whatever `h0` is: a learned or carried start is restored only when
        passed here.
      key: PRNG key; dropout is active only when one is given (no key: deterministic inference).
      dropout: input dropout rate, one mask per sequence and layer, reused at every step
        (variational, Keras' `dropout`), applied before the input projection.
      recurrent_dropout: dropout rate on the state entering the recurrent matmul, one mask per
        sequence and layer (Keras' `recurrent_dropout`; cells that declare `recurrent_dropout`).
      layer_dropout: dropout rate on each stacked layer's output but the last, a fresh mask per
        element (PyTorch's `dropout`).
      remat: None, or an int c: the backward pass keeps the state only every c steps and recomputes
        the steps in between (`jax.checkpoint` per segment). `c ~ sqrt(T)` cuts the memory of a long
        sequence by about `sqrt(T)` for about one more forward pass of time.
      mode: "sequential" (scan or unroll, every cell), "parallel" (`jax.lax.associative_scan` over
        the affine steps: cells that declare `linear`, MinGRU, MinLSTM and LRU; `unroll` and `remat`
        do not apply), "chunked" (the same cells: chunks of about `sqrt(T)` steps composed side by
        side, then carried across, about `3 sqrt(T)` loop iterations instead of `T`), or "auto" (the
        default: for those cells, parallel or chunked where the backend and `T` favour it, measured
        in `jrnn/policy.py`; sequential otherwise).
      return_states: return the state after every step instead of the final one (Haiku's
        `return_all_states`): structured as `h0`, each leaf `[..., T, F]` in the layout of `ys`
        (`LSTMState(h, c)` of sequences for an LSTM). A skipped step repeats the state it keeps,
        so `h_T` is the last entry of a forward run (the first of a reverse one).

      axis_name: sequence parallelism for `linear` cells (MinGRU, MinLSTM, LRU), inside `jax.shard_map`
        with `xs` split on its time axis over the mesh axis `axis_name`: `xs` (and `mask`, `resets`)
        are this device's block of `T` steps, in device order; `h0`, `lengths` and the params are the
        whole sequence's. Each device runs its block from a zero state, the blocks' maps (`2 x [B, H]`
        per device) are all-gathered and folded, and each device corrects its block: the same `ys`
        block and final state (on every device) as one device running the whole sequence. Not with
        `resets` and `reverse` together, nor `mode="sequential"`.

    Returns:
      `(ys, h_T)`: outputs `[..., T, F]` (layout as `xs`; F the output width; a pair for a
      `Bidirectional` with `merge=None`) and the final state (same structure as `h0`); with
      `return_states`, `(ys, hs)`.
    """
    _check_params(params)
    _check_static("axis_name", axis_name)
    reverse, time_major = _check_flag("reverse", reverse), _check_flag("time_major", time_major)
    return_states = _check_flag("return_states", return_states)
    _check_static("remat", remat)
    layout = "[T, ..., I]" if time_major else "[..., T, I]"
    xs = _check_input("xs", xs, params, 2, layout)
    rates = _check_dropout(key, dropout, recurrent_dropout, layer_dropout)
    _check_mode(params, mode, rates)
    if axis_name is not None:
        _check_axis_name(params, axis_name, mode, reverse and resets is not None)
    if remat is not None and (isinstance(remat, (bool, np.bool_))
                              or not isinstance(remat, (int, np.integer)) or remat < 1):
        raise ValueError(f"`remat` must be None or a positive int; got {remat!r}")
    if time_major:
        T, batch_shape = xs.shape[0], tuple(xs.shape[1:-1])
    else:
        T, batch_shape = xs.shape[-2], tuple(xs.shape[:-2])
        xs = jnp.moveaxis(xs, -2, 0)
    h0 = _check_state("h0", h0, params, batch_shape)
    B = math.prod(batch_shape)
    if unroll is None:
        width = max(c.hidden_size for c in cells_of(params))
        unroll = policy.default_unroll(width, T, B)
    else:
        unroll = _check_unroll(unroll)
    flat = lambda tree: jax.tree.map(lambda a: a.reshape(B, a.shape[-1]), tree)  # noqa: E731
    if reset_state is not None:
        reset_state = flat(_check_state("reset_state", reset_state, params, batch_shape))
    xs = xs.reshape(T, B, params.input_size)
    shape, where = ((T, *batch_shape), "[T, ...]") if time_major else ((*batch_shape, T), "[..., T]")
    per_step = lambda a: (a if time_major else jnp.moveaxis(a, -1, 0)).reshape(T, B)  # noqa: E731
    valid = None
    if lengths is not None:
        # With `axis_name`, `xs` is one block of T steps and `lengths` count the whole sequence's.
        whole, offset = ((T, 0) if axis_name is None else
                         (T * jax.lax.axis_size(axis_name), jax.lax.axis_index(axis_name) * T))
        valid = valid_steps(_check_lengths(lengths, batch_shape, whole).reshape(B), T, offset)
    if mask is not None:
        mask = per_step(_check_resets("mask", mask, shape, where))
        valid = mask if valid is None else valid & mask
    if valid is not None:
        # Skipped steps compute from zeros, so that whatever the padding holds (NaN, inf) reaches no
        # output and no gradient; the gradient with respect to a skipped input is exactly zero.
        xs = jnp.where(valid[..., None], xs, jnp.zeros_like(xs))
    if resets is not None:
        resets = per_step(_check_resets("resets", resets, shape, where))

    ys, h = run(params, xs, flat(h0),
                k=T if unroll is True else unroll, reverse=reverse, valid=valid, resets=resets,
                key=key, dropout=rates, remat=None if remat is None else int(remat),
                mode=mode, reset_state=reset_state, states=return_states, axis_name=axis_name)

    def unflat(y, shape):
        y = _unflatten(y.reshape(T, *batch_shape, y.shape[-1]), shape)
        return y if time_major else jnp.moveaxis(y, 0, len(batch_shape))

    out_shape, state_shape = _declared(params, "output_shape"), _declared(params, "state_shape")
    ys = tuple(unflat(y, out_shape) for y in ys) if isinstance(ys, tuple) else unflat(ys, out_shape)
    if return_states:
        return ys, jax.tree.map(lambda a: unflat(a, state_shape), h)
    return ys, jax.tree.map(lambda a: _unflatten(a.reshape(*batch_shape, a.shape[-1]), state_shape), h)
