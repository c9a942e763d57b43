"""jrnn: functional recurrent neural networks for JAX.

Params are pytrees made by `Kind.init`; `cell_apply` is one pure step and `rnn_apply` runs a cell
over a sequence by `lax.scan` or an unrolled loop. `Cell` is the interface of every cell, a user's own
included. This module is the whole public API.
"""

from importlib.metadata import PackageNotFoundError, version

from jrnn.cell import Cell
from jrnn.cells.conv_lstm import ConvLSTM
from jrnn.cells.gru import GRU
from jrnn.cells.lru import LRU
from jrnn.cells.lstm import LSTM, LSTMState
from jrnn.cells.min_gru import MinGRU
from jrnn.cells.min_lstm import MinLSTM
from jrnn.cells.simple_rnn import SimpleRNN
from jrnn.checkpoint import load, register, save
from jrnn.interop.keras import from_keras, to_keras
from jrnn.interop.torch import from_torch, to_torch
from jrnn.layers import Bidirectional, Stack
from jrnn.rnn import STATIC_ARGNAMES, cell_apply, initial_state, rnn_apply
from jrnn.sequences import last_valid, masked_mean, sequence_mask

try:
    __version__ = version("jrnn")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "STATIC_ARGNAMES",
    "Bidirectional",
    "Cell",
    "ConvLSTM",
    "Stack",
    "GRU",
    "LSTM",
    "LSTMState",
    "MinGRU",
    "MinLSTM",
    "LRU",
    "SimpleRNN",
    "cell_apply",
    "initial_state",
    "from_keras",
    "from_torch",
    "last_valid",
    "load",
    "masked_mean",
    "register",
    "rnn_apply",
    "save",
    "sequence_mask",
    "to_keras",
    "to_torch",
]
