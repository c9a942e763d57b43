"""Property tests: random configurations of `rnn_apply` against a Python loop over `cell_apply`.

Hypothesis draws the cell kind, the composite, the batch axes, T in 0..20, unroll, reverse, time_major,
lengths (0 and T included), resets, h0, reset_state, remat and mode; outputs, final states and the
gradients with respect to params, inputs and h0 must equal the loop's, in float64. A failing example is
shrunk and printed. Examples are derandomised (the same ones on every run) and the arrays come from a
drawn seed, so a failure reproduces from the printed example alone. `JRNN_PROPERTY_EXAMPLES` sets the
number of examples (60 by default).
"""

import functools
import math
import os
from typing import NamedTuple, Optional

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from reference import loop

import jrnn

I, H = 2, 3
KINDS = {  # name: (class, init options); float64 throughout
    "simple": (jrnn.SimpleRNN, {}),
    "lstm": (jrnn.LSTM, {}),
    "gru": (jrnn.GRU, {}),
    "gru_reset_before": (jrnn.GRU, {"reset_after": False}),
    "mingru": (jrnn.MinGRU, {}),
    "minlstm": (jrnn.MinLSTM, {}),
    "lru": (jrnn.LRU, {}),
}
LINEAR = ("mingru", "minlstm", "lru")


class Config(NamedTuple):
    kind: str
    composite: str  # "cell", "stack" (two layers) or "bidirectional"
    batch: tuple
    T: int
    time_major: bool
    reverse: bool
    mode: str
    unroll: object  # 1, 2, 3 or True (sequential mode)
    remat: Optional[int]
    lengths: Optional[tuple]  # one per batch element (flattened)
    resets: bool
    h0: bool
    reset_state: bool
    seed: int


@st.composite
def configs(draw) -> Config:
    kind = draw(st.sampled_from(sorted(KINDS)))
    batch = draw(st.sampled_from([(), (2,), (3, 1)]))
    T = draw(st.integers(0, 20))
    mode = draw(st.sampled_from(["sequential", "parallel"])) if kind in LINEAR else "sequential"
    unroll = draw(st.sampled_from([1, 2, 3, True])) if mode == "sequential" else None
    remat = draw(st.sampled_from([None, 2, 5])) if mode == "sequential" else None
    lengths = None
    if draw(st.booleans()):
        lengths = tuple(draw(st.one_of(st.just(0), st.just(T), st.integers(0, T)))
                        for _ in range(math.prod(batch)))
    resets = draw(st.booleans())
    return Config(kind, draw(st.sampled_from(["cell", "stack", "bidirectional"])), batch, T,
                  draw(st.booleans()), draw(st.booleans()), mode, unroll, remat, lengths, resets,
                  draw(st.booleans()), resets and draw(st.booleans()), draw(st.integers(0, 2**16)))


@functools.cache
def _layout(kind: str, composite: str):
    """Params of a kind and composite (built once; each example fills them with its own values)."""
    key, (cls, options) = jax.random.key(0), KINDS[kind]
    options = dict(options, dtype=jnp.float64)
    if composite == "stack":
        return jrnn.Stack.init(key, cls, I, H, 2, **options)
    if composite == "bidirectional":
        return jrnn.Bidirectional.init(key, cls, I, H, **options)
    return cls.init(key, I, H, **options)


def _params(cfg: Config, rng):
    return jax.tree.map(lambda a: 0.5 * a, _random_like(_layout(cfg.kind, cfg.composite), rng))


def _random_like(tree, rng):
    def one(z):
        a = rng.normal(size=z.shape)
        return jnp.asarray(a + 1j * rng.normal(size=z.shape) if jnp.iscomplexobj(z) else a, z.dtype)
    return jax.tree.map(one, tree)


def _loss(ys, h):
    """A weighted sum of every output and every part of the final state (real parts)."""
    w = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
    return jnp.sum(jnp.sin(ys) * w) + sum(jnp.sum(jnp.cos(jnp.real(a))) for a in jax.tree.leaves(h))


def _jrnn_grad(cfg: Config):
    """`loss, (ys, h_T), grads` of `rnn_apply` under jit; one compilation per structure (the seed and
    the lengths' values are data)."""
    return _compiled(cfg._replace(seed=0, lengths=cfg.lengths and len(cfg.lengths)))


