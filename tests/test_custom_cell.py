"""User-defined cells (examples/custom_cell.py) through every option, against a Python loop over their own
`step` in float64; dropout against jrnn's LSTM; save/load after `jrnn.register`."""

import dataclasses
import functools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import custom_cell  # noqa: E402
from reference import loop  # noqa: E402

# The example's cells broadcast `[H]` weights over the batch as users write them (conftest forbids that).
pytestmark = pytest.mark.usefixtures("allow_rank_promotion")


@pytest.fixture
def allow_rank_promotion():
    with jax.numpy_rank_promotion("allow"):
        yield

B, T, I, H = 3, 7, 4, 5
KINDS = {"peephole": custom_cell.PeepholeLSTM, "layernorm": custom_cell.LayerNormLSTM,
         "indrnn": custom_cell.IndRNN}


def make(kind, seed=0, input_size=I):
    cell = KINDS[kind].init(jax.random.key(seed), input_size, H)
    # Nonzero peepholes, norm gains and offsets: every weight matters.
    leaves, tree = jax.tree.flatten(cell)
    keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
    leaves = [a + 0.3 * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(tree, [a.astype(jnp.float64) for a in leaves])


def reference(cell, xs, h0, **kw):
    """The definition: the cell's own `step` in a Python loop (tests/reference.py)."""
    return loop(cell.step, xs, h0, **kw)


def rand_state(cell, seed=3):
    leaves, tree = jax.tree.flatten(jrnn.initial_state(cell, (B,)))
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [0.5 * jax.random.normal(k, a.shape, a.dtype) for a, k in
                                     zip(leaves, keys, strict=True)])


def loss(ys, h):
    w = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
    return jnp.sum(w * ys) + sum(jnp.sum(jnp.sin(a) ** 2) for a in jax.tree.leaves(h))


def assert_close(got, want, tol=1e-10):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=tol, atol=tol)


LENGTHS = np.array([7, 3, 0])
RESETS = np.zeros((B, T), bool)
RESETS[0, 2] = RESETS[1, 5] = RESETS[2, 1] = True
# The corners of the option matrix; every option appears, each with both unrolls somewhere.
CASES = {
    "lengths_reverse_unroll3_time_major": (dict(lengths=LENGTHS, reverse=True, unroll=3, time_major=True),
                                           dict(lengths=LENGTHS, reverse=True)),
    "resets_unroll_true": (dict(resets=RESETS, reset_state="zeros", unroll=True),
                           dict(resets=RESETS, reset_state="zeros")),
    "resets_reverse_lengths_remat": (dict(resets=RESETS, reset_state="zeros", reverse=True, lengths=LENGTHS,
                                          remat=3, unroll=2),
                                     dict(resets=RESETS, reset_state="zeros", reverse=True, lengths=LENGTHS)),
    "remat_scan": (dict(remat=4, unroll=1, lengths=LENGTHS), dict(lengths=LENGTHS)),
}


@pytest.mark.parametrize("kind, case", [
    ("peephole", "lengths_reverse_unroll3_time_major"), ("peephole", "resets_reverse_lengths_remat"),
    ("layernorm", "resets_unroll_true"), ("indrnn", "remat_scan")])
def test_values_and_grads_equal_the_step_loop_float64(kind, case):
    kw, ref_kw = CASES[case]
    with jax.enable_x64(True):
        cell = make(kind)
        xs = jax.random.normal(jax.random.key(1), (B, T, I), jnp.float64)
        h0 = rand_state(cell)
        zeros = jrnn.initial_state(cell, (B,))
        kw = {k: (zeros if isinstance(v, str) else v) for k, v in kw.items()}
        ref_kw = {k: (zeros if isinstance(v, str) else v) for k, v in ref_kw.items()}

        def run(cell, xs, h0):
            if kw.get("time_major"):
                ys, h = jrnn.rnn_apply(cell, jnp.swapaxes(xs, 0, 1), h0,
                                       **{**kw, "resets": None if kw.get("resets") is None
                                          else np.swapaxes(kw["resets"], 0, 1)})
                return jnp.swapaxes(ys, 0, 1), h
            return jrnn.rnn_apply(cell, xs, h0, **kw)

        ref = functools.partial(reference, **ref_kw)
        both = lambda f: jax.jit(lambda *a: (f(*a), jax.grad(lambda *a: loss(*f(*a)), (0, 1, 2))(*a)))  # noqa: E731
        assert_close(both(run)(cell, xs, h0), both(ref)(cell, xs, h0))


@pytest.mark.parametrize("kind", ["layernorm"])
def test_in_stack_and_bidirectional_equal_the_step_loops(kind):
    with jax.enable_x64(True):
        bi = jrnn.Bidirectional(make(kind, 1), make(kind, 2), "concat")
        top = make(kind, 3, input_size=2 * H)
        model = jrnn.Stack((bi, top))
        xs = jax.random.normal(jax.random.key(1), (B, T, I), jnp.float64)

        def want(model):
            bi, top = model.layers
            zeros = functools.partial(jrnn.initial_state, batch_shape=(B,))
            yf, hf = reference(bi.forward, xs, zeros(bi.forward), lengths=LENGTHS)
            yb, hb = reference(bi.backward, xs, zeros(bi.backward), lengths=LENGTHS, reverse=True)
            y2, h2 = reference(top, jnp.concatenate([yf, yb], -1), zeros(top), lengths=LENGTHS)
            return y2, ((hf, hb), h2)

        got = lambda model: jrnn.rnn_apply(model, xs, lengths=LENGTHS, unroll=2)  # noqa: E731
        both = lambda f: jax.jit(lambda m: (f(m), jax.grad(lambda m: loss(*f(m)))(m)))  # noqa: E731
        assert_close(both(got)(model), both(want)(model))


