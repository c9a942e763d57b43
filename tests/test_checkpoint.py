"""`jrnn.save` / `jrnn.load`: exact round trips of params and whole training states (optax, Equinox),
templates, atomic writes, a ValueError in bounded memory for every bad file, and the digits demo resumed."""

import base64
import collections
import dataclasses
import importlib.util
import io
import json
import math
import os
import struct
import sys
import tracemalloc
import zipfile
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jrnn
from jrnn import checkpoint

K1, K2, K3 = jax.random.split(jax.random.key(0), 3)
ROOT = Path(__file__).resolve().parent.parent


def assert_same(got, want):
    """Equal treedefs (classes, static settings, containers) and leaves of equal type, dtype, shape, bits."""
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert_same_leaves(jax.tree.leaves(got), jax.tree.leaves(want))


def assert_same_leaves(got: list, want: list):
    """Leaves of the same type (jax array, numpy array or scalar, Python scalar), dtype, shape and bits."""
    assert len(got) == len(want), (len(got), len(want))
    for a, b in zip(got, want, strict=True):
        assert type(a) is type(b), (type(a), type(b))
        if type(b) is float:
            assert struct.pack(">d", a) == struct.pack(">d", b), (a, b)
        elif type(b) in (bool, int, str):
            assert a == b, (a, b)
        else:
            assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
            if jax.dtypes.issubdtype(b.dtype, jax.dtypes.prng_key):
                a, b = jax.random.key_data(a), jax.random.key_data(b)
            assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def roundtrip(tmp_path, params):
    path = tmp_path / "params.ckpt"
    jrnn.save(path, params)
    loaded = jrnn.load(path)
    assert_same(loaded, params)
    return loaded


CASES = {
    "simple_rnn": lambda: jrnn.SimpleRNN.init(K1, 3, 4, initializer="pytorch"),
    "simple_rnn_relu_no_bias": lambda: jrnn.SimpleRNN.init(K1, 3, 4, activation="relu", use_bias=False),
    "lstm": lambda: jrnn.LSTM.init(K1, 3, 4),
    "lstm_no_bias": lambda: jrnn.LSTM.init(K1, 1, 1, use_bias=False),
    "gru": lambda: jrnn.GRU.init(K1, 3, 4, initializer="pytorch"),
    "gru_reset_before": lambda: jrnn.GRU.init(K1, 3, 4, reset_after=False, initializer="pytorch"),
    "gru_no_bias": lambda: jrnn.GRU.init(K1, 3, 4, use_bias=False),
    "bidirectional_merge_none": lambda: jrnn.Bidirectional.init(K1, jrnn.LSTM, 3, 4, merge=None),
    "stack_mixed_residual": lambda: jrnn.Stack(
        (jrnn.LSTM.init(K1, 3, 4), jrnn.Bidirectional.init(K2, jrnn.GRU, 4, 2, merge="concat")),
        residual=True),
    "stack_init": lambda: jrnn.Stack.init(K1, jrnn.SimpleRNN, 3, 4, 3, bidirectional=True, merge="sum"),
    "training_dict": lambda: {
        "rnn": jrnn.Stack.init(K1, jrnn.GRU, 3, 4, 2),
        "readout": {"w": jax.random.normal(K2, (4, 2)), "b": jnp.zeros((2,))},
    },
    "lstm_state": lambda: jrnn.LSTMState(jax.random.normal(K1, (2, 4)), jax.random.normal(K2, (2, 4))),
    "bfloat16": lambda: {"lstm": jrnn.LSTM.init(K1, 3, 4, dtype=jnp.bfloat16, initializer="pytorch"),
                         "gru": jrnn.Bidirectional.init(K2, jrnn.GRU, 3, 4, dtype=jnp.bfloat16,
                                                                      initializer="pytorch")},
    "float16": lambda: jrnn.SimpleRNN.init(K1, 3, 4, dtype=jnp.float16, initializer="pytorch"),
    "containers": lambda: {
        "list": [jnp.arange(3), None, (jnp.ones((0, 2)),)], "empty": ({}, [], ()), "none": None,
        "scalar": jnp.asarray(1.5), "special": jnp.array([jnp.nan, -0.0, jnp.inf, -jnp.inf]),
        "numpy": np.arange(6, dtype=np.int16).reshape(2, 3), "fortran": np.asfortranarray(np.eye(3)),
        "bool": np.array([True, False]), "complex": np.array([1 + 2j], np.complex64),
        "uint64": np.array([2**63], np.uint64),
        "int8": jnp.array([-128, 127], jnp.int8), "float8": jnp.array([0.5, -448.0], jnp.float8_e4m3fn),
        "b.f16_numpy": np.array([1.0, -3.5], jnp.bfloat16), "weird key/ \u00e9": jnp.zeros((1, 1, 1)),
    },
}


@pytest.mark.parametrize("name", CASES)
def test_roundtrip(tmp_path, name):
    roundtrip(tmp_path, CASES[name]())


