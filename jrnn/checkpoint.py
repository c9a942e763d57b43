"""`save` and `load`: one self-describing file per params pytree, written atomically."""


def save(path, params):
    raise NotImplementedError


def load(path):
    raise NotImplementedError