def test_dropout_on_a_custom_cell_equals_jrnn_lstm():
    """A peephole LSTM with zero peepholes is an LSTM: under the same key, input and recurrent dropout
    must draw the same masks and give jrnn.LSTM's values and gradients (SimpleRNN/LSTM/GRU dropout is
    checked against Keras' semantics in test_layers.py)."""
    lstm = jrnn.LSTM.init(jax.random.key(0), I, H, initializer="pytorch")
    peep = custom_cell.PeepholeLSTM(lstm.kernel, lstm.recurrent_kernel, jnp.zeros((3, H)), lstm.bias)
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    kw = dict(key=jax.random.key(2), dropout=0.3, recurrent_dropout=0.4, lengths=LENGTHS)
    got = jrnn.rnn_apply(peep, xs, **kw)
    want = jrnn.rnn_apply(lstm, xs, **kw)
    assert_close(got, want, tol=1e-6)
    assert not np.allclose(got[0], jrnn.rnn_apply(lstm, xs, lengths=LENGTHS)[0], atol=1e-3)  # it dropped
    g = jax.grad(lambda p: loss(*jrnn.rnn_apply(p, xs, **kw)))(peep)
    w = jax.grad(lambda p: loss(*jrnn.rnn_apply(p, xs, **kw)))(lstm)
    assert_close((g.kernel, g.recurrent_kernel, g.bias), (w.kernel, w.recurrent_kernel, w.bias), tol=1e-5)


def test_cell_apply_is_one_step_and_step_only_cells_get_no_projection():
    cell = custom_cell.IndRNN.init(jax.random.key(0), I, H)
    assert cell.project(jnp.ones(I)) is not None and cell.recur.__func__ is jrnn.Cell.recur
    x, h = jnp.ones((B, I)), jnp.full((B, H), 0.5)
    out, h1 = jrnn.cell_apply(cell, x, h)
    want = jax.nn.relu(x @ cell.kernel + cell.u * h + cell.bias)
    assert_close((out, h1), (want, want), tol=1e-6)


def test_save_load_after_register(tmp_path):
    model = jrnn.Stack((jrnn.Bidirectional.init(jax.random.key(0), custom_cell.LayerNormLSTM, I, H),))
    jrnn.save(tmp_path / "m", model)
    again = jrnn.load(tmp_path / "m")
    assert jax.tree.structure(again) == jax.tree.structure(model)
    assert_close(again, model, tol=0)
    with pytest.raises(ValueError, match="another class named 'LayerNormLSTM'"):
        jrnn.register(type("LayerNormLSTM", (custom_cell.LayerNormLSTM,), {}))


def test_a_cell_must_define_a_step():
    with pytest.raises(TypeError, match="must define `step"):
        type("Empty", (jrnn.Cell,), {})


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TwoTimescales(jrnn.Cell):
    """A step-only cell whose state is a dict: a fast and a slow leaky average of `tanh(x W)`."""

    kernel: jax.Array  # [I, H]

    input_size = property(lambda self: self.kernel.shape[-2])
    hidden_size = property(lambda self: self.kernel.shape[-1])

    def zero_state(self, batch_shape=()):
        zeros = jnp.zeros((*batch_shape, self.hidden_size), self.state_dtype)
        return {"fast": zeros, "slow": zeros}

    def step(self, x, h):
        fast = 0.5 * h["fast"] + 0.5 * jnp.tanh(x @ self.kernel)
        new = {"fast": fast, "slow": 0.9 * h["slow"] + 0.1 * fast}
        return new["fast"] + new["slow"], new


def test_a_dict_state_runs_through_every_path():
    cell = TwoTimescales(jax.random.normal(jax.random.key(0), (I, H)))
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    h0 = {"fast": jnp.full((B, H), 0.5), "slow": jnp.full((H,), -0.5)}  # the second broadcast over B
    full = {"fast": h0["fast"], "slow": jnp.broadcast_to(h0["slow"], (B, H))}
    for kw in (dict(lengths=LENGTHS, reverse=True, unroll=3),
               dict(resets=RESETS, reset_state=h0, unroll=True, remat=2)):  # reset_state broadcast as h0
        ref_kw = {k: v for k, v in kw.items() if k not in ("unroll", "remat")}
        if "resets" in kw:
            ref_kw["reset_state"] = full
        assert_close(jrnn.rnn_apply(cell, xs, h0, **kw), reference(cell, xs, full, **ref_kw), tol=1e-6)
    with pytest.raises(TypeError, match=r"`h0` of TwoTimescales params must be structured like its zero "
                                        r"state, dict; got tuple"):
        jrnn.rnn_apply(cell, xs, (h0["fast"], h0["slow"]))