def test_roundtrip_keeps_dict_order_and_settings(tmp_path):
    params = CASES["training_dict"]()
    params = {"rnn": params["rnn"], "readout": params["readout"], "a": jnp.zeros(1)}
    loaded = roundtrip(tmp_path, params)
    assert list(loaded) == ["rnn", "readout", "a"]
    stack = roundtrip(tmp_path, CASES["stack_mixed_residual"]())
    assert stack.residual is True and type(stack.layers) is tuple
    assert type(stack.layers[1]) is jrnn.Bidirectional and stack.layers[1].merge == "concat"
    assert roundtrip(tmp_path, CASES["gru_reset_before"]()).reset_after is False
    assert roundtrip(tmp_path, CASES["simple_rnn_relu_no_bias"]()).activation == "relu"


def test_loaded_params_run(tmp_path):
    params = jrnn.GRU.init(K1, 3, 4, initializer="pytorch")
    xs = jax.random.normal(K3, (2, 5, 3))
    want, _ = jrnn.rnn_apply(params, xs)
    got, _ = jax.jit(jrnn.rnn_apply)(roundtrip(tmp_path, params), xs)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_float64(tmp_path):
    path = tmp_path / "f64.ckpt"
    with jax.enable_x64(True):
        params = {"gru": jrnn.GRU.init(K1, 3, 4, dtype=jnp.float64, initializer="pytorch"),
                  "step": jnp.asarray(2**40, jnp.int64), "numpy": np.linspace(0, 1, 7)}
        assert params["gru"].kernel.dtype == jnp.float64
        jrnn.save(path, params)
        assert_same(jrnn.load(path), params)
    # Without x64, jax would silently make them float32: refuse instead.
    with pytest.raises(ValueError, match=r"f64.ckpt' cannot be loaded: `params\['gru'\].kernel` is a float64 "
                                         r"jax array; enable 64-bit jax"):
        jrnn.load(path)
    jrnn.save(path, {"numpy": np.linspace(0, 1, 7)})  # numpy float64 needs no x64
    assert jrnn.load(path)["numpy"].dtype == np.float64


def test_file_format(tmp_path):
    """An uncompressed zip: `__jrnn__.json` and `arrays/<i>.npy`, readable with np.load; deterministic."""
    params = CASES["training_dict"]()
    jrnn.save(tmp_path / "a.ckpt", params)
    jrnn.save(str(tmp_path / "b.ckpt"), jrnn.load(tmp_path / "a.ckpt"))
    data = (tmp_path / "a.ckpt").read_bytes()
    assert data == (tmp_path / "b.ckpt").read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        n = len(jax.tree.leaves(params))
        assert zf.namelist() == ["__jrnn__.json"] + [f"arrays/{i}.npy" for i in range(n)]
        assert all(info.compress_type == zipfile.ZIP_STORED for info in zf.infolist())
        header = json.loads(zf.read("__jrnn__.json"))
    assert header["leaf_paths"] == [
        jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    assert (header["format"], header["version"], header["num_arrays"]) == ("jrnn-checkpoint", 2, n)
    assert header["leaf_paths"][:3] == ["['readout']['b']", "['readout']['w']", "['rnn'].layers[0].kernel"]
    with np.load(tmp_path / "a.ckpt", allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["arrays/0"], params["rnn"].layers[0].kernel)
    assert sorted(os.listdir(tmp_path)) == ["a.ckpt", "b.ckpt"]


def test_overwrite(tmp_path):
    path = tmp_path / "p.ckpt"
    jrnn.save(path, jrnn.LSTM.init(K1, 3, 4))
    new = jrnn.GRU.init(K2, 2, 5)
    jrnn.save(path, new)
    assert_same(jrnn.load(path), new)
    assert os.listdir(tmp_path) == ["p.ckpt"]


# ---- a crash while saving ----

def _boom(*args, **kwargs):
    raise OSError("disk on fire")


def _partial_write_then_boom(out, *args, **kwargs):
    out.write(b"\x93NUMPY partial")
    raise OSError("disk on fire")


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


CRASHES = {
    "write_array": (np.lib.format, "write_array", _partial_write_then_boom),
    "fsync": (os, "fsync", _boom),
    "replace": (os, "replace", _boom),
    "interrupt": (os, "replace", _interrupt),
}


@pytest.mark.parametrize("crash", CRASHES)
def test_crash_mid_save_keeps_previous_checkpoint(tmp_path, monkeypatch, crash):
    path = tmp_path / "p.ckpt"
    old = jrnn.LSTM.init(K1, 3, 4)
    jrnn.save(path, old)
    before = path.read_bytes()
    module, name, fail = CRASHES[crash]
    with monkeypatch.context() as m:
        m.setattr(module, name, fail)
        with pytest.raises((OSError, KeyboardInterrupt)):
            jrnn.save(path, jrnn.GRU.init(K2, 3, 4))
        with pytest.raises((OSError, KeyboardInterrupt)):
            jrnn.save(tmp_path / "new.ckpt", old)
    assert path.read_bytes() == before
    assert_same(jrnn.load(path), old)
    assert os.listdir(tmp_path) == ["p.ckpt"]  # no temp file, no half-written new.ckpt


# ---- unsupported objects ----

class Custom:
    pass


class OtherState(NamedTuple):
    h: jax.Array


@dataclasses.dataclass
class PlainDataclass:  # not a pytree node: a leaf of an unsupported type
    a: Any


def _with_lambda_activation():
    """A SimpleRNN with a lambda for `activation`, past its constructor's checks (as a user could make it)."""
    params = jrnn.SimpleRNN.init(K1, 1, 1)
    object.__setattr__(params, "activation", lambda z: z)
    return params


UNSUPPORTED = {
    "lambda": (lambda x: x, r"`params` of type builtins.function"),
    "custom": ({"a": [Custom()]}, r"`params\['a'\]\[0\]` of type test_checkpoint.Custom"),
    "complex": ({"z": 1j}, r"`params\['z'\]` of type builtins.complex"),
    "bytes": ([b"x"], r"`params\[0\]` of type builtins.bytes"),
    "set": ({1, 2}, r"`params` of type builtins.set"),
    "plain_dataclass": (OtherState(PlainDataclass(1)), r"`params.h` of type test_checkpoint.PlainDataclass"),
    "mixed_keys": ({1: jnp.zeros(1), "a": jnp.zeros(1)}, r"dict keys must be all str or all int; got keys "
                                                           r"of types \['int', 'str'\]"),
    "bool_key": ({True: jnp.zeros(1)}, r"got keys of types \['bool'\]"),
    "int4": (jnp.zeros(2, jnp.int4), r"arrays of dtype int4 are not supported"),
    "object_dtype": (np.array([None]), r"arrays of dtype object are not supported"),
    "str_dtype": (np.array(["a"]), r"arrays of dtype <U1 are not supported"),
    "static_lambda": (_with_lambda_activation(),
                      r"`params.activation`: a static setting must be .* got function"),
}


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_unsupported_object_raises_type_error(tmp_path, name):
    obj, match = UNSUPPORTED[name]
    with pytest.raises(TypeError, match=match):
        jrnn.save(tmp_path / "p.ckpt", obj)
    assert os.listdir(tmp_path) == []


# ---- bad files ----

def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        jrnn.load(tmp_path / "nope.ckpt")


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "x.ckpt"
    jrnn.save(path, {"rnn": jrnn.LSTM.init(K1, 2, 3, initializer="pytorch"), "state": jrnn.LSTMState(
        jnp.full((3,), 1.25), jnp.full((3,), -7.5)), "key": K2, "lr": 0.5})
    return path


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.99])
def test_truncated_file(saved, fraction):
    data = saved.read_bytes()
    saved.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(ValueError, match=r"`path` '.*x.ckpt' is not a jrnn checkpoint: not a complete zip"):
        jrnn.load(saved)


