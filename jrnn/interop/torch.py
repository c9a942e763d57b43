"""PyTorch `nn.RNN`/`nn.LSTM`/`nn.GRU` modules and state dicts to jrnn params and back.

Layouts: `kernel = weight_ih.T` and `recurrent_kernel = weight_hh.T`; LSTM gate blocks `i, f, g, o` are
jrnn's `i, f, c, o`; GRU blocks `r, z, n` become `z, r, h` (the first two swapped). The SimpleRNN and
LSTM have one bias, `bias_ih + bias_hh`; the GRU keeps both as `bias[0]` and `bias[1]`. PyTorch's GRU is
jrnn's `reset_after=True`. An LSTM with `proj_size=P` has `projection = weight_hr.T [H, P]` (and
`weight_hh [4H, P]`). Torch is imported inside the functions only.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from jrnn.cell import Cell
from jrnn.cells.base import check_choice
from jrnn.cells.gru import GRU
from jrnn.cells.lstm import LSTM
from jrnn.cells.simple_rnn import SimpleRNN
from jrnn.layers import Bidirectional, Stack, check_no_functions

# torch's `mode` -> (jrnn class, number of gate blocks G, SimpleRNN activation)
_MODES = {
    "RNN_TANH": (SimpleRNN, 1, "tanh"),
    "RNN_RELU": (SimpleRNN, 1, "relu"),
    "LSTM": (LSTM, 4, None),
    "GRU": (GRU, 3, None),
}
_KEY = re.compile(r"(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)(?:_l(\d+)(_reverse)?)?")
_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")  # torch's order in a state dict


def from_torch(module_or_state_dict, *, nonlinearity=None):
    """jrnn params holding the weights of a PyTorch recurrent module.

    Args:
      module_or_state_dict: an `nn.RNN`, `nn.LSTM` or `nn.GRU` (any `num_layers`, `bidirectional`,
        `bias`, and the LSTM's `proj_size`; `batch_first` and `dropout` do not concern weights), an
        `nn.RNNCell`/`LSTMCell`/`GRUCell`, or the `state_dict()` of one of them. For a state dict the
        kind comes from the shapes: `weight_ih_l0 [G*H, I]` with G = 1 (RNN), 3 (GRU) or 4 (LSTM), an
        LSTM with projections from `weight_hr_l0 [P, H]`; `num_layers` from the `_l<k>` keys,
        `bidirectional` from the `_reverse` keys, `bias` from the `bias_*` keys.
      nonlinearity: "tanh" or "relu", the activation of an RNN state dict (default "tanh"); for a
        module, None or the module's own.

    Returns:
      A cell (`SimpleRNN`, `LSTM`, `GRU` with `reset_after=True`) for one unidirectional layer or a
      torch cell; `Bidirectional(forward, backward, "concat")` for one bidirectional layer; else a
      `Stack` of `num_layers` such layers. Arrays are jnp copies in the torch dtype (float64 becomes
      float32 unless `jax_enable_x64`), e.g.
      `kernel [I, G*H]`, `recurrent_kernel [H, G*H]`, `bias [G*H]` (`[2, 3H]` for the GRU); with
      `proj_size=P`, LSTMs with `recurrent_kernel [P, 4H]` and `projection [H, P]`, and the layers
      after the first take `P` inputs (`2P` bidirectional).

    Raises:
      TypeError: a module of another type.
      ValueError: a state dict with a missing, unexpected or misshapen key.
    """
    import torch

    if nonlinearity is not None:
        check_choice("nonlinearity", nonlinearity, ("tanh", "relu"))
    obj = module_or_state_dict
    if isinstance(obj, torch.nn.Module):
        mode = _module_mode(obj, torch)
        state = obj.state_dict()
    elif isinstance(obj, Mapping):
        mode, state = None, obj
    else:
        raise TypeError("`module_or_state_dict` must be an nn.RNN, nn.LSTM or nn.GRU module (or cell) or "
                        f"a state dict; got {type(obj).__name__}")
    arrays = {key: _to_numpy(key, value, torch) for key, value in state.items()}
    layers, mode = _parse(arrays, mode, nonlinearity)
    if not isinstance(layers[0], list):  # a torch cell
        return layers[0]
    layers = [Bidirectional(*dirs, "concat") if len(dirs) == 2 else dirs[0] for dirs in layers]
    return layers[0] if len(layers) == 1 else Stack(tuple(layers), False)


def to_torch(params, *, cell=False):
    """The PyTorch state dict of jrnn params: the inverse of `from_torch`.

    Args:
      params: a `SimpleRNN` (activation "tanh" or "relu"), `LSTM` (with a `projection`: `proj_size`
        `P < H`, as `nn.LSTM` requires), `GRU` (`reset_after=True`), a
        `Bidirectional` of two such cells with the same settings and `merge="concat"`, or a `Stack` of
        layers that are all the same kind, size and bias setting, all bidirectional or none, with
        `residual=False` (PyTorch's `num_layers` stacks one module type; all with the same `proj_size`).
      cell: give a cell's keys for `nn.RNNCell`/`LSTMCell`/`GRUCell` (`weight_ih`, ...) instead of the
        layer keys (`weight_ih_l0`, ...); not for an LSTM with a projection (`nn.LSTMCell` has none).

    Returns:
      An `OrderedDict` of torch tensors (the params' dtype) that `load_state_dict(..., strict=True)` of
      the matching module accepts: `weight_ih_l<k>[_reverse] [G*H, I_k]`, `weight_hh_l<k>[...] [G*H, H]`,
      and `bias_ih_l<k>[...]`, `bias_hh_l<k>[...] [G*H]` when the cells have a bias; an LSTM with a
      projection has `weight_hh_l<k>[...] [4H, P]` and `weight_hr_l<k>[...] [P, H]`, for
      `nn.LSTM(..., proj_size=P)`. The SimpleRNN and
      LSTM bias goes to `bias_ih` and `bias_hh` is zeros, so `from_torch(to_torch(p))` equals `p` exactly.

    Raises:
      TypeError: `params` is not jrnn params, or holds a cell PyTorch has no layer for (MinGRU, MinLSTM,
        LRU, a user's cell).
      ValueError: params PyTorch cannot express, with what differs.
    """
    import torch

    layers = _torch_layers(params)
    if cell and not (len(layers) == 1 and len(layers[0]) == 1):
        raise ValueError(f"`cell=True` needs one cell; got {type(params).__name__}")
    if cell and _describe(layers[0][0])["proj_size"]:
        raise ValueError("`cell=True` needs a cell PyTorch has: nn.LSTMCell has no projection; got an LSTM "
                         f"with `projection` {tuple(layers[0][0].projection.shape)}")
    out = OrderedDict()
    for k, dirs in enumerate(layers):
        for d, c in enumerate(dirs):
            suffix = "" if cell else f"_l{k}" + ("_reverse" if d else "")
            for name, array in zip(_NAMES, _torch_arrays(c), strict=True):
                if array is not None:
                    out[name + suffix] = _to_tensor(array, torch)
    return out


# ---------------------------------------------------------------------------------------------
# from_torch


def _module_mode(module, torch) -> str:
    """torch's mode string ("RNN_TANH", "LSTM", ...) of a recurrent module or cell."""
    if isinstance(module, torch.nn.RNNBase):
        mode = module.mode
    elif isinstance(module, torch.nn.LSTMCell):
        mode = "LSTM"
    elif isinstance(module, torch.nn.GRUCell):
        mode = "GRU"
    elif isinstance(module, torch.nn.RNNCell):
        mode = "RNN_" + module.nonlinearity.upper()
    else:
        mode = None
    if mode not in _MODES:
        raise TypeError("`module_or_state_dict` must be an nn.RNN, nn.LSTM or nn.GRU module (or cell) or "
                        f"a state dict; got {type(module).__name__}")
    return mode


def _to_numpy(key, value, torch) -> np.ndarray:
    """A state dict entry as a numpy array (bfloat16 through float32, which is exact)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        array = (value.float().numpy().astype(jnp.bfloat16) if value.dtype == torch.bfloat16
                 else value.numpy())
    else:
        array = np.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise TypeError(f"State dict entry `{key}` must be floating; got dtype {array.dtype}")
    return array


def _parse(arrays: dict, mode, nonlinearity):
    """Checks the keys and shapes; returns `(layers, mode)` where `layers` is a list of per-layer lists
    of cells (`[forward]` or `[forward, backward]`), or `[cell]` for a torch cell's keys."""
    for key in arrays:
        if _KEY.fullmatch(key) is None:
            raise ValueError(
                f"Unexpected state dict key `{key}`; expected weight_ih_l<k>, weight_hh_l<k>, bias_ih_l<k>, "
                "bias_hh_l<k>, weight_hr_l<k> (each optionally with _reverse) of an nn.RNN/LSTM/GRU, or "
                "weight_ih, weight_hh, bias_ih, bias_hh of a cell (strip any prefix such as 'rnn.')")
    is_cell = "weight_ih" in arrays
    first = "" if is_cell else "_l0"
    for name in ("weight_ih", "weight_hh"):
        if name + first not in arrays:
            raise ValueError(f"The state dict has no `{name}{first}` key")
    w_ih, w_hh = arrays["weight_ih" + first], arrays["weight_hh" + first]
    w_hr = None if is_cell else arrays.get("weight_hr_l0")
    if w_hr is not None:  # an LSTM with projections: weight_hh [4H, P], weight_hr [P, H]
        if (w_hr.ndim != 2 or 0 in w_hr.shape or w_hh.ndim != 2 or w_ih.ndim != 2
                or tuple(w_hh.shape) != (4 * w_hr.shape[1], w_hr.shape[0]) or w_ih.shape[0] != w_hh.shape[0]):
            raise ValueError(
                "`weight_ih_l0`, `weight_hh_l0` and `weight_hr_l0` of an LSTM with projections must have "
                f"shapes [4H, I], [4H, P] and [P, H]; got {tuple(w_ih.shape)}, {tuple(w_hh.shape)} and "
                f"{tuple(w_hr.shape)}")
        P, H, G = w_hr.shape[0], w_hr.shape[1], 4
    elif (w_hh.ndim != 2 or w_hh.shape[1] == 0 or w_hh.shape[0] % w_hh.shape[1]
            or w_hh.shape[0] // w_hh.shape[1] not in (1, 3, 4)
            or w_ih.ndim != 2 or w_ih.shape[0] != w_hh.shape[0]):
        raise ValueError(
            f"`weight_ih{first}` and `weight_hh{first}` must have shapes [G*H, I] and [G*H, H] with G = 1 "
            f"(RNN), 3 (GRU) or 4 (LSTM); got {tuple(w_ih.shape)} and {tuple(w_hh.shape)}")
    else:
        P, H = 0, w_hh.shape[1]
        G = w_hh.shape[0] // H
    R = P or H  # the width of `h`: each layer's output, per direction
    inferred = {1: "RNN_" + (nonlinearity or "tanh").upper(), 3: "GRU", 4: "LSTM"}[G]
    if mode is None:
        mode = inferred
    elif nonlinearity is not None and mode.startswith("RNN") and mode != "RNN_" + nonlinearity.upper():
        raise ValueError(f"`nonlinearity` {nonlinearity!r} differs from the module's "
                         f"{mode[4:].lower()!r}; leave it None for a module")
    if nonlinearity is not None and not mode.startswith("RNN"):
        raise ValueError(f"`nonlinearity` applies to an RNN only; got {nonlinearity!r} for a {mode}")

    if is_cell:
        num_layers, suffixes = 1, [""]
    else:
        num_layers = 1 + max(int(_KEY.fullmatch(k).group(2) or 0) for k in arrays)
        suffixes = ["", "_reverse"] if any(k.endswith("_reverse") for k in arrays) else [""]
    has_bias = "bias_ih" + first in arrays or "bias_hh" + first in arrays
    names = _NAMES[:4 if has_bias else 2] + (_NAMES[4:] if P else ())
    expected = {}  # key -> shape, in torch's order
    for k in range(num_layers):
        I = w_ih.shape[1] if k == 0 else R * len(suffixes)
        shapes = {"weight_ih": (G * H, I), "weight_hh": (G * H, R), "bias_ih": (G * H,), "bias_hh": (G * H,),
                  "weight_hr": (P, H)}
        for s in suffixes:
            layer = s if is_cell else f"_l{k}{s}"
            for name in names:
                expected[name + layer] = shapes[name]
    for key in arrays:
        if key not in expected:
            raise ValueError(f"Unexpected state dict key `{key}`: the keys `weight_ih{first}`... give "
                             f"{num_layers} layer(s), {'bi' if len(suffixes) == 2 else 'uni'}directional, "
                             f"{'with' if has_bias else 'without'} bias, "
                             f"{f'proj_size {P}' if P else 'no projection'}, and a cell's keys have no _l<k>")
    dtype = w_ih.dtype
    for key, shape in expected.items():
        if key not in arrays:
            raise ValueError(f"The state dict has no `{key}` key")
        if tuple(arrays[key].shape) != shape:
            raise ValueError(f"State dict entry `{key}` must have shape {shape}; "
                             f"got {tuple(arrays[key].shape)}")
        if arrays[key].dtype != dtype:
            raise ValueError(f"State dict entry `{key}` has dtype {arrays[key].dtype}; "
                             f"`weight_ih{first}` has {dtype}: all entries must share one dtype")

    def cell(layer):
        return _cell(mode, *(arrays.get(name + layer) for name in _NAMES))

    if is_cell:
        return [cell("")], mode
    return [[cell(f"_l{k}{s}") for s in suffixes] for k in range(num_layers)], mode


def _swap_rz(a: np.ndarray) -> np.ndarray:
    """Swaps the first two of three gate blocks along axis 0: torch's `r, z, n` <-> Keras' `z, r, h`."""
    r, z, n = np.split(a, 3, axis=0)
    return np.concatenate([z, r, n], axis=0)


def _cell(mode, w_ih, w_hh, b_ih, b_hh, w_hr):
    """One jrnn cell from torch-layout numpy arrays (copies)."""
    cls, _, activation = _MODES[mode]
    if cls is GRU:
        kernel, recurrent = _swap_rz(w_ih).T, _swap_rz(w_hh).T
        bias = None if b_ih is None else np.stack([_swap_rz(b_ih), _swap_rz(b_hh)])
        return GRU(jnp.array(kernel), jnp.array(recurrent), _jnp(bias), True)
    # A zero `bias_hh` (as `to_torch` writes) adds nothing: skipping the sum keeps round trips bitwise.
    bias = None if b_ih is None else (b_ih if not np.any(b_hh) else b_ih + b_hh)
    kernel, recurrent, bias = jnp.array(w_ih.T), jnp.array(w_hh.T), _jnp(bias)
    if cls is SimpleRNN:
        return SimpleRNN(kernel, recurrent, bias, activation)
    return LSTM(kernel, recurrent, bias, None if w_hr is None else jnp.array(w_hr.T))


def _jnp(a):
    return None if a is None else jnp.array(a)


# ---------------------------------------------------------------------------------------------
# to_torch


def _describe(c) -> dict:
    """What a torch module fixes for all its cells."""
    return {"kind": type(c).__name__, "activation": getattr(c, "activation", None),
            "hidden_size": c.hidden_size, "proj_size": c.proj_size if isinstance(c, LSTM) else 0,
            "bias": c.bias is not None, "dtype": str(c.dtype)}


def _diff(a: dict, b: dict, what_a: str, what_b: str) -> str:
    return ", ".join(f"{k} {a[k]!r} ({what_a}) vs {b[k]!r} ({what_b})" for k in a if a[k] != b[k])


def _check_cell(c, where: str) -> None:
    if not isinstance(c, Cell):
        raise TypeError(f"{where} must be a jrnn cell (SimpleRNN, LSTM, GRU); got {type(c).__name__}")
    if not isinstance(c, (SimpleRNN, LSTM, GRU)):
        raise TypeError(f"{where} is of type {type(c).__name__}: PyTorch has no such layer (nn.RNN, "
                        "nn.LSTM and nn.GRU hold jrnn's SimpleRNN, LSTM and GRU only)")
    if isinstance(c, SimpleRNN) and c.activation not in ("tanh", "relu"):
        raise ValueError(f"{where}: SimpleRNN `activation` {c.activation!r} has no PyTorch equivalent; "
                         "nn.RNN supports 'tanh' and 'relu'")
    if isinstance(c, LSTM) and c.proj_size >= c.hidden_size:
        raise ValueError(f"{where}: `proj_size` (={c.proj_size}) must be smaller than `hidden_size` "
                         f"(={c.hidden_size}) for PyTorch (nn.LSTM refuses proj_size >= hidden_size)")
    if isinstance(c, GRU) and not c.reset_after:
        raise ValueError(f"{where}: a GRU with `reset_after=False` has no PyTorch equivalent (nn.GRU applies "
                         "the reset gate after the recurrent matmul, i.e. `reset_after=True`)")


def _layer_cells(layer, where: str) -> list:
    """`[cell]` or `[forward, backward]` of one layer, checked."""
    if isinstance(layer, Bidirectional):
        if layer.merge != "concat":
            raise ValueError(f"{where}: `merge` must be 'concat' for PyTorch (a bidirectional module "
                             f"concatenates its directions); got {layer.merge!r}")
        _check_cell(layer.forward, f"{where}.forward")
        _check_cell(layer.backward, f"{where}.backward")
        fwd, bwd = _describe(layer.forward), _describe(layer.backward)
        fwd["input_size"], bwd["input_size"] = layer.forward.input_size, layer.backward.input_size
        if fwd != bwd:
            raise ValueError(f"{where}: the two directions of a PyTorch module share their settings; "
                             f"got {_diff(fwd, bwd, 'forward', 'backward')}")
        return [layer.forward, layer.backward]
    _check_cell(layer, where)
    return [layer]


def _torch_layers(params) -> list:
    """`params` as a list of layers, each `[cell]` or `[forward, backward]`; checks PyTorch can hold it."""
    if isinstance(params, Stack):
        if params.residual or params.skip:
            raise ValueError("A `Stack` with `residual=True` or `skip=True` has no PyTorch equivalent "
                             "(num_layers stacks without skip connections)")
        check_no_functions(params, "PyTorch")
        if not params.layers:
            raise ValueError("`params` is a Stack with no layers")
        layers = [_layer_cells(layer, f"`params.layers[{k}]`") for k, layer in enumerate(params.layers)]
        first = dict(_describe(layers[0][0]), bidirectional=len(layers[0]) == 2)
        for k, dirs in enumerate(layers[1:], 1):
            this = dict(_describe(dirs[0]), bidirectional=len(dirs) == 2)
            if this != first:
                raise ValueError("All layers of a `Stack` must have the same settings for PyTorch "
                                 f"(one module type): {_diff(first, this, 'layer 0', f'layer {k}')}")
            want = (first["proj_size"] or first["hidden_size"]) * len(dirs)
            if dirs[0].input_size != want:
                raise ValueError(f"`params.layers[{k}]` takes {dirs[0].input_size} input features; PyTorch "
                                 f"feeds it the previous layer's {want}")
        return layers
    if isinstance(params, (Bidirectional, Cell)):
        return [_layer_cells(params, "`params`")]
    raise TypeError("`params` must be a jrnn cell (SimpleRNN, LSTM, GRU), Bidirectional or Stack; "
                    f"got {type(params).__name__}")


def _torch_arrays(c) -> list:
    """`[weight_ih, weight_hh, bias_ih, bias_hh, weight_hr]` of a cell as numpy arrays in torch's layout."""
    kernel, recurrent = np.asarray(c.kernel), np.asarray(c.recurrent_kernel)
    bias = None if c.bias is None else np.asarray(c.bias)
    if isinstance(c, GRU):
        w_ih, w_hh = _swap_rz(kernel.T), _swap_rz(recurrent.T)
        b_ih, b_hh = (None, None) if bias is None else (_swap_rz(bias[0]), _swap_rz(bias[1]))
    else:
        w_ih, w_hh = kernel.T, recurrent.T
        b_ih, b_hh = (None, None) if bias is None else (bias, np.zeros_like(bias))
    w_hr = np.asarray(c.projection).T if isinstance(c, LSTM) and c.projection is not None else None
    return [w_ih, w_hh, b_ih, b_hh, w_hr]


def _to_tensor(a: np.ndarray, torch):
    """A writable C-contiguous copy as a torch tensor (bfloat16 through float32, which is exact)."""
    if a.dtype == jnp.bfloat16:
        return torch.from_numpy(np.array(a, np.float32, order="C")).to(torch.bfloat16)
    return torch.from_numpy(np.array(a, order="C", copy=True))
