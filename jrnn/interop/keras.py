"""Keras `SimpleRNN`/`LSTM`/`GRU`/`ConvLSTM1D/2D/3D`/`Bidirectional` layers to jrnn params and back to
`set_weights` lists.

jrnn's params have Keras' layout (`kernel [I, G*H]`, `recurrent_kernel [H, G*H]`, gate columns
`i, f, c, o` and `z, r, h`), so conversion copies the arrays and checks the settings jrnn fixes (the
LSTM and GRU activations). Keras is imported inside the functions only.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jrnn.cell import Cell
from jrnn.cells.conv_lstm import ConvLSTM
from jrnn.cells.gru import GRU
from jrnn.cells.lstm import LSTM
from jrnn.cells.simple_rnn import ACTIVATIONS, SimpleRNN
from jrnn.layers import MERGE_MODES, Bidirectional, Stack, check_no_functions

_KINDS = ("a Keras SimpleRNN, LSTM, GRU, ConvLSTM1D/2D/3D or Bidirectional layer, a SimpleRNNCell, "
          "LSTMCell or GRUCell, or an RNN layer of such cells")


def from_keras(layer):
    """jrnn params holding the weights of a built Keras recurrent layer.

    Args:
      layer: a built `keras.layers.SimpleRNN`, `LSTM` or `GRU` (either `reset_after`), their cells, a
        `keras.layers.RNN` of such a cell (or of a list of them: `StackedRNNCells`), or a
        `keras.layers.Bidirectional` of these; or a built `keras.layers.ConvLSTM1D`, `ConvLSTM2D` or
        `ConvLSTM3D` with `data_format="channels_last"` (any `padding`, `strides`, `dilation_rate`;
        not inside a `Bidirectional`). The SimpleRNN `activation` must be "tanh", "relu",
        "sigmoid" or "linear"; the LSTM and GRU must keep `activation="tanh"` and
        `recurrent_activation="sigmoid"`, the ConvLSTMs too. Settings that do not concern weights
        (`return_sequences`, `dropout`, `unroll`, ...) are ignored.

    Returns:
      A cell (`SimpleRNN`, `LSTM`, `GRU`) with `kernel [I, G*H]`, `recurrent_kernel [H, G*H]` and
      `bias [G*H]` (`[2, 3H]` for a GRU with `reset_after`) or None, jnp copies of Keras' variables;
      `ConvLSTM` (kernel `[*k, C, 4F]`, recurrent_kernel `[*k, F, 4F]`, bias `[4F]` or None, and the
      layer's spatial input shape, strides, padding and dilation);
      `Bidirectional(forward, backward, merge)` with `merge` = Keras' `merge_mode`; `Stack` of cells for
      `StackedRNNCells`.

    Raises:
      TypeError: another layer class (e.g. `Conv2D`), or a `Bidirectional` of ConvLSTMs.
      ValueError: an unbuilt layer, an unsupported setting (a ConvLSTM's `data_format`), or
        `go_backwards=True` outside a `Bidirectional` (jrnn params have no direction: run them with
        `rnn_apply(..., reverse=True)`; Keras gives the outputs in reversed time order, jrnn in the
        original one).
    """
    import keras

    if isinstance(layer, _conv_layers(keras)):
        return _from_conv_lstm(layer, keras)
    if isinstance(layer, keras.layers.Bidirectional):
        _check_built(layer)
        if isinstance(layer.forward_layer, _conv_layers(keras)):
            raise TypeError("`layer` is a Bidirectional of ConvLSTM layers: jrnn's Bidirectional joins "
                            "flat features, not channels; convert the two layers and run each with "
                            "`rnn_apply` (reverse=True for the backward one)")
        forward, backward = layer.forward_layer, layer.backward_layer
        if forward.go_backwards or not backward.go_backwards:
            raise ValueError("`layer` is a Bidirectional whose forward layer has `go_backwards=True`: "
                             "jrnn's Bidirectional runs its first cell forward; wrap a layer with "
                             "go_backwards=False")
        if layer.merge_mode not in MERGE_MODES:
            raise ValueError(f"Unknown `merge_mode` {layer.merge_mode!r}; expected one of {MERGE_MODES}")
        return Bidirectional(_from_rnn(forward, keras, backward_ok=False),
                             _from_rnn(backward, keras, backward_ok=True), layer.merge_mode)
    return _from_rnn(layer, keras, backward_ok=False)


def to_keras(params):
    """The `layer.set_weights` list of jrnn params: the inverse of `from_keras`.

    Args:
      params: a cell (`SimpleRNN`, `LSTM`, `GRU`, `ConvLSTM`), a `Bidirectional` of cells, or a `Stack`
        without `residual`.

    Returns:
      A list of numpy arrays (copies, the params' dtype): `[kernel [I, G*H], recurrent_kernel [H, G*H],
      bias]` for a cell (no bias when it is None; `[kernel [*k, C, 4F], recurrent_kernel [*k, F, 4F],
      bias [4F]]` for a ConvLSTM, which a Keras ConvLSTM layer of the same settings takes); for a
      `Bidirectional`, the forward cell's then the backward cell's, as Keras'
      `Bidirectional.get_weights()` orders them; for a `Stack`, each layer's in
      turn, which `keras.layers.RNN([cells...])` and a `keras.Sequential` of the layers both take.

    Raises:
      TypeError: `params` is not jrnn params, or holds a cell Keras has no layer for (MinGRU, MinLSTM,
        LRU, a user's cell, an LSTM with a `projection`).
      ValueError: a `Stack` with `residual=True` (Keras' recurrent layers have no skip connections).
    """
    if isinstance(params, Cell):
        if not isinstance(params, (SimpleRNN, LSTM, GRU, ConvLSTM)):
            raise TypeError(f"`params` is of type {type(params).__name__}: Keras has no such layer (its "
                            "SimpleRNN, LSTM, GRU and ConvLSTM layers hold jrnn's SimpleRNN, LSTM, GRU "
                            "and ConvLSTM only)")
        if isinstance(params, LSTM) and params.projection is not None:
            raise TypeError(f"`params` is an LSTM with a `projection` {tuple(params.projection.shape)} "
                            f"(proj_size={params.proj_size}): Keras' LSTM has no output projection")
        return [np.array(a, copy=True) for a in (params.kernel, params.recurrent_kernel, params.bias)
                if a is not None]
    if isinstance(params, Bidirectional):
        return to_keras(params.forward) + to_keras(params.backward)
    if isinstance(params, Stack):
        if params.residual or params.skip:
            raise ValueError("A `Stack` with `residual=True` or `skip=True` has no Keras equivalent "
                             "(stacked recurrent layers have no skip connections)")
        check_no_functions(params, "Keras")
        return [w for layer in params.layers for w in to_keras(layer)]
    raise TypeError("`params` must be a jrnn cell (SimpleRNN, LSTM, GRU, ConvLSTM), Bidirectional or Stack; "
                    f"got {type(params).__name__}")


def _check_built(layer) -> None:
    if not layer.built:
        raise ValueError(f"`layer` ({type(layer).__name__}) is not built, so it has no weights yet: call "
                         "`layer.build((batch, T, I))` or call it on an input first")


def _from_rnn(layer, keras, *, backward_ok: bool):
    """A plain recurrent layer or a cell to jrnn params."""
    cells = (keras.layers.SimpleRNNCell, keras.layers.LSTMCell, keras.layers.GRUCell)
    if isinstance(layer, keras.layers.RNN):
        cell = layer.cell
        ok = isinstance(cell, cells) or (isinstance(cell, keras.layers.StackedRNNCells)
                                         and all(isinstance(c, cells) for c in cell.cells))
        if not ok:
            raise TypeError(f"`layer` must be {_KINDS}; got {type(layer).__name__} "
                            f"(cell {type(cell).__name__})")
        _check_built(layer)
        if layer.go_backwards and not backward_ok:
            raise ValueError("`layer` has `go_backwards=True`; jrnn params have no direction: convert the "
                             "layer with go_backwards=False and run it with `rnn_apply(..., reverse=True)` "
                             "(which keeps the outputs in the original time order; Keras reverses them)")
    elif isinstance(layer, cells):
        cell = layer
    else:
        raise TypeError(f"`layer` must be {_KINDS}; got {type(layer).__name__}")
    _check_built(cell)
    if isinstance(cell, keras.layers.StackedRNNCells):
        return Stack(tuple(_from_cell(c, keras) for c in cell.cells), False)
    return _from_cell(cell, keras)


def _activation_name(fn) -> str:
    return getattr(fn, "__name__", repr(fn))


def _check_activation(cell, setting: str, allowed: tuple) -> str:
    name = _activation_name(getattr(cell, setting))
    if name not in allowed:
        raise ValueError(f"Unsupported `{setting}` {name!r} of the Keras {type(cell).__name__}; jrnn "
                         f"supports {allowed if len(allowed) > 1 else repr(allowed[0])}")
    return name


def _conv_layers(keras) -> tuple:
    return (keras.layers.ConvLSTM1D, keras.layers.ConvLSTM2D, keras.layers.ConvLSTM3D)


def _from_conv_lstm(layer, keras) -> ConvLSTM:
    """A Keras `ConvLSTM1D/2D/3D` layer to `ConvLSTM` params."""
    _check_built(layer)
    cell = layer.cell
    if cell.data_format != "channels_last":
        raise ValueError(f"Unsupported `data_format` {cell.data_format!r} of the Keras "
                         f"{type(layer).__name__}; jrnn's ConvLSTM is 'channels_last'")
    if layer.go_backwards:
        raise ValueError("`layer` has `go_backwards=True`; jrnn params have no direction: convert the "
                         "layer with go_backwards=False and run it with `rnn_apply(..., reverse=True)` "
                         "(which keeps the outputs in the original time order; Keras reverses them)")
    _check_activation(cell, "activation", ("tanh",))
    _check_activation(cell, "recurrent_activation", ("sigmoid",))
    weights = [cell.kernel, cell.recurrent_kernel] + ([cell.bias] if cell.use_bias else [None])
    kernel, recurrent, bias = (None if v is None else jnp.array(keras.ops.convert_to_numpy(v.value))
                               for v in weights)
    return ConvLSTM(kernel, recurrent, bias, tuple(int(d) for d in cell.spatial_dims), tuple(cell.strides),
                    cell.padding, tuple(cell.dilation_rate))


def _from_cell(cell, keras):
    weights = [cell.kernel, cell.recurrent_kernel] + ([cell.bias] if cell.use_bias else [None])
    kernel, recurrent, bias = (None if v is None else jnp.array(keras.ops.convert_to_numpy(v.value))
                               for v in weights)
    if isinstance(cell, keras.layers.SimpleRNNCell):
        activation = _check_activation(cell, "activation", tuple(ACTIVATIONS))
        return SimpleRNN(kernel, recurrent, bias, activation)
    _check_activation(cell, "activation", ("tanh",))
    _check_activation(cell, "recurrent_activation", ("sigmoid",))
    if isinstance(cell, keras.layers.LSTMCell):
        return LSTM(kernel, recurrent, bias)
    return GRU(kernel, recurrent, bias, bool(cell.reset_after))