@pytest.mark.parametrize("content", [np.random.default_rng(0).bytes(4096), b"hello\n"])
def test_random_file(tmp_path, content):
    path = tmp_path / "x.ckpt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"`path` '.*x.ckpt' is not a jrnn checkpoint"):
        jrnn.load(path)


def test_foreign_npz(tmp_path):
    np.savez(tmp_path / "foreign.npz", a=np.ones(3))
    with pytest.raises(ValueError, match=r"foreign.npz' is not a jrnn checkpoint: .*no '__jrnn__.json'"):
        jrnn.load(tmp_path / "foreign.npz")


def test_flipped_byte_in_array_is_caught(saved):
    data = bytearray(saved.read_bytes())
    target = np.full((3,), -7.5, np.float32).tobytes()  # the array of `state.c`
    at = data.find(target)
    assert at > 0 and data.find(target, at + 1) == -1
    data[at + 5] ^= 0x01
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"x.ckpt' is a damaged jrnn checkpoint: .*Bad CRC-32 for file 'arr"):
        jrnn.load(saved)


def test_every_flipped_byte_is_caught_or_harmless(tmp_path):
    """No single flipped byte anywhere in the file gives a different pytree: a ValueError or the same one."""
    path = tmp_path / "x.ckpt"
    rng = np.random.default_rng(0)
    params = jrnn.SimpleRNN(rng.normal(size=(1, 1)), rng.normal(size=(1, 1)), rng.normal(size=(1,)), "relu")
    jrnn.save(path, params)
    data = path.read_bytes()
    with open(path, "r+b", buffering=0) as f:  # flips one byte in place, then restores it
        for i in range(len(data)):
            f.seek(i)
            f.write(bytes([data[i] ^ 0x10]))
            try:
                loaded = jrnn.load(path)
            except ValueError:
                pass
            else:
                assert_same(loaded, params)
            f.seek(i)
            f.write(data[i:i + 1])


