"""Composites: `Bidirectional` (a forward and a backward cell) and `Stack` (a tuple of layers).

Both are frozen dataclass pytrees like the cells; `rnn_apply` runs them (see `jrnn/rnn.py`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Union

import jax

from jrnn.cells.base import CellBase, check_choice, check_positive_int

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

    @property
    def output_size(self) -> int:
        return 2 * self.forward.output_size if self.merge == "concat" else self.forward.output_size


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

    @property
    def output_size(self) -> int:
        return self.layers[-1].output_size


Layer = Union[CellBase, Bidirectional]
Params = Union[CellBase, Bidirectional, Stack]
