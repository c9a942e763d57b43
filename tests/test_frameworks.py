"""examples/frameworks.py: jrnn inside Flax NNX, Flax linen and Equinox modules. Each module's logits equal
`rnn_apply` plus the readout by hand; a few optax steps lower the loss; the checkpoint restores the
trained module bit for bit."""

import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

import jrnn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import frameworks  # noqa: E402

# optax's Adam takes `b1 ** count` (float ** int32), which conftest's strict promotion refuses; the
# Equinox and Flax modules also broadcast the readout's bias.
pytestmark = pytest.mark.usefixtures("standard_promotion")


@pytest.fixture
def standard_promotion():
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        yield


STEPS = 30
KEY = jax.random.key(3)
XS = frameworks.data(jax.random.key(9), batch=4)[0]


def _logits_by_hand(rnn, kernel, bias):
    """The reference: `rnn_apply`'s final state times the readout, `[B, H] @ [H, C] + [C]`."""
    return jrnn.rnn_apply(rnn, XS)[1] @ kernel + bias


def _same_leaves(a, b):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def _learned(losses):
    assert len(losses) == STEPS and np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


def test_flax_nnx(tmp_path):
    from flax import nnx

    path = str(tmp_path / "nnx.ckpt")
    losses, model = frameworks.train_nnx(STEPS, KEY, path)
    _learned(losses)
    rnn = jax.tree.map(lambda v: v[...], model.rnn, is_leaf=lambda x: isinstance(x, nnx.Param))
    assert isinstance(rnn, jrnn.GRU)
    want = _logits_by_hand(rnn, model.readout.kernel[...], model.readout.bias[...])
    np.testing.assert_allclose(model(XS), want, rtol=1e-6, atol=1e-6)
    restored = frameworks.restore_nnx(path)
    _same_leaves(nnx.state(restored), nnx.state(model))
    np.testing.assert_array_equal(restored(XS), model(XS))


def test_flax_linen(tmp_path):
    path = str(tmp_path / "linen.ckpt")
    losses, params = frameworks.train_linen(STEPS, KEY, path)
    _learned(losses)
    assert isinstance(params["rnn"], jrnn.GRU)
    logits = frameworks.LinenClassifier().apply({"params": params}, XS)
    np.testing.assert_allclose(logits, _logits_by_hand(params["rnn"], params["Dense_0"]["kernel"],
                                                       params["Dense_0"]["bias"]), rtol=1e-6, atol=1e-6)
    fresh = frameworks.LinenClassifier().init(jax.random.key(5), XS)["params"]
    template = {"params": fresh, "opt_state": optax.adam(frameworks.LEARNING_RATE).init(fresh), "step": 0}
    state = frameworks.restore_linen(path, template)
    assert state["step"] == STEPS and type(state["opt_state"][0]) is optax.ScaleByAdamState
    _same_leaves(state["params"], params)


def test_equinox(tmp_path):
    import equinox as eqx

    path = str(tmp_path / "eqx.ckpt")
    losses, model = frameworks.train_equinox(STEPS, KEY, path)
    _learned(losses)
    want = _logits_by_hand(model.rnn, model.readout.weight.T, model.readout.bias)
    np.testing.assert_allclose(model(XS), want, rtol=1e-6, atol=1e-6)
    restored = frameworks.restore_equinox(path)
    assert isinstance(restored, frameworks.EqxClassifier) and isinstance(restored.rnn, jrnn.GRU)
    assert bool(eqx.tree_equal(restored, model))  # same structure and static settings, same arrays
    _same_leaves(restored, model)

