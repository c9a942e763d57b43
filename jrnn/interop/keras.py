"""Keras `SimpleRNN`/`LSTM`/`GRU`/`Bidirectional` layers to jrnn params and back to `set_weights` lists."""


def from_keras(layer):
    raise NotImplementedError


def to_keras(params):
    raise NotImplementedError
