"""`save` and `load`: one self-describing file per params pytree, written atomically.

A checkpoint is an uncompressed zip archive, as `np.savez` writes: the member `__jrnn__.json` holds the
format name, its version and the tree spec (classes by name, static settings, containers, and each
array's dtype and shape); the members `arrays/<i>.npy` hold the arrays, in the spec's order. bfloat16
and float8 arrays are stored as their bits (`uint16`/`uint8`). `np.load(path)` opens the file too.

`load` rebuilds classes only from `CLASSES`, by name, and parses arrays without pickle: a checkpoint
cannot run code. Each zip member carries a CRC32, which `zipfile` checks as the member is read in full.
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
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np

from jrnn.cells.gru import GRU
from jrnn.cells.lru import LRU
from jrnn.cells.lstm import LSTM, LSTMState
from jrnn.cells.min_gru import MinGRU
from jrnn.cells.min_lstm import MinLSTM
from jrnn.cells.simple_rnn import SimpleRNN
from jrnn.layers import Bidirectional, Stack

# The built-in classes a checkpoint may hold, looked up by `__name__` on load; `register` adds a user's.
# Params dataclasses (static
# fields str/int/float/bool/None/tuple) and array-only NamedTuples here.
CLASSES = (SimpleRNN, LSTM, GRU, MinGRU, MinLSTM, LRU, Bidirectional, Stack, LSTMState)

FORMAT = "jrnn-checkpoint"
VERSION = 1
HEADER = "__jrnn__.json"

# Dtypes .npy stores natively, and dtypes stored as their bits (name -> storage dtype).
_NATIVE_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                  "float16", "float32", "float64", "complex64", "complex128")
_BITS_DTYPES = {"bfloat16": "uint16", "float8_e4m3fn": "uint8", "float8_e5m2": "uint8"}

# What a damaged or foreign file can make `zipfile`, `json` or `np.lib.format` raise.
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, RuntimeError,
                NotImplementedError, ValueError, KeyError, IndexError, TypeError, OverflowError, struct.error,
                zlib.error)

_BY_NAME = {cls.__name__: cls for cls in CLASSES}
assert len(_BY_NAME) == len(CLASSES), "two classes in `CLASSES` share a name"


def register(cls: type) -> type:
    """Lets `save` and `load` hold instances of `cls`, looked up by its `__name__`; returns `cls`.

    `cls` is a params dataclass (a `jrnn.Cell` of your own: array fields, and static fields marked
    `metadata=dict(static=True)` holding str/int/float/bool/None/tuples) or an array-only NamedTuple
    (a state). A file names classes only; `load` builds nothing that was not registered in this process.
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
    """Writes `params` to one file at `path` (no suffix added), atomically.

    The file is written to a temporary file beside `path`, synced, then renamed onto `path`: a failure
    or crash leaves any previous file at `path` untouched.

    Args:
      path: the file to write.
      params: a pytree of jrnn params (`CLASSES`), dicts with str keys, lists, tuples, None, and jax or
        numpy arrays of a bool, int, uint, float (incl. bfloat16) or complex dtype. Python and numpy
        scalars are rejected: wrap them with `np.asarray`.

    Raises:
      TypeError: `params` holds an object of another type, or an array of another dtype; nothing is
        written.
      OSError: the file could not be written.
    """
    arrays: list = []
    spec = _encode(params, arrays, "params")  # raises TypeError before anything touches the disk
    header = json.dumps({"format": FORMAT, "version": VERSION, "num_arrays": len(arrays), "tree": spec})
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
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


def load(path: PathLike) -> Any:
    """Reads a pytree written by `save`: same classes, settings, containers, dtypes, shapes and bits.

    Arrays saved from jax come back as jax arrays on the default device, numpy arrays as numpy arrays.

    Args:
      path: a file written by `save`.

    Returns:
      The pytree.

    Raises:
      FileNotFoundError: no file at `path`.
      ValueError: the file is not a jrnn checkpoint (not a zip, no `__jrnn__.json`); is truncated or
        damaged (a bad CRC, arrays that do not match the spec); has another format version; names a
        class not in `CLASSES`; or holds 64-bit jax arrays while `jax_enable_x64` is off.
    """
    shown = repr(os.fsdecode(os.fspath(path)))
    with open(path, "rb") as f:
        try:
            try:
                zf = zipfile.ZipFile(f)
            except zipfile.BadZipFile as e:
                raise ValueError(f"not a complete zip archive (truncated?): {e}") from e
            names = zf.namelist()
            if HEADER not in names:
                raise ValueError(f"it has no {HEADER!r} member (a plain .npz, or another zip?)")
            header = json.loads(zf.read(HEADER).decode("utf-8"))
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                raise ValueError(f"{HEADER!r} does not name the format {FORMAT!r}")
        except _READ_ERRORS as e:
            raise ValueError(f"`path` {shown} is not a jrnn checkpoint: {_reason(e)}") from e
        with zf:
            if type(header.get("version")) is not int or header["version"] != VERSION:
                raise ValueError(f"`path` {shown} is a jrnn checkpoint of format version "
                                 f"{header.get('version')!r}; this jrnn reads version {VERSION}")
            try:
                return _Reader(zf, names, header).read()
            except _CannotLoad as e:
                raise ValueError(f"`path` {shown} cannot be loaded: {e}") from e
            except _READ_ERRORS as e:
                raise ValueError(f"`path` {shown} is a damaged jrnn checkpoint: {_reason(e)}") from e