def _rewrite(path, edit_header=None, edit_members=None):
    """Rewrites the archive with valid CRCs after editing the header dict or the members dict."""
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    header = json.loads(members["__jrnn__.json"])
    if edit_header:
        edit_header(header)
    members["__jrnn__.json"] = json.dumps(header).encode()
    if edit_members:
        edit_members(members)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _npy(array, allow_pickle=False):
    out = io.BytesIO()
    np.lib.format.write_array(out, array, allow_pickle=allow_pickle)
    return out.getvalue()


def _lstm(h):
    return h["tree"]["values"][0]


BAD_SPECS = {
    "format_name": (lambda h: h.update(format="other"), None, r"not a jrnn checkpoint: .*does not name the"),
    "version": (lambda h: h.update(version=3), None, r"format version 3; this jrnn reads versions 1 and 2"),
    "unknown_class": (lambda h: _lstm(h).update({"class": "Nope"}), None,
                      r"cannot be loaded: `params\['rnn'\]` is of class 'Nope', which this jrnn does not"),
    "import_path_class": (lambda h: _lstm(h).update({"class": "os.system"}), None, r"class 'os.system'"),
    "shape": (lambda h: _lstm(h)["fields"]["kernel"].update(shape=[8, 3]), None,
              r"damaged jrnn checkpoint: `params\['rnn'\].kernel`: the spec says float32 \[8, 3\]; the file "
              r"holds <?float32 \[2, 12\]"),
    "dtype": (lambda h: _lstm(h)["fields"]["kernel"].update(dtype="float16"), None, r"the spec says float16"),
    "object_dtype": (lambda h: _lstm(h)["fields"]["kernel"].update(dtype="object"), None,
                     r"unsupported dtype 'object'"),
    "pickled_member": (None, lambda m: m.update({"arrays/0.npy": _npy(np.array([{}], object), True)}),
                       r"the file holds object"),
    "trailing_bytes": (None, lambda m: m.update({"arrays/0.npy": m["arrays/0.npy"] + b"\0\0\0\0"}),
                       r"bytes of array data; expected"),
    "missing_member": (None, lambda m: m.pop("arrays/3.npy"), r"do not match the spec's 6 arrays"),
    "extra_member": (None, lambda m: m.update({"evil.py": b"print(1)"}), r"do not match the spec's 6 arrays"),
    "unused_array": (lambda h: h["tree"]["values"][1]["items"].__setitem__(1, {"type": "none"}), None,
                     r"the spec uses 5 of its 6 arrays"),
    "array_used_twice": (lambda h: _lstm(h)["fields"]["bias"].update(index=0), None, r"used twice"),
    "missing_field": (lambda h: _lstm(h)["fields"].pop("bias"), None, r"LSTM has array fields"),
    "extra_static": (lambda h: _lstm(h)["static"].update(reset_after=True), None, r"static fields \[\]; the"),
    "node_type": (lambda h: _lstm(h).update(type="pickle"), None, r"unknown node type 'pickle'"),
    "not_a_dict": (lambda h: h.update(tree=[1, 2]), None, r"expected a dict in the spec"),
    "header_not_json": (None, lambda m: m.update({"__jrnn__.json": b"\xff{"}), r"is not a jrnn checkpoint"),
    "header_nan": (None, lambda m: m.update({"__jrnn__.json": b'{"format": NaN}'}), r"holds NaN, which is"),
    "json_too_deep": (None, lambda m: m.update({"__jrnn__.json": b"[" * 100_000}),
                      r"is not a jrnn checkpoint: RecursionError"),
    "spec_too_deep": (lambda h: h.update(tree=_nested_lists(150)), None, r"nested deeper than 100 levels"),
    "key_impl": (lambda h: h["tree"]["values"][2].update(impl="os.system"), None,
                 r"`params\['key'\]`: no PRNG key of impl 'os.system' has data uint32 \[2\]"),
    "key_data_kind": (lambda h: h["tree"]["values"][2]["data"].update(kind="numpy"), None,
                      r"the data of a PRNG key must be a jax array"),
    "float_bits": (lambda h: h["tree"]["values"][3].update(bits="nan"), None,
                   r"`params\['lr'\]`: bad float bits 'nan'"),
    "int_for_bool": (lambda h: h["tree"]["values"][3].update(type="bool", value=1), None,
                     r"`params\['lr'\]`: expected a bool in the spec; got 1"),
    "mixed_dict_keys": (lambda h: h["tree"].update(keys=["rnn", 1, "key", "lr"]), None, r"bad dict keys"),
}


def _nested_lists(depth: int) -> dict:
    spec = {"type": "none"}
    for _ in range(depth):
        spec = {"type": "list", "items": [spec]}
    return spec


@pytest.mark.parametrize("name", BAD_SPECS)
def test_bad_spec(saved, name):
    edit_header, edit_members, match = BAD_SPECS[name]
    _rewrite(saved, edit_header, edit_members)
    with pytest.raises(ValueError, match=r"`path` '.*x.ckpt' .*" + match):
        jrnn.load(saved)


