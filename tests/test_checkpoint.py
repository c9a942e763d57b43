"""`jrnn.save` / `jrnn.load`: exact round trips, atomic writes, and a ValueError for every bad file."""

import collections
import io
import json
import os
import zipfile
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import checkpoint

K1, K2, K3 = jax.random.split(jax.random.key(0), 3)


def assert_same(got, want):
    """Equal treedefs (classes, static settings, containers) and leaves of equal type, dtype, shape, bits."""
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert isinstance(a, np.ndarray) == isinstance(b, np.ndarray), (type(a), type(b))
        assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
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
    assert (header["format"], header["version"], header["num_arrays"]) == ("jrnn-checkpoint", 1, n)
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


UNSUPPORTED = {
    "lambda": (lambda x: x, r"`params` of type builtins.function"),
    "custom": ({"a": [Custom()]}, r"`params\['a'\]\[0\]` of type test_checkpoint.Custom"),
    "python_float": ({"lr": 1e-3}, r"`params\['lr'\]` of type builtins.float"),
    "python_int": ([1], r"`params\[0\]` of type builtins.int"),
    "numpy_scalar": (np.float32(1), r"type numpy.float32"),
    "int_key": ({1: jnp.zeros(1)}, r"dict keys must be str; got int 1"),
    "ordered_dict": (collections.OrderedDict(a=jnp.zeros(1)), r"type collections.OrderedDict"),
    "other_namedtuple": (OtherState(jnp.zeros(1)), r"type test_checkpoint.OtherState"),
    "object_dtype": (np.array([None]), r"arrays of dtype object are not supported"),
    "str_dtype": (np.array(["a"]), r"arrays of dtype <U1 are not supported"),
    "static_lambda": (jrnn.SimpleRNN(jnp.zeros((1, 1)), jnp.zeros((1, 1)), None, activation=lambda z: z),
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
        jnp.full((3,), 1.25), jnp.full((3,), -7.5))})
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
    "version": (lambda h: h.update(version=2), None, r"format version 2; this jrnn reads version 1"),
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
    "missing_member": (None, lambda m: m.pop("arrays/3.npy"), r"do not match the spec's 5 arrays"),
    "extra_member": (None, lambda m: m.update({"evil.py": b"print(1)"}), r"do not match the spec's 5 arrays"),
    "unused_array": (lambda h: h["tree"]["values"][1]["items"].__setitem__(1, {"type": "none"}), None,
                     r"the spec uses 4 of its 5 arrays"),
    "array_used_twice": (lambda h: _lstm(h)["fields"]["bias"].update(index=0), None, r"used twice"),
    "missing_field": (lambda h: _lstm(h)["fields"].pop("bias"), None, r"LSTM has array fields"),
    "extra_static": (lambda h: _lstm(h)["static"].update(reset_after=True), None, r"static fields \[\]; the"),
    "node_type": (lambda h: _lstm(h).update(type="pickle"), None, r"unknown node type 'pickle'"),
    "not_a_dict": (lambda h: h.update(tree=[1, 2]), None, r"expected a dict in the spec"),
    "header_not_json": (None, lambda m: m.update({"__jrnn__.json": b"\xff{"}), r"is not a jrnn checkpoint"),
}


@pytest.mark.parametrize("name", BAD_SPECS)
def test_bad_spec(saved, name):
    edit_header, edit_members, match = BAD_SPECS[name]
    _rewrite(saved, edit_header, edit_members)
    with pytest.raises(ValueError, match=r"`path` '.*x.ckpt' .*" + match):
        jrnn.load(saved)


def test_registry_lookup_is_by_name_only():
    assert {cls.__name__ for cls in checkpoint.CLASSES} == {
        "SimpleRNN", "LSTM", "GRU", "MinGRU", "MinLSTM", "LRU", "Bidirectional", "Stack", "LSTMState"}
