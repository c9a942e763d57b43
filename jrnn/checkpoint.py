"""`save` and `load`: one self-describing file per pytree (params, or a whole training state), atomically.

A checkpoint is an uncompressed zip archive, as `np.savez` writes: the member `__jrnn__.json` holds the
format name, its version, the tree spec (classes by name, static settings, containers, Python scalars,
each array's dtype and shape) and each leaf's `jax.tree_util.keystr` path; the members `arrays/<i>.npy`
hold the arrays, in the spec's order. bfloat16 and float8 arrays are stored as their bits (`uint16`/
`uint8`); a typed PRNG key as its `jax.random.key_data` plus its impl name. `np.load(path)` opens the file.

Why not safetensors, which other tools read: it is a flat str -> tensor map with str-only metadata, so the
tree, the classes and the Python scalars would still sit in a jrnn-specific JSON blob no other tool
rebuilds; it has no checksum (a flipped bit loads silently) and would be a new dependency or a second
writer. The zip checks a CRC32 per member, opens with `np.load` or any unzip tool, and, with the bounds
below, costs no more memory to open than safetensors' sized header does.

`load` rebuilds jrnn's classes (and `register`ed ones) by name only, calling their constructors, so
rebuilt params pass the checks params built in code pass; other classes come back as plain containers,
or as the classes of a template (`like=`). Nothing in a file names code to run or a module to import,
and arrays are parsed without pickle. Every member must be stored (not compressed), and its size in the
zip directory must fit the file and be what the spec's dtype and shape need, before it is read: a
damaged or crafted file gives `ValueError` using memory of the order of its own size. Files of format
version 1 (jrnn's params only) still load, and so do files that lack a field added later with a default
(an `LSTM` saved before `projection` existed loads with `projection=None`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import struct
import uuid
import zipfile
import zlib
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jrnn.cells.conv_lstm import ConvLSTM
from jrnn.cells.gru import GRU
from jrnn.cells.lru import LRU
from jrnn.cells.lstm import LSTM, LSTMState
from jrnn.cells.min_gru import MinGRU
from jrnn.cells.min_lstm import MinLSTM
from jrnn.cells.simple_rnn import SimpleRNN
from jrnn.layers import Bidirectional, Function, Stack

# The built-in classes a checkpoint may hold, looked up by `__name__` on load; `register` adds a user's.
# Params dataclasses (static fields str/int/float/bool/None/tuple) and array-only NamedTuples here.
# `Function` is listed so that saving a Stack holding one names its function (it cannot be saved).
CLASSES = (SimpleRNN, LSTM, GRU, MinGRU, MinLSTM, LRU, ConvLSTM, Bidirectional, Stack, Function, LSTMState)

FORMAT = "jrnn-checkpoint"
VERSION = 2
READS = (1, 2)  # the format versions `load` reads
HEADER = "__jrnn__.json"

# Bounds a file must keep to be read: the JSON header's size, each .npy member's header, the tree's depth.
MAX_HEADER_BYTES = 8 << 20
MAX_NPY_HEADER_BYTES = 64 << 10
MAX_DEPTH = 100

# Dtypes .npy stores natively, and dtypes stored as their bits (name -> storage dtype).
_NATIVE_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                  "float16", "float32", "float64", "complex64", "complex128")
_BITS_DTYPES = {"bfloat16": "uint16", "float8_e4m3fn": "uint8", "float8_e5m2": "uint8"}
_ARRAY_KINDS = ("jax", "numpy", "numpy_scalar")

# What a damaged or foreign file can make `zipfile`, `json` or `np.lib.format` raise (RuntimeError
# includes RecursionError, from JSON nested too deep).
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, RuntimeError,
                NotImplementedError, ValueError, KeyError, IndexError, TypeError, OverflowError, struct.error,
                zlib.error)

_BY_NAME = {cls.__name__: cls for cls in CLASSES}
assert len(_BY_NAME) == len(CLASSES), "two classes in `CLASSES` share a name"


def register(cls: type) -> type:
    """Lets `save` and `load` hold instances of `cls`, looked up by its `__name__`; returns `cls`.

    `cls` is a params dataclass (a `jrnn.Cell` of your own: array fields, and static fields marked
    `metadata=dict(static=True)` holding str/int/float/bool/None/tuples) or an array-only NamedTuple
    (a state). A file names classes only; `load` builds nothing that was not registered in this process,
    and builds it with `cls(...)`, so that its `__post_init__` checks run.
    """
    if not isinstance(cls, type) or not (dataclasses.is_dataclass(cls) or
                                         (issubclass(cls, tuple) and hasattr(cls, "_fields"))):
        raise TypeError(f"`cls` must be a dataclass or a NamedTuple class; got {cls!r}")
    if _BY_NAME.get(cls.__name__, cls) is not cls:
        raise ValueError(f"`cls`: another class named {cls.__name__!r} is registered already "
                         f"({_BY_NAME[cls.__name__].__module__}.{cls.__name__})")
    _BY_NAME[cls.__name__] = cls
    return cls

PathLike = Union[str, os.PathLike]


class _CannotLoad(ValueError):
    """A sound checkpoint that this jrnn cannot load (an unknown class, 64-bit arrays without x64)."""


def save(path: PathLike, params: Any) -> None:
    """Writes the pytree `params` to one file at `path` (no suffix added), atomically.

    The file is written to a temporary file beside `path`, synced, then renamed onto `path`: a failure
    or crash leaves any previous file at `path` untouched.

    Args:
      path: the file to write; its directory must exist.
      params: a pytree (params, or a whole training state) of:
        - jrnn params (`CLASSES`, and classes added with `register`);
        - dicts (keys all str, or all int), lists, tuples, None;
        - any other pytree node: an optax state NamedTuple, an Equinox module, a registered dataclass
          (`load` gives it back as a tuple of its children, or as itself given a template `like`);
        - jax and numpy arrays, and numpy scalars, of a bool, int, uint, float (incl. bfloat16, float8)
          or complex dtype; typed PRNG keys (`jax.random.key`);
        - Python bool, int, float and str (kept in the JSON header, bit for bit).

    Raises:
      TypeError: `params` holds an object of another type, or an array of another dtype; nothing is
        written.
      ValueError: `params` is nested deeper than `MAX_DEPTH`, or its spec (str leaves included) exceeds
        `MAX_HEADER_BYTES`; nothing is written.
      FileNotFoundError: the directory of `path` does not exist.
      OSError: the file could not be written.
    """
    arrays: list = []
    spec = _encode(params, arrays, "params", 0)  # raises before anything touches the disk
    leaf_paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    header = json.dumps({"format": FORMAT, "version": VERSION, "num_arrays": len(arrays), "tree": spec,
                         "leaf_paths": leaf_paths}, allow_nan=False)
    if len(header) > MAX_HEADER_BYTES:
        raise ValueError(f"Cannot save `params`: its spec takes {len(header)} bytes, over the "
                         f"{MAX_HEADER_BYTES} a checkpoint allows (long str leaves, or too many leaves)")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"`path` {path!r}: the directory {directory!r} does not exist")
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
                zf.writestr(_member(HEADER), header)
                for i, leaf in enumerate(arrays):
                    with zf.open(_member(_array_name(i)), "w", force_zip64=True) as out:
                        _write_array(out, leaf)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def load(path: PathLike, like: Optional[Any] = None) -> Any:
    """Reads a pytree written by `save`: same classes, settings, containers, dtypes, shapes and bits.

    Without `like`, jrnn's classes (and `register`ed ones), dicts, lists, tuples, None, arrays, keys and
    Python scalars come back as they were saved; any other pytree node (an optax state, an Equinox
    module, a foreign NamedTuple or dataclass) comes back as a tuple of its children, so that
    `jax.tree.leaves` gives the leaves of the saved tree in their order. With `like`, the saved tree's
    leaves are put into `like`'s structure (`jax.tree.unflatten`), after checking that the two agree
    leaf by leaf: path (`jax.tree_util.keystr`), kind, dtype and shape. Arrays saved from jax come back
    as jax arrays on the default device, numpy arrays as numpy arrays.

    Args:
      path: a file written by `save`.
      like: None, or a template of the saved tree, e.g. a freshly initialised training state; its leaves
        may be arrays, `jax.ShapeDtypeStruct`s, keys or Python scalars; only their kinds, dtypes and
        shapes are read.

    Returns:
      The pytree.

    Raises:
      FileNotFoundError: no file at `path`.
      ValueError: the file is not a jrnn checkpoint (not a zip, no `__jrnn__.json`); is truncated,
        damaged or crafted (a bad CRC, a compressed member, member sizes that do not fit the file or the
        spec, params that their class's constructor refuses); has another format version; names a class
        not in `CLASSES`; holds 64-bit jax arrays while `jax_enable_x64` is off; or does not fit `like`.
    """
    shown = repr(os.fsdecode(os.fspath(path)))
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        try:
            try:
                zf = zipfile.ZipFile(f)
            except zipfile.BadZipFile as e:
                raise ValueError(f"not a complete zip archive (truncated?): {e}") from e
            infos = zf.infolist()
            info = next((i for i in infos if i.filename == HEADER), None)
            if info is None:
                raise ValueError(f"it has no {HEADER!r} member (a plain .npz, or another zip?)")
            _check_member(info, size)
            if info.file_size > MAX_HEADER_BYTES:
                raise ValueError(f"its {HEADER!r} member has {info.file_size} bytes; at most "
                                 f"{MAX_HEADER_BYTES} expected")
            header = json.loads(zf.read(HEADER).decode("utf-8"), parse_constant=_no_constant)
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                raise ValueError(f"{HEADER!r} does not name the format {FORMAT!r}")
        except _READ_ERRORS as e:
            raise ValueError(f"`path` {shown} is not a jrnn checkpoint: {_reason(e)}") from e
        with zf:
            version = header.get("version")
            if type(version) is not int or version not in READS:
                raise ValueError(f"`path` {shown} is a jrnn checkpoint of format version {version!r}; this "
                                 f"jrnn reads versions {' and '.join(map(str, READS))}")
            try:
                tree = _Reader(zf, infos, size, header).read()
                paths = None if version == 1 or like is None else _leaf_paths(header)
            except _CannotLoad as e:
                raise ValueError(f"`path` {shown} cannot be loaded: {e}") from e
            except _READ_ERRORS as e:
                raise ValueError(f"`path` {shown} is a damaged jrnn checkpoint: {_reason(e)}") from e
    return tree if like is None else _fit(tree, paths, like, shown)


def _reason(e: BaseException) -> str:
    return str(e) if type(e) is ValueError else f"{type(e).__name__}: {e}"


def _no_constant(name: str):
    raise ValueError(f"{HEADER!r} holds {name}, which is not JSON")


def _member(name: str) -> zipfile.ZipInfo:
    """A zip entry with a fixed timestamp, so that equal params give equal files."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    return info


def _array_name(i: int) -> str:
    return f"arrays/{i}.npy"


def _check_member(info: zipfile.ZipInfo, size: int) -> None:
    """Refuses a compressed member, or one whose sizes in the zip directory do not fit the file (`size`)."""
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"its member {info.filename!r} is compressed (zip method {info.compress_type}); "
                         f"jrnn checkpoints store members uncompressed")
    if info.compress_size != info.file_size or info.header_offset + info.compress_size > size:
        raise ValueError(f"the zip directory gives its member {info.filename!r} {info.file_size} bytes "
                         f"({info.compress_size} stored at offset {info.header_offset}); the file has {size}")