def test_registry_lookup_is_by_name_only():
    assert {cls.__name__ for cls in checkpoint.CLASSES} == {
        "SimpleRNN", "LSTM", "GRU", "MinGRU", "MinLSTM", "LRU", "ConvLSTM", "Bidirectional", "Stack",
        "Function",
        "LSTMState"}


# ---- whole training states ----

NAN_WITH_PAYLOAD = struct.unpack(">d", bytes.fromhex("fff8000000000123"))[0]
PARAMS_DICT_MASK = {"rnn": False, "readout": True}  # optax.masked: MaskedNode where False


def training_state() -> dict:
    """Params, optax states after an update (chained, masked), Python scalars, keys, arrays of every dtype."""
    params = CASES["training_dict"]()
    grads = jax.tree.map(lambda a: jnp.full_like(a, 0.5), params)
    adam = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    masked = optax.masked(optax.sgd(0.1, momentum=0.9), PARAMS_DICT_MASK)
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam takes `b1 ** count` (float ** int32)
        _, adam_state = adam.update(grads, adam.init(params), params)
        _, masked_state = masked.update(grads, masked.init(params), params)
    return {
        "params": params, "adam": adam_state, "masked": masked_state, "empty": optax.EmptyState(),
        "step": 12, "big": -(2**100), "lr": 1e-3, "neg_zero": -0.0, "nan": NAN_WITH_PAYLOAD, "inf": -math.inf,
        "done": False, "name": "run \u00e9 \u2603 \ud800", "none": None, "int_keys": {3: 1.5, 1: np.int8(5)},
        "key": jax.random.key(7), "keys": jax.random.split(jax.random.key(1), 3),
        "rbg_key": jax.random.key(0, impl="rbg"), "raw_key": jax.random.PRNGKey(3),
        "numpy_scalars": [np.float32(-1.5), np.bool_(True), np.uint64(2**64 - 1), np.float64(np.pi),
                          np.array(0.25, jnp.bfloat16)[()]],
        "arrays": CASES["containers"](),
    }


def test_training_state_roundtrip_with_template(tmp_path):
    state = training_state()
    path = tmp_path / "state.ckpt"
    jrnn.save(path, state)
    loaded = jrnn.load(path, like=training_state())
    assert_same(loaded, state)
    assert type(loaded["adam"][1][0]) is optax.ScaleByAdamState
    assert type(loaded["masked"]) is optax.MaskedState
    assert type(loaded["masked"].inner_state[0].trace["rnn"]) is optax.MaskedNode
    assert type(loaded["step"]) is int and type(loaded["done"]) is bool and type(loaded["lr"]) is float
    # Templates need only kinds, dtypes and shapes: `jax.eval_shape` of the arrays is enough.
    like = {**training_state(), "params": jax.eval_shape(lambda: CASES["training_dict"]())}
    assert_same(jrnn.load(path, like=like), state)


def test_training_state_without_template_gives_plain_containers(tmp_path):
    state = training_state()
    path = tmp_path / "state.ckpt"
    jrnn.save(path, state)
    loaded = jrnn.load(path)
    assert_same_leaves(jax.tree.leaves(loaded), jax.tree.leaves(state))
    # optax's states come back as tuples; jrnn's classes, dicts, lists and None as themselves.
    clip, (adam, scale) = loaded["adam"]
    assert clip == () and scale == () and loaded["empty"] == ()
    assert type(adam) is tuple and len(adam) == 3  # (count, mu, nu)
    assert_same(adam[1], state["adam"][1][0].mu)
    assert type(adam[1]["rnn"]) is jrnn.Stack
    trace = {"readout": state["masked"].inner_state[0].trace["readout"], "rnn": ()}  # MaskedNode -> ()
    assert jax.tree.structure(loaded["masked"]) == jax.tree.structure((((trace,), ()),))
    assert loaded["none"] is None and type(loaded["numpy_scalars"]) is list
    assert list(loaded["int_keys"]) == [3, 1]  # the saved order (`jax.tree` sorts them, so leaves agree)


class Unsorted(NamedTuple):
    z: Any
    a: Any


def test_foreign_nodes_come_back_as_tuples_in_leaf_order(tmp_path):
    tree = {"nt": Unsorted(z=jnp.ones(1), a=[2, None, "s"]),
            "od": collections.OrderedDict([("y", 1.5), ("x", np.int8(3))]), "dd": collections.defaultdict(
                int, {"b": 1, "a": 2})}
    path = tmp_path / "t.ckpt"
    jrnn.save(path, tree)
    loaded = jrnn.load(path)
    want = {"nt": (0, [0, None, 0]), "od": (0, 0), "dd": (0, 0)}
    assert jax.tree.structure(loaded) == jax.tree.structure(want)
    assert_same_leaves(jax.tree.leaves(loaded), jax.tree.leaves(tree))
    assert loaded["dd"] == (2, 1) and loaded["od"][0] == 1.5  # defaultdict sorted, OrderedDict not
    assert_same(jrnn.load(path, like=tree), tree)


class Model(eqx.Module):
    linear: eqx.nn.Linear
    rnn: jrnn.GRU
    scale: float
    name: str = eqx.field(static=True)