@functools.cache
def _compiled(cfg: Config):
    options = dict(reverse=cfg.reverse, time_major=cfg.time_major, mode=cfg.mode)
    if cfg.mode == "sequential":
        options.update(unroll=cfg.unroll, remat=cfg.remat)

    def loss(params, xs, h0, lengths, resets, reset_state):
        ys, h = jrnn.rnn_apply(params, xs, h0, lengths=lengths, resets=resets, reset_state=reset_state,
                               **options)
        return _loss(ys, h), (ys, h)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))


# One step of the reference, compiled once per cell structure and batch size and shared by every example
# (an eager `cell_apply` would compile each of its primitives anew for every new shape).
_step = jax.jit(jrnn.cell_apply)


def _reference(params, xs, h0, lengths, resets, reset_state, reverse):
    """`rnn_apply` by its definition on `xs [B, T, I]`: the loop of `tests/reference.py` over
    `cell_apply`, layer by layer; a `Bidirectional`'s backward cell runs the other way."""
    if isinstance(params, jrnn.Stack):
        states = []
        for i, layer in enumerate(params.layers):
            xs, h = _reference(layer, xs, h0[i], lengths, resets, reset_state and reset_state[i], reverse)
            states.append(h)
        return xs, tuple(states)
    if isinstance(params, jrnn.Bidirectional):
        pairs = zip((params.forward, params.backward), h0, reset_state or (None, None),
                    (reverse, not reverse), strict=True)
        parts = [_reference(cell, xs, h, lengths, resets, r, back) for cell, h, r, back in pairs]
        return jnp.concatenate([parts[0][0], parts[1][0]], -1), (parts[0][1], parts[1][1])
    return loop(functools.partial(_step, params), xs, h0, reverse=reverse, lengths=lengths,
                resets=resets, reset_state=reset_state)


def _check(cfg: Config):
    rng = np.random.default_rng(cfg.seed)
    params = _params(cfg, rng)
    B = math.prod(cfg.batch)
    xs = jnp.asarray(rng.normal(size=(B, cfg.T, I)))
    zeros = jrnn.initial_state(params, (B,))
    h0 = _random_like(zeros, rng) if cfg.h0 else zeros
    lengths = None if cfg.lengths is None else np.array(cfg.lengths)
    resets = rng.random((B, cfg.T)) < 0.3 if cfg.resets else None
    reset_state = _random_like(zeros, rng) if cfg.reset_state else None

    def lay_out(a, tail):  # [B, ...] -> the drawn batch axes (and time axis first when time_major)
        a = a.reshape(cfg.batch + a.shape[1:])
        return jnp.moveaxis(a, len(cfg.batch), 0) if tail and cfg.time_major else a

    batched = lambda tree: jax.tree.map(lambda a: lay_out(a, False), tree)  # noqa: E731
    (value, (ys, h_T)), grads = _jrnn_grad(cfg)(
        params, lay_out(xs, True), batched(h0) if cfg.h0 else None,
        None if lengths is None else lengths.reshape(cfg.batch),
        None if resets is None else lay_out(jnp.asarray(resets), True), batched(reset_state))

    def ref_loss(params, xs, h0):
        want, h = _reference(params, xs, h0, lengths, resets, reset_state, cfg.reverse)
        return _loss(lay_out(want, True), batched(h)), (want, h)

    (value_want, (ys_want, h_want)), grads_want = jax.value_and_grad(
        ref_loss, argnums=(0, 1, 2), has_aux=True)(params, xs, h0)
    close = functools.partial(np.testing.assert_allclose, rtol=1e-9, atol=1e-11)
    close(ys, lay_out(ys_want, True))
    jax.tree.map(close, h_T, batched(h_want))
    close(value, value_want)
    gp, gx, gh = grads
    gp_want, gx_want, gh_want = grads_want
    jax.tree.map(close, gp, gp_want)
    close(gx, lay_out(gx_want, True))
    if cfg.h0:
        jax.tree.map(close, gh, batched(gh_want))


# Each example compiles its own program (~1.3 s on 2 cores): 60 keep `make test` under its budget;
# `JRNN_PROPERTY_EXAMPLES=400 make test` runs more.
EXAMPLES = int(os.environ.get("JRNN_PROPERTY_EXAMPLES", "10"))


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_rnn_apply_equals_the_python_loop(cfg):
    with jax.enable_x64(True):
        _check(cfg)
