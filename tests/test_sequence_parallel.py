"""Sequence parallelism (`rnn_apply(..., axis_name=...)` in `jax.shard_map`): equal to one device on 8
simulated CPU devices (tests/multidevice.py, in a subprocess: the device count is fixed when JAX starts),
and its errors."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import jrnn

HERE = Path(__file__).resolve().parent


def test_split_over_8_devices_equals_one_device():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, str(HERE / "multidevice.py")], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("gradients equal one device's") == 2, out.stdout
    # What crosses the devices: the blocks' maps forward, their cotangents and the weight gradients back.
    assert "collective all-reduce: 3 x" in out.stdout and "all-gather" not in out.stdout, out.stdout
    assert "example: loss" in out.stdout, out.stdout  # examples/sequence_parallel.py trained


def test_errors():
    xs = jnp.ones((2, 5, 3))
    mingru = jrnn.MinGRU.init(jax.random.key(0), 3, 4)
    with pytest.raises(ValueError, match=r"`axis_name` 't' is not a mesh axis here: call `rnn_apply` inside "
                                         r"`jax.shard_map`"):
        jrnn.rnn_apply(mingru, xs, axis_name="t")
    with pytest.raises(ValueError, match=r"`axis_name` \(a sequence split across devices\) needs cells that "
                                         r"declare `linear` \(MinGRU, MinLSTM, LRU\); got GRU"):
        jrnn.rnn_apply(jrnn.GRU.init(jax.random.key(0), 3, 4), xs, axis_name="t")
    with pytest.raises(ValueError, match=r'`axis_name` runs each block by the chunked or parallel scan; '
                                         r'got mode="sequential"'):
        jrnn.rnn_apply(mingru, xs, axis_name="t", mode="sequential")
    with pytest.raises(ValueError, match=r"`axis_name` with `resets` and `reverse` together"):
        jrnn.rnn_apply(mingru, xs, axis_name="t", reverse=True, resets=jnp.zeros((2, 5), bool))
    with pytest.raises(TypeError, match=r"`axis_name` must be a str, a mesh axis name; got 3"):
        jrnn.rnn_apply(mingru, xs, axis_name=3)