def test_equinox_module_roundtrip(tmp_path):
    model = Model(eqx.nn.Linear(3, 2, key=K1), jrnn.GRU.init(K2, 2, 4), 0.75, "m")
    path = tmp_path / "eqx.ckpt"
    jrnn.save(path, model)
    loaded = jrnn.load(path, like=Model(eqx.nn.Linear(3, 2, key=K3), jrnn.GRU.init(K3, 2, 4), 0.0, "m"))
    assert type(loaded) is Model and loaded.name == "m"
    assert_same(loaded, model)
    plain = jrnn.load(path)
    assert type(plain) is tuple and type(plain[1]) is jrnn.GRU and plain[2] == 0.75
    assert_same_leaves(jax.tree.leaves(plain), jax.tree.leaves(model))


class Pair(NamedTuple):
    h: Any


BASE = {"a": jnp.arange(6, dtype=jnp.float32).reshape(2, 3), "b": Pair(jnp.ones(4, jnp.int32)), "c": 1,
        "k": jax.random.key(5)}

MISFITS = {
    "leaf_count": ({**BASE, "d": 1.0}, r"the file holds 4 leaves, `like` 5"),
    "shape": ({**BASE, "a": jnp.zeros((3, 2))},
              r"`like\['a'\]` is float32 \[3, 2\]; the file holds float32 \[2, 3\]"),
    "dtype": ({**BASE, "a": jnp.zeros((2, 3), jnp.bfloat16)},
              r"`like\['a'\]` is bfloat16 \[2, 3\]; the file holds float32 \[2, 3\]"),
    "python_type": ({**BASE, "c": 1.0}, r"`like\['c'\]` is a Python float; the file holds a Python int"),
    "bool_for_int": ({**BASE, "c": True}, r"`like\['c'\]` is a Python bool; the file holds a Python int"),
    "array_for_scalar": ({**BASE, "c": jnp.asarray(1)},
                         r"`like\['c'\]` is int32 \[\]; the file holds a Python int"),
    "key_impl": ({**BASE, "k": jax.random.key(0, impl="rbg")},
                 r"`like\['k'\]` is key<rbg> \[\]; the file holds key<fry> \[\]"),
    "renamed_key": ({"a": BASE["a"], "b": BASE["b"], "cc": 1, "k": BASE["k"]},
                    r"`like\['cc'\]` is leaf 2; the file's leaf 2 is `params\['c'\]`"),
    "dict_for_namedtuple": ({**BASE, "b": {"h": BASE["b"].h}},
                            r"`like\['b'\]\['h'\]` is leaf 1; the file's leaf 1 is `params\['b'\].h`"),
    "not_storable": ({**BASE, "c": print},
                     r"`like\['c'\]` is a builtins.builtin_function_or_method, which a checkpoint cannot"),
}


@pytest.mark.parametrize("name", MISFITS)
def test_template_that_does_not_fit(tmp_path, name):
    path = tmp_path / "x.ckpt"
    jrnn.save(path, BASE)
    assert_same(jrnn.load(path, like=BASE), BASE)
    like, match = MISFITS[name]
    with pytest.raises(ValueError, match=r"`path` '.*x.ckpt' does not fit `like`: " + match):
        jrnn.load(path, like=like)


def test_version_1_file_still_loads(tmp_path):
    """A file written by jrnn's format-1 `save` (at commit e89fccf), against the params it was made from."""
    path = tmp_path / "v1.ckpt"
    path.write_bytes(zlib.decompress(base64.b64decode(V1_FILE)))
    with zipfile.ZipFile(path) as zf:
        assert json.loads(zf.read("__jrnn__.json"))["version"] == 1
    want = {"rnn": jrnn.SimpleRNN(jnp.array([[0.5, -1.0]]), jnp.array([[0.25, 2.0], [-3.0, 0.125]]), None,
                                  "relu"), "n": np.array([7], np.int16)}
    assert_same(jrnn.load(path), want)
    assert_same(jrnn.load(path, like=want), want)


V1_FILE = (
    "eNqtVEFrE0EUnm2iglTwkB+wDshaSGp3Kx5KqXrxEgyLUkFKWcbdCZ1mM7vMTEJDWAg59RgovXn07k+w/gKP3j0IXv0D+mayq5mS"
    "1qKd3WXmfe99M++b99iwXas30HzcQ+++7H5zVhDS3x1AouhQcB5F64cy42PczUSfKLzlYg234gMa9/KMcYWbLh5SIVnGweuDxQf9"
    "iAhBRhKATQCUoBSWY6xGuV7ghMWG16MmZg/DltrmeF/vRtIBNfgCgygSp0RKHTZfAPqK9fOUvux0NNplNE2kOadHBaepdaRJSIcx"
    "ntAjQDZgnVTebpoRtRlovzwgBtsDKYFOpwcMo5sc4QJsQeOBEJSr6CrH+H87JrjgmLeMSGtrnnGKC+2SiigWGyeJFRuCZS4fUksH"
    "JuSShILFhKB+/mNb9WIuUMl8hIv9ogihV1q/e+XDffX1ZzlWUQPNq/1wY53nIwfdRcdlZDWfdHZfhG8cNERjL6EyFt6W6213H3lN"
    "14PGUoLwKBMJ1fhzkkoKuMkI7Ae6DmtNt3D/edyGFJ4gNPloq1h7zU+XqPArFbMycnYdKoLrUDHZgTSewnsG846t5tPn3rMlaoJK"
    "zbSMnF6qhgVXrMn/aQE1t1DYdlYatYv/QNV476Dz/yNNbdXshjwuG27VojZhs8X2PM/UTTAri2wzf/xh+suY+sKn5YXazLMasq4/"
    "bN+4qT11eL7DPKlr6xfF4VVm"
)


