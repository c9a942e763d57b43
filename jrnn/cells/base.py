"""What the built-in cells share: their pytree registration, the checks of their fields (where they are
built) and of `init`'s arguments, and `MatmulCell`, the base of the cells with a recurrent matmul
(SimpleRNN, LSTM, GRU)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Union

import jax
import jax.numpy as jnp
import numpy as np

from jrnn.cell import Cell, lift
from jrnn.initializers import INITIALIZERS

# A dimension of a field's layout: a size, a symbol ("I"), or a symbol times a factor (("H", 4) is 4H).
Dim = Union[int, str, tuple[str, int]]


def pytree_dataclass(cls: type) -> type:
    """Registers the frozen dataclass `cls` as a pytree: array fields are children, fields with
    `metadata=dict(static=True)` are static. Unflattening does not run `__init__` (nor `__post_init__`'s
    checks): JAX rebuilds params with any leaves (`jax.tree.map` to None, tracers, `vmap`'s stacked
    arrays, `ShapeDtypeStruct`), and only what a user builds is checked."""
    data = tuple(f.name for f in dataclasses.fields(cls) if not f.metadata.get("static"))
    static = tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("static"))

    def flatten_with_keys(obj):
        return [(jax.tree_util.GetAttrKey(n), getattr(obj, n)) for n in data], tuple(
            getattr(obj, n) for n in static)

    def flatten(obj):
        return [getattr(obj, n) for n in data], tuple(getattr(obj, n) for n in static)

    def unflatten(aux, children):
        obj = object.__new__(cls)
        for n, v in (*zip(data, children, strict=True), *zip(static, aux, strict=True)):
            object.__setattr__(obj, n, v)
        return obj

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    return cls


# --- arguments of `init` --------------------------------------------------------------------------------
def check_positive_int(name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive int; got {value!r}")
    return int(value)


def check_choice(name: str, value, choices):
    try:
        known = value in choices
    except TypeError:  # unhashable
        known = False
    if not known:
        raise ValueError(f"Unknown `{name}` {value!r}; expected one of {tuple(choices)}")
    return value


def check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool; got {value!r}")
    return bool(value)


def check_real(name: str, value) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{name}` must be a real number; got {value!r}")
    return float(value)


def check_key(key) -> None:
    """`key` is one PRNG key: `jax.random.key(0)` (typed) or `jax.random.PRNGKey(0)` (raw uint32 `[2]`).
    The one check of `init`'s and `rnn_apply`'s keys."""
    dtype = getattr(key, "dtype", None)
    shape = tuple(getattr(key, "shape", ()))
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if shape:
            raise ValueError(f"`key` must be one PRNG key; got a key array of shape {shape} "
                             "(split it, or `jax.vmap` over it)")
        return
    if dtype is not None and str(dtype) == "uint32" and shape == (2,):
        return
    what = f"an array of dtype {dtype} and shape {shape}" if dtype is not None else repr(key)
    raise TypeError(f"`key` must be a PRNG key (jax.random.key(0) or jax.random.PRNGKey(0)); got {what}")


def check_dtype(dtype) -> np.dtype:
    """A real floating dtype that JAX makes as asked (float64 only with `jax_enable_x64`)."""
    try:
        parsed = None if dtype is None else jnp.dtype(dtype)
    except (TypeError, ValueError):
        parsed = None
    if parsed is None or not jnp.issubdtype(parsed, jnp.floating):
        raise TypeError(f"`dtype` must be a real floating dtype (jnp.float32, jnp.bfloat16, ...); "
                        f"got {parsed if parsed is not None else repr(dtype)}")
    if jax.dtypes.canonicalize_dtype(parsed) != parsed:
        raise ValueError(f"`dtype` {parsed} needs `jax.config.update('jax_enable_x64', True)`; without it "
                         f"JAX would make {jax.dtypes.canonicalize_dtype(parsed)} arrays")
    return parsed


def check_init_args(key, input_size, hidden_size, initializer, dtype):
    """Validates the arguments every `init` takes; returns `(input_size, hidden_size, dtype)`."""
    check_key(key)
    input_size = check_positive_int("input_size", input_size)
    hidden_size = check_positive_int("hidden_size", hidden_size)
    check_choice("initializer", initializer, INITIALIZERS)
    return input_size, hidden_size, check_dtype(dtype)


# --- fields of a cell, where it is built ------------------------------------------------------------------
def _is_array(a) -> bool:
    """Arrays, tracers and `jax.ShapeDtypeStruct`: anything with a shape and a dtype."""
    return hasattr(a, "shape") and hasattr(a, "dtype")


def _show(dims) -> str:
    parts = [d if isinstance(d, (int, str)) else d[0] if d[1] == 1 else f"{d[1]}{d[0]}" for d in dims]
    return "(" + ", ".join(map(str, parts)) + ("," if len(parts) == 1 else "") + ")"


def check_fields(cell, what: str, layout: tuple[tuple[str, tuple[Dim, ...]], ...],
                 optional: tuple[str, ...] = ()) -> None:
    """Checks the array fields of `cell` (named `what` in messages) against `layout`.

    `layout` is `((field, dims), ...)` in the order the sizes are read: a symbol takes its value where it
    first appears, every later use must agree. Every field is a real floating array, all of one dtype;
    `optional` fields may be None. Leading axes (a stacked ensemble) are allowed when every field has the
    same ones. A cell with no array at all is a placeholder tree (a `vmap` axes spec): nothing to check.
    """
    values = {name: getattr(cell, name) for name, _ in layout}
    if not any(_is_array(v) for v in values.values()):
        return
    first = None
    for name, v in values.items():
        if v is None and name in optional:
            continue
        if not _is_array(v):
            kind = "an array" + (" or None" if name in optional else "")
            raise TypeError(f"`{name}` of {what} must be {kind}; got {type(v).__name__}")
        if not jnp.issubdtype(v.dtype, jnp.floating):
            raise TypeError(f"`{name}` of {what} must be a real floating array (params are float32, "
                            f"bfloat16, ...); got dtype {v.dtype}")
        if first is None:
            first = name
        elif v.dtype != values[first].dtype:
            raise TypeError(f"`{name}` of {what} must have the dtype of `{first}` ({values[first].dtype}); "
                            f"got {v.dtype}")
    sizes: dict[str, tuple[int, str]] = {}  # symbol -> (size, the field it was read off)
    lead, lead_from = None, None
    for name, dims in layout:
        v = values[name]
        if v is None:
            continue
        shape = tuple(v.shape)
        n = len(shape) - len(dims)
        ok = n >= 0 and (lead is None or shape[:n] == lead)
        here: dict[str, tuple[int, str]] = {}
        for d, s in zip(dims, shape[n:], strict=True) if ok else ():
            if isinstance(d, int):
                ok = s == d
            else:
                sym, factor = (d, 1) if isinstance(d, str) else d
                known = here.get(sym) or sizes.get(sym)
                if known is not None:
                    ok = s == factor * known[0]
                else:
                    ok = s >= factor and s % factor == 0
                    here[sym] = (s // factor, name)
            if not ok:
                break
        if not ok:
            prefix = tuple(lead) if lead is not None else ()
            want = _show(prefix + tuple(dims))
            given = {k: v for k, v in sizes.items() if k in {d if isinstance(d, str) else d[0]
                                                             for d in dims if not isinstance(d, int)}}
            if given or prefix:
                concrete = _show(prefix + tuple(
                    d if isinstance(d, int) else
                    (given[d][0] if d in given else d) if isinstance(d, str) else
                    (d[1] * given[d[0]][0] if d[0] in given else d) for d in dims))
                notes = [f"{k} = {size} from `{src}`" for k, (size, src) in given.items()]
                if prefix:
                    notes.append(f"leading axes {prefix} from `{lead_from}`")
                want = f"{want} = {concrete} ({', '.join(notes)})"
            raise ValueError(f"`{name}` of {what} must have shape {want}; got {shape}")
        if lead is None:
            lead, lead_from = shape[:n], name
        sizes.update(here)


class MatmulCell(Cell):
    """Cells with `kernel [I, G*H]`, `recurrent_kernel [H, G*H]` and `bias`: sizes and dtype read off the
    arrays, `project(x) = x @ kernel + input_bias`, recurrent dropout where `hidden(h)` enters the matmul."""

    gates: ClassVar[int] = 1  # number of gate blocks G
    fused: ClassVar[bool] = True
    recurrent_dropout: ClassVar[bool] = True

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raises `TypeError`/`ValueError` naming the field when the params do not fit together: run
        where the params are built (their constructor, `dataclasses.replace`, `jrnn.load`)."""
        self.check_settings()
        check_fields(self, self.describe(), self.layout(), optional=self.optional_fields)

    optional_fields: ClassVar[tuple[str, ...]] = ("bias",)  # the array fields that may be None

    def layout(self) -> tuple:
        """The array fields' shapes for `check_fields`, in the order their sizes are read."""
        G = self.gates
        return (("recurrent_kernel", ("H", ("H", G))), ("kernel", ("I", ("H", G))),
                ("bias", self.bias_layout()))

    def check_settings(self) -> None:
        """Checks the static fields (none here)."""

    def describe(self) -> str:
        """The class (and the settings the layout depends on) as messages name it."""
        return type(self).__name__

    def bias_layout(self) -> tuple:
        return (("H", self.gates),)

    @property
    def input_size(self) -> int:
        return self.kernel.shape[-2]

    @property
    def hidden_size(self) -> int:
        return self.recurrent_kernel.shape[-2]

    @property
    def dtype(self):
        return self.kernel.dtype

    @property
    def input_bias(self):
        return self.bias

    def project(self, x: jax.Array) -> jax.Array:
        """`x [..., I] -> gx [..., G*H]`: `x @ kernel` plus the input bias."""
        gx = x.astype(self.dtype) @ self.kernel
        bias = self.input_bias
        return gx if bias is None else gx + lift(bias, gx.ndim)