def _fsync_directory(directory: str) -> None:
    """Makes the rename durable (POSIX); best effort, as some file systems refuse to sync a directory."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_array(out, leaf) -> None:
    array = np.asarray(leaf)
    if array.dtype.name in _BITS_DTYPES:
        array = array.view(_BITS_DTYPES[array.dtype.name])
    np.lib.format.write_array(out, array, allow_pickle=False)


# ---- save: pytree -> JSON spec ----

def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _encode(x, arrays: list, where: str, depth: int):
    """The spec of `x`; appends its arrays to `arrays`. `where` names the node in error messages."""
    if depth > MAX_DEPTH:
        raise ValueError(f"Cannot save `{where}`: the tree is nested deeper than {MAX_DEPTH} levels")
    cls = type(x)
    if x is None:
        return {"type": "none"}
    if cls in (bool, int, str):
        return {"type": cls.__name__, "value": x}
    if cls is float:  # the bits, so that -0.0, inf and every nan come back as they were
        return {"type": "float", "bits": struct.pack(">d", x).hex()}
    if _is_key(x):
        data = _encode_array(jax.random.key_data(x), arrays, where)
        return {"type": "key", "impl": str(jax.random.key_impl(x)), "data": data}
    if isinstance(x, (jax.Array, np.generic)) or cls is np.ndarray:
        return _encode_array(x, arrays, where)
    if cls in (tuple, list):
        return {"type": cls.__name__,
                "items": [_encode(v, arrays, f"{where}[{i}]", depth + 1) for i, v in enumerate(x)]}
    if cls is dict:
        kinds = {type(k) for k in x}
        if not (kinds <= {str} or kinds <= {int}):
            raise TypeError(f"Cannot save `{where}`: dict keys must be all str or all int; got keys of types "
                            f"{sorted(t.__name__ for t in kinds)}")
        return {"type": "dict", "keys": list(x),
                "values": [_encode(v, arrays, f"{where}[{k!r}]", depth + 1) for k, v in x.items()]}
    if _BY_NAME.get(cls.__name__) is cls:
        if dataclasses.is_dataclass(cls):
            fields, static = {}, {}
            for f in dataclasses.fields(x):
                value = getattr(x, f.name)
                if f.metadata.get("static"):
                    static[f.name] = _encode_static(value, f"{where}.{f.name}", depth + 1)
                else:
                    fields[f.name] = _encode(value, arrays, f"{where}.{f.name}", depth + 1)
            return {"type": "dataclass", "class": cls.__name__, "fields": fields, "static": static}
        return {"type": "namedtuple", "class": cls.__name__,
                "items": [_encode(v, arrays, f"{where}.{n}", depth + 1)
                          for n, v in zip(x._fields, x, strict=True)]}
    children, treedef = jax.tree_util.tree_flatten_with_path(x, is_leaf=lambda y: y is not x)
    if treedef.num_nodes == 1 and treedef.num_leaves == 1:  # `x` is a leaf of an unsupported type
        raise TypeError(f"Cannot save `{where}` of type {cls.__module__}.{cls.__qualname__}; expected jrnn "
                        f"params ({', '.join(_BY_NAME)}), a pytree node (dict, list, tuple, None, a "
                        f"NamedTuple, ...), a jax or numpy array or numpy scalar, a PRNG key, or a Python "
                        f"bool, int, float or str")
    keys = [jax.tree_util.keystr(p) for p, _ in children]
    items = [_encode(v, arrays, where + k, depth + 1) for k, (_, v) in zip(keys, children, strict=True)]
    # The class and the keys are information only: `load` gives back a tuple of the items.
    return {"type": "node", "class": f"{cls.__module__}.{cls.__qualname__}", "keys": keys, "items": items}


def _encode_array(x, arrays: list, where: str):
    dtype = np.dtype(x.dtype)
    if dtype.name not in _NATIVE_DTYPES and dtype.name not in _BITS_DTYPES:
        raise TypeError(f"Cannot save `{where}`: arrays of dtype {dtype} are not supported; expected "
                        f"one of {_NATIVE_DTYPES + tuple(_BITS_DTYPES)}")
    kind = "jax" if isinstance(x, jax.Array) else "numpy" if type(x) is np.ndarray else "numpy_scalar"
    arrays.append(x)
    return {"type": "array", "index": len(arrays) - 1, "dtype": dtype.name, "shape": list(x.shape),
            "kind": kind}


def _encode_static(value, where: str, depth: int):
    if depth > MAX_DEPTH:
        raise ValueError(f"Cannot save `{where}`: the tree is nested deeper than {MAX_DEPTH} levels")
    if value is None or type(value) in (bool, int, str):
        return value
    if type(value) is float and math.isfinite(value):
        return value
    if type(value) is tuple:
        return {"tuple": [_encode_static(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]}
    raise TypeError(f"Cannot save `{where}`: a static setting must be a str, int, finite float, bool, None "
                    f"or tuple of these; got {type(value).__name__} {value!r}")


# ---- load: JSON spec + arrays -> pytree ----

class _Reader:
    """Rebuilds the tree of one open archive, checking every node of the spec and every array."""

    def __init__(self, zf: zipfile.ZipFile, infos: list, size: int, header: dict):
        self.zf = zf
        self.header = header
        self.num_arrays = _expect(header.get("num_arrays"), int, "num_arrays")
        names = [i.filename for i in infos]
        expected = {HEADER} | {_array_name(i) for i in range(min(self.num_arrays, len(names)))}
        if len(names) != len(set(names)) or set(names) != expected or len(names) != self.num_arrays + 1:
            raise ValueError(f"its members {sorted(names)[:6]} do not match the spec's {self.num_arrays} "
                             f"arrays")
        for info in infos:
            _check_member(info, size)
        self.infos = {i.filename: i for i in infos}
        self.seen: set = set()

    def read(self):
        tree = self.node(self.header.get("tree"), "params", 0)
        if len(self.seen) != self.num_arrays:
            raise ValueError(f"the spec uses {len(self.seen)} of its {self.num_arrays} arrays")
        return tree

    def node(self, spec, where: str, depth: int):
        if depth > MAX_DEPTH:
            raise ValueError(f"`{where}`: the spec is nested deeper than {MAX_DEPTH} levels")
        spec = _expect(spec, dict, where)
        kind = spec.get("type")
        if kind == "none":
            return None
        if kind in ("bool", "int", "str"):
            return _expect(spec.get("value"), {"bool": bool, "int": int, "str": str}[kind], where)
        if kind == "float":
            bits = _expect(spec.get("bits"), str, where)
            if len(bits) != 16 or any(c not in "0123456789abcdef" for c in bits):
                raise ValueError(f"`{where}`: bad float bits {bits!r}")
            return struct.unpack(">d", bytes.fromhex(bits))[0]
        if kind == "array":
            return self.array(spec, where)
        if kind == "key":
            return self.key(spec, where)
        if kind in ("tuple", "list", "node"):
            items = _expect(spec.get("items"), list, where)
            values = [self.node(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(items)]
            return values if kind == "list" else tuple(values)
        if kind == "dict":
            keys = _expect(spec.get("keys"), list, where)
            values = _expect(spec.get("values"), list, where)
            kinds = {type(k) for k in keys}
            unique = len(set(keys)) == len(keys) == len(values)
            if not unique or not (kinds <= {str} or kinds <= {int}):
                raise ValueError(f"`{where}`: bad dict keys {keys[:6]!r}")
            return {k: self.node(v, f"{where}[{k!r}]", depth + 1) for k, v in zip(keys, values, strict=True)}
        if kind in ("dataclass", "namedtuple"):
            return self.instance(spec, kind, where, depth)
        raise ValueError(f"`{where}`: unknown node type {kind!r}")

    def instance(self, spec: dict, kind: str, where: str, depth: int):
        name = spec.get("class")
        cls = _BY_NAME.get(name) if isinstance(name, str) else None
        if cls is None:
            raise _CannotLoad(f"`{where}` is of class {name!r}, which this jrnn does not know; known "
                              f"classes: {tuple(_BY_NAME)}")
        if kind == "namedtuple":
            items = _expect(spec.get("items"), list, where)
            if dataclasses.is_dataclass(cls) or len(items) != len(getattr(cls, "_fields", ())):
                raise ValueError(f"`{where}`: {name} is not a NamedTuple of {len(items)} fields")
            values = [self.node(v, f"{where}.{n}", depth + 1)
                      for n, v in zip(cls._fields, items, strict=True)]
            return _construct(cls, where, *values)
        if not dataclasses.is_dataclass(cls):
            raise ValueError(f"`{where}`: {name} is not a dataclass")
        fields = _expect(spec.get("fields"), dict, where)
        static = _expect(spec.get("static"), dict, where)
        want_fields = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("static")]
        want_static = [f.name for f in dataclasses.fields(cls) if f.metadata.get("static")]
        # A field added to a class with a default (`LSTM.projection`) takes it when an older file lacks it.
        defaults = {f.name for f in dataclasses.fields(cls)
                    if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
        if (not set(fields) <= set(want_fields) or not set(static) <= set(want_static)
                or not set(want_fields + want_static) - set(fields) - set(static) <= defaults):
            raise ValueError(f"`{where}`: {name} has array fields {want_fields} and static fields "
                             f"{want_static}; the file has {sorted(fields)} and {sorted(static)}")
        kwargs = {k: self.node(v, f"{where}.{k}", depth + 1) for k, v in fields.items()}
        kwargs.update({k: _decode_static(v, f"{where}.{k}", depth + 1) for k, v in static.items()})
        return _construct(cls, where, **kwargs)

    def key(self, spec: dict, where: str):
        impl = _expect(spec.get("impl"), str, f"{where}.impl")
        data_spec = _expect(spec.get("data"), dict, where)
        if data_spec.get("type") != "array" or data_spec.get("kind") != "jax":
            raise ValueError(f"`{where}`: the data of a PRNG key must be a jax array")
        data = self.array(data_spec, where)
        try:  # `impl` is looked up among jax's PRNG implementations, never imported
            return jax.random.wrap_key_data(data, impl=impl)
        except (ValueError, TypeError) as e:
            raise ValueError(f"`{where}`: no PRNG key of impl {impl!r} has data {data.dtype} "
                             f"{list(data.shape)}: {e}") from e

    def array(self, spec: dict, where: str):
        index = _expect(spec.get("index"), int, f"{where}.index")
        dtype_name = spec.get("dtype")
        shape = tuple(_expect(spec.get("shape"), list, f"{where}.shape"))
        kind = spec.get("kind")
        if not 0 <= index < self.num_arrays or index in self.seen:
            raise ValueError(f"`{where}`: array index {index} is out of range or used twice")
        if dtype_name not in _NATIVE_DTYPES and dtype_name not in _BITS_DTYPES:
            raise ValueError(f"`{where}`: unsupported dtype {dtype_name!r}")
        if (any(type(n) is not int or n < 0 for n in shape) or kind not in _ARRAY_KINDS
                or (kind == "numpy_scalar" and shape)):
            raise ValueError(f"`{where}`: bad shape {list(shape)} or kind {kind!r}")
        self.seen.add(index)
        dtype = jnp.dtype(dtype_name)
        if kind == "jax" and jax.dtypes.canonicalize_dtype(dtype) != dtype:
            raise _CannotLoad(f"`{where}` is a {dtype_name} jax array; enable 64-bit jax to load it "
                              f"(`with jax.enable_x64(True):`)")
        storage = np.dtype(_BITS_DTYPES.get(dtype_name, dtype_name))
        need, name = math.prod(shape) * storage.itemsize, _array_name(index)
        size = self.infos[name].file_size
        if not need <= size <= need + MAX_NPY_HEADER_BYTES:  # checked before the member is read
            raise ValueError(f"`{where}`: the spec says {dtype_name} {list(shape)} ({need} bytes); the zip "
                             f"directory gives its member {name!r} {size} bytes")
        data = self.zf.read(name)  # the member in full: `zipfile` checks its CRC32
        array = _parse_npy(data, storage, shape, where).view(dtype)
        if kind == "jax":
            return jnp.asarray(array)
        return np.array(array) if kind == "numpy" else np.array(array)[()]  # np.array: a writeable copy


def _construct(cls: type, where: str, *args, **kwargs):
    """`cls(*args, **kwargs)`, its own checks included; their errors become a ValueError naming `where`."""
    try:
        return cls(*args, **kwargs)
    except (ValueError, TypeError) as e:
        raise ValueError(f"`{where}`: the file's fields do not make a valid {cls.__name__}: {e}") from e


def _parse_npy(data: bytes, storage: np.dtype, shape: tuple, where: str) -> np.ndarray:
    """The (read-only) array in the .npy bytes `data`, checked against the spec before it is made."""
    fp = io.BytesIO(data)
    version = np.lib.format.read_magic(fp)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"`{where}`: unsupported .npy version {version}")
    read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    file_shape, fortran_order, file_dtype = read_header[version](fp)
    if file_dtype.newbyteorder("=") != storage or tuple(file_shape) != shape:
        raise ValueError(f"`{where}`: the spec says {storage} {list(shape)}; the file holds {file_dtype} "
                         f"{list(file_shape)}")
    count, offset = math.prod(shape), fp.tell()
    if len(data) - offset != count * storage.itemsize:
        raise ValueError(f"`{where}`: {len(data) - offset} bytes of array data; expected "
                         f"{count * storage.itemsize}")
    array = np.frombuffer(data, dtype=file_dtype, count=count, offset=offset).astype(storage, copy=False)
    return array.reshape(shape, order="F" if fortran_order else "C")


def _expect(value, kind: type, where: str):
    if type(value) is not kind:
        raise ValueError(f"`{where}`: expected a {kind.__name__} in the spec; got {value!r}")
    return value


def _decode_static(value, where: str, depth: int):
    if depth > MAX_DEPTH:
        raise ValueError(f"`{where}`: the spec is nested deeper than {MAX_DEPTH} levels")
    if value is None or type(value) in (bool, int, float, str):
        return value
    if type(value) is dict and list(value) == ["tuple"] and type(value["tuple"]) is list:
        return tuple(_decode_static(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value["tuple"]))
    raise ValueError(f"`{where}`: bad static value {value!r}")


# ---- load(like=...): the saved leaves in a template's structure ----

def _leaf_paths(header: dict) -> list:
    paths = header.get("leaf_paths")
    if type(paths) is not list or not all(type(p) is str for p in paths):
        raise ValueError("`leaf_paths`: expected a list of str in the spec")
    return paths


def _describe(leaf) -> str:
    if type(leaf) in (bool, int, float, str):
        return f"a Python {type(leaf).__name__}"
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
        return f"{leaf.dtype} {list(leaf.shape)}"
    return f"a {type(leaf).__module__}.{type(leaf).__qualname__}"


def _fit(tree, paths: Optional[list], like, shown: str):
    """`tree`'s leaves in `like`'s structure, once each leaf's path, kind, dtype and shape agree."""
    leaves = jax.tree.leaves(tree)
    if paths is None:  # format version 1: no foreign nodes, so the loaded tree has the saved paths
        paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    if len(paths) != len(leaves):
        raise ValueError(f"`path` {shown} is a damaged jrnn checkpoint: its spec lists {len(paths)} leaf "
                         f"paths for {len(leaves)} leaves")
    template, treedef = jax.tree_util.tree_flatten_with_path(like)
    if len(template) != len(leaves):
        raise ValueError(f"`path` {shown} does not fit `like`: the file holds {len(leaves)} leaves, `like` "
                         f"{len(template)}")
    for i, ((key_path, want), got, saved_at) in enumerate(zip(template, leaves, paths, strict=True)):
        name = "like" + jax.tree_util.keystr(key_path)
        scalars = (bool, int, float, str)
        if saved_at != name[len("like"):]:
            problem = f"is leaf {i}; the file's leaf {i} is `params{saved_at}`"
        elif type(want) not in scalars and not (hasattr(want, "shape") and hasattr(want, "dtype")):
            problem = f"is {_describe(want)}, which a checkpoint cannot hold"
        elif type(want) in scalars or type(got) in scalars:
            problem = None if type(want) is type(got) else f"is {_describe(want)}; the file holds " \
                                                           f"{_describe(got)}"
        elif want.dtype != got.dtype or tuple(want.shape) != tuple(got.shape):
            problem = f"is {_describe(want)}; the file holds {_describe(got)}"
        else:
            problem = None
        if problem:
            raise ValueError(f"`path` {shown} does not fit `like`: `{name}` {problem}")
    try:
        return jax.tree.unflatten(treedef, leaves)
    except (ValueError, TypeError) as e:
        raise ValueError(f"`path` {shown}: `like`'s classes refuse the file's leaves: {e}") from e