def test_save_into_missing_directory_names_the_path(tmp_path):
    target = tmp_path / "no" / "such" / "p.ckpt"
    with pytest.raises(FileNotFoundError,
                       match=r"`path` '.*/no/such/p.ckpt': the directory '.*/no/such' does not exist$"):
        jrnn.save(target, {"a": jnp.zeros(1)})
    assert os.listdir(tmp_path) == []


def test_too_deep_or_too_big_to_save(tmp_path, monkeypatch):
    deep = None
    for _ in range(150):
        deep = [deep]
    with pytest.raises(ValueError, match=r"Cannot save `params(\[0\]){101}`: the tree is nested deeper th"):
        jrnn.save(tmp_path / "p.ckpt", deep)
    monkeypatch.setattr(checkpoint, "MAX_HEADER_BYTES", 1000)
    with pytest.raises(ValueError, match=r"its spec takes \d+ bytes, over the 1000 a checkpoint allows"):
        jrnn.save(tmp_path / "p.ckpt", {"s": "x" * 1000})
    assert os.listdir(tmp_path) == []


# ---- rebuilt params pass their constructors' checks ----

@jrnn.register
@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CheckpointTestCell:
    w: jax.Array
    size: int = dataclasses.field(default=2, metadata=dict(static=True))

    def __post_init__(self):
        if hasattr(self.w, "shape") and self.w.shape != (self.size,):
            raise ValueError(f"`w` must have shape ({self.size},); got {self.w.shape}")


def _stack():
    return {"model": [jrnn.Stack((jrnn.LSTM.init(K1, 3, 4), jrnn.LSTM.init(K2, 4, 2)))]}


INVALID = {
    "stack_sizes": (_stack, lambda t: t["values"][0]["items"][0]["fields"]["layers"]["items"].reverse(),
                    r"`params\['model'\]\[0\]`: the file's fields do not make a valid Stack: "
                    r"`Stack.layers\[1\]` takes 3 input features but `Stack.layers\[0\]` gives 2"),
    "bidirectional_merge": (lambda: jrnn.Bidirectional.init(K1, jrnn.GRU, 3, 4),
                            lambda t: t["static"].update(merge="bogus"),
                            r"`params`: the file's fields do not make a valid Bidirectional: .*'bogus'"),
    "user_cell": (lambda: {"c": CheckpointTestCell(jnp.zeros(2))}, lambda t: t["values"][0]["static"].update(
        size=3), r"`params\['c'\]`: the file's fields do not make a valid CheckpointTestCell: `w` must have"),
    "gru_bias_shape": (lambda: {"gru": jrnn.GRU.init(K1, 3, 4)},  # bias [2, 3H] needs reset_after=True
                       lambda t: t["values"][0]["static"].update(reset_after=False),
                       r"`params\['gru'\]`: the file's fields do not make a valid GRU: .*bias"),
}


@pytest.mark.parametrize("name", INVALID)
def test_loaded_params_pass_their_class_checks(tmp_path, name):
    make, edit, match = INVALID[name]
    path = tmp_path / "x.ckpt"
    jrnn.save(path, make())
    assert_same(jrnn.load(path), make())
    _rewrite(path, lambda h: edit(h["tree"]))
    with pytest.raises(ValueError, match=r"`path` '.*x.ckpt' is a damaged jrnn checkpoint: " + match):
        jrnn.load(path)


# ---- bounded: crafted sizes and compressed members ----