def _reason(e: BaseException) -> str:
    return str(e) if type(e) is ValueError else f"{type(e).__name__}: {e}"


def _member(name: str) -> zipfile.ZipInfo:
    """A zip entry with a fixed timestamp, so that equal params give equal files."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    return info


def _array_name(i: int) -> str:
    return f"arrays/{i}.npy"


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

def _encode(x, arrays: list, where: str):
    """The spec of `x`; appends its arrays to `arrays`. `where` names the node in error messages."""
    cls = type(x)
    if x is None:
        return {"type": "none"}
    if isinstance(x, jax.Array) or cls is np.ndarray:
        dtype = np.dtype(x.dtype)
        if dtype.name not in _NATIVE_DTYPES and dtype.name not in _BITS_DTYPES:
            raise TypeError(f"Cannot save `{where}`: arrays of dtype {dtype} are not supported; expected "
                            f"one of {_NATIVE_DTYPES + tuple(_BITS_DTYPES)}")
        arrays.append(x)
        return {"type": "array", "index": len(arrays) - 1, "dtype": dtype.name, "shape": list(x.shape),
                "kind": "numpy" if cls is np.ndarray else "jax"}
    if cls in (tuple, list):
        return {"type": cls.__name__, "items": [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(x)]}
    if cls is dict:
        for k in x:
            if type(k) is not str:
                raise TypeError(f"Cannot save `{where}`: dict keys must be str; got {type(k).__name__} {k!r}")
        return {"type": "dict", "keys": list(x),
                "values": [_encode(v, arrays, f"{where}[{k!r}]") for k, v in x.items()]}
    if _BY_NAME.get(cls.__name__) is cls:
        if dataclasses.is_dataclass(cls):
            fields, static = {}, {}
            for f in dataclasses.fields(x):
                value = getattr(x, f.name)
                if f.metadata.get("static"):
                    static[f.name] = _encode_static(value, f"{where}.{f.name}")
                else:
                    fields[f.name] = _encode(value, arrays, f"{where}.{f.name}")
            return {"type": "dataclass", "class": cls.__name__, "fields": fields, "static": static}
        return {"type": "namedtuple", "class": cls.__name__,
                "items": [_encode(v, arrays, f"{where}.{n}") for n, v in zip(x._fields, x, strict=True)]}
    raise TypeError(f"Cannot save `{where}` of type {cls.__module__}.{cls.__qualname__}; expected jrnn "
                    f"params ({', '.join(_BY_NAME)}), dict, list, tuple, None, or a jax or numpy array")


def _encode_static(value, where: str):
    if value is None or type(value) in (bool, int, str):
        return value
    if type(value) is float and math.isfinite(value):
        return value
    if type(value) is tuple:
        return {"tuple": [_encode_static(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    raise TypeError(f"Cannot save `{where}`: a static setting must be a str, int, finite float, bool, None "
                    f"or tuple of these; got {type(value).__name__} {value!r}")


# ---- load: JSON spec + arrays -> pytree ----

class _Reader:
    """Rebuilds the tree of one open archive, checking every node of the spec and every array."""

    def __init__(self, zf: zipfile.ZipFile, names: list, header: dict):
        self.zf = zf
        self.header = header
        self.num_arrays = _expect(header.get("num_arrays"), int, "num_arrays")
        expected = {HEADER} | {_array_name(i) for i in range(min(self.num_arrays, len(names)))}
        if len(names) != len(set(names)) or set(names) != expected or len(names) != self.num_arrays + 1:
            raise ValueError(f"its members {sorted(names)[:6]} do not match the spec's {self.num_arrays} "
                             f"arrays")
        self.seen: set = set()

    def read(self):
        tree = self.node(self.header.get("tree"), "params")
        if len(self.seen) != self.num_arrays:
            raise ValueError(f"the spec uses {len(self.seen)} of its {self.num_arrays} arrays")
        return tree

    def node(self, spec, where: str):
        spec = _expect(spec, dict, where)
        kind = spec.get("type")
        if kind == "none":
            return None
        if kind == "array":
            return self.array(spec, where)
        if kind in ("tuple", "list"):
            items = _expect(spec.get("items"), list, where)
            values = [self.node(v, f"{where}[{i}]") for i, v in enumerate(items)]
            return tuple(values) if kind == "tuple" else values
        if kind == "dict":
            keys = _expect(spec.get("keys"), list, where)
            values = _expect(spec.get("values"), list, where)
            unique = all(type(k) is str for k in keys) and len(set(keys)) == len(keys)
            if not unique or len(keys) != len(values):
                raise ValueError(f"`{where}`: bad dict keys {keys!r}")
            return {k: self.node(v, f"{where}[{k!r}]") for k, v in zip(keys, values, strict=True)}
        if kind in ("dataclass", "namedtuple"):
            return self.instance(spec, kind, where)
        raise ValueError(f"`{where}`: unknown node type {kind!r}")

    def instance(self, spec: dict, kind: str, where: str):
        name = spec.get("class")
        cls = _BY_NAME.get(name) if isinstance(name, str) else None
        if cls is None:
            raise _CannotLoad(f"`{where}` is of class {name!r}, which this jrnn does not know; known "
                              f"classes: {tuple(_BY_NAME)}")
        if kind == "namedtuple":
            items = _expect(spec.get("items"), list, where)
            if dataclasses.is_dataclass(cls) or len(items) != len(getattr(cls, "_fields", ())):
                raise ValueError(f"`{where}`: {name} is not a NamedTuple of {len(items)} fields")
            return cls(*(self.node(v, f"{where}.{n}") for n, v in zip(cls._fields, items, strict=True)))
        if not dataclasses.is_dataclass(cls):
            raise ValueError(f"`{where}`: {name} is not a dataclass")
        fields = _expect(spec.get("fields"), dict, where)
        static = _expect(spec.get("static"), dict, where)
        want_fields = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("static")]
        want_static = [f.name for f in dataclasses.fields(cls) if f.metadata.get("static")]
        if sorted(fields) != sorted(want_fields) or sorted(static) != sorted(want_static):
            raise ValueError(f"`{where}`: {name} has array fields {want_fields} and static fields "
                             f"{want_static}; the file has {sorted(fields)} and {sorted(static)}")
        kwargs = {k: self.node(v, f"{where}.{k}") for k, v in fields.items()}
        kwargs.update({k: _decode_static(v, f"{where}.{k}") for k, v in static.items()})
        return cls(**kwargs)

    def array(self, spec: dict, where: str):
        index = _expect(spec.get("index"), int, f"{where}.index")
        dtype_name = spec.get("dtype")
        shape = tuple(_expect(spec.get("shape"), list, f"{where}.shape"))
        kind = spec.get("kind")
        if not 0 <= index < self.num_arrays or index in self.seen:
            raise ValueError(f"`{where}`: array index {index} is out of range or used twice")
        if dtype_name not in _NATIVE_DTYPES and dtype_name not in _BITS_DTYPES:
            raise ValueError(f"`{where}`: unsupported dtype {dtype_name!r}")
        if any(type(n) is not int or n < 0 for n in shape) or kind not in ("jax", "numpy"):
            raise ValueError(f"`{where}`: bad shape {list(shape)} or kind {kind!r}")
        self.seen.add(index)
        dtype = jnp.dtype(dtype_name)
        if kind == "jax" and jax.dtypes.canonicalize_dtype(dtype) != dtype:
            raise _CannotLoad(f"`{where}` is a {dtype_name} jax array; enable 64-bit jax to load it "
                              f"(`with jax.enable_x64(True):`)")
        data = self.zf.read(_array_name(index))  # the member in full: `zipfile` checks its CRC32
        array = _parse_npy(data, np.dtype(_BITS_DTYPES.get(dtype_name, dtype_name)), shape, where).view(dtype)
        return np.array(array) if kind == "numpy" else jnp.asarray(array)  # np.array: a writeable copy


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


def _decode_static(value, where: str):
    if value is None or type(value) in (bool, int, float, str):
        return value
    if type(value) is dict and list(value) == ["tuple"] and type(value["tuple"]) is list:
        return tuple(_decode_static(v, f"{where}[{i}]") for i, v in enumerate(value["tuple"]))
    raise ValueError(f"`{where}`: bad static value {value!r}")
