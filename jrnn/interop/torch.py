"""PyTorch `nn.RNN`/`nn.LSTM`/`nn.GRU` modules and state dicts to jrnn params and back."""


def from_torch(module_or_state_dict, *, nonlinearity=None):
    raise NotImplementedError


def to_torch(params):
    raise NotImplementedError