def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _set_central_sizes(path: Path, name: str, size: int) -> None:
    """Writes `size` as both sizes (stored, uncompressed) of member `name` in the zip's central directory."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        name_len = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46:at + 46 + name_len] == name.encode():
            struct.pack_into("<II", data, at + 20, size, size)
            path.write_bytes(bytes(data))
            return
        at = data.find(b"PK\x01\x02", at + 1)
    raise AssertionError(f"no member {name}")


@pytest.mark.parametrize("spec_agrees", [False, True])
def test_member_claiming_4_gib_is_refused_before_reading(tmp_path, spec_agrees):
    path = tmp_path / "x.ckpt"
    jrnn.save(path, np.zeros(4, np.float32))
    n = 2**30 - 64  # float32: 4 GiB - 256 bytes, then 128 bytes of .npy header: under zip64's 0xffffffff
    if spec_agrees:
        _rewrite(path, lambda h: h["tree"].update(shape=[n]))
    _set_central_sizes(path, "arrays/0.npy", 4 * n + 128)
    assert path.stat().st_size < 1024
    def load():  # noqa: E306
        with pytest.raises(ValueError, match=r"x.ckpt' is a damaged jrnn checkpoint: the zip directory gives "
                                             r"its member 'arrays/0.npy' 4294967168 bytes .*; the file has"):
            jrnn.load(path)
    assert _peak_bytes(load) < 1 << 20


def _bomb(path: Path, compress_header: bool) -> None:
    """A checkpoint whose one float32 array, 64 MiB of zeros, is a deflated member of about 64 KiB."""
    n = 16 << 20
    header = {"format": "jrnn-checkpoint", "version": 2, "num_arrays": 1, "leaf_paths": [""],
              "tree": {"type": "array", "index": 0, "dtype": "float32", "shape": [n], "kind": "numpy"}}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("__jrnn__.json", json.dumps(header),
                    zipfile.ZIP_DEFLATED if compress_header else zipfile.ZIP_STORED)
        info = zipfile.ZipInfo("arrays/0.npy")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w") as out:
            np.lib.format.write_array_header_1_0(out, {"descr": "<f4", "fortran_order": False, "shape": (n,)})
            zeros = bytes(1 << 20)
            for _ in range(64):
                out.write(zeros)


@pytest.mark.parametrize("compress_header, match", [
    (False, r"is a damaged jrnn checkpoint: its member 'arrays/0.npy' is compressed \(zip method 8\)"),
    (True, r"is not a jrnn checkpoint: its member '__jrnn__.json' is compressed"),
])
def test_compressed_member_is_refused_unread(tmp_path, compress_header, match):
    path = tmp_path / "bomb.ckpt"
    _bomb(path, compress_header)
    assert path.stat().st_size < 128 << 10
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("arrays/0.npy").file_size > 64 << 20
    def load():  # noqa: E306
        with pytest.raises(ValueError, match=r"bomb.ckpt' " + match):
            jrnn.load(path)
    assert _peak_bytes(load) < 1 << 20


def test_header_size_is_bounded(saved, monkeypatch):
    size = zipfile.ZipFile(saved).getinfo("__jrnn__.json").file_size
    monkeypatch.setattr(checkpoint, "MAX_HEADER_BYTES", size - 1)
    with pytest.raises(ValueError, match=rf"x.ckpt' is not a jrnn checkpoint: its '__jrnn__.json' member has "
                                         rf"{size} bytes; at most {size - 1} expected"):
        jrnn.load(saved)


# ---- the digits demo, resumed ----

def _import_digits():
    if "digits" not in sys.modules:  # tests/test_examples.py imports it the same way
        spec = importlib.util.spec_from_file_location("digits", ROOT / "examples" / "digits.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["digits"] = module
        spec.loader.exec_module(module)
    return sys.modules["digits"]


def test_digits_resumed_run_equals_uninterrupted_run(tmp_path):
    """2 epochs in one go == 1 epoch, stop, resume from the saved state, 1 more: same params, bit for bit."""
    digits = _import_digits()
    flags = ["--epochs", "2", "--hidden", "8", "--no-bidirectional", "--batch-size", "256", "--warmup-epochs",
             "1", "--no-progress"]
    part = str(tmp_path / "part.ckpt")
    whole = digits.main([*flags, "--out", str(tmp_path / "whole"), "--checkpoint", str(tmp_path / "w.ckpt")])
    first = digits.main([*flags, "--out", str(tmp_path / "part"), "--checkpoint", part, "--stop-after", "1"])
    after_one = jrnn.load(part)
    assert after_one["epoch"] == 1 and len(first["history"]["loss"]) == 1
    with pytest.raises(ValueError, match=r"holds a run with other settings \(hidden, seed\)"):
        digits.main([*flags, "--hidden", "9", "--seed", "1", "--out", str(tmp_path), "--checkpoint", part])
    resumed = digits.main([*flags, "--out", str(tmp_path / "part"), "--checkpoint", part])

    for key in ("loss", "test_accuracy"):
        assert len(resumed["history"][key]) == 2 and resumed["history"][key] == whole["history"][key]
    a, b = jrnn.load(tmp_path / "w.ckpt"), jrnn.load(part)
    for state in (a, b):
        state["history"].pop("samples_per_s")  # timings
    assert a["epoch"] == 2 and a["step"] == 2 * (1437 // 256)
    assert_same(b, a)  # params, optax state, key, shuffling state, history, best params
    assert (tmp_path / "whole" / "best.ckpt").read_bytes() == (tmp_path / "part" / "best.ckpt").read_bytes()
    moved = [not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(after_one["params"]),
                                                       jax.tree.leaves(a["params"]), strict=True)]
    assert all(moved)  # epoch 2 did change every array: the comparison above is not trivial
