"""jrnn inside a Flax NNX module, a Flax linen module and an Equinox module: a GRU encoder and a linear
readout, trained a few steps with optax and checkpointed with `jrnn.save`/`jrnn.load(like=...)`.

    python examples/frameworks.py

jrnn params are plain pytrees whose static settings (`activation`, `reset_after`) sit in the treedef, so:
- Flax NNX: wrap each array in `nnx.Param` and mark the tree as data,
  `nnx.data(jax.tree.map(nnx.Param, jrnn.GRU.init(...)))`, and unwrap it in `__call__` with
  `jax.tree.map(lambda v: v[...], self.rnn, is_leaf=...)`. (`nnx.Param(params)`, the whole params as one
  variable, fails at the optimiser.)
- Flax linen: `self.param("rnn", lambda key: jrnn.GRU.init(key, I, H))` takes the pytree as it is.
- Equinox: a field annotated with the params class; nothing to mark static.
"""

from __future__ import annotations

import os
import tempfile

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from flax import linen, nnx

import jrnn

I, H, C = 3, 8, 2  # input features, hidden units, classes
LEARNING_RATE = 1e-2


def data(key: jax.Array, batch: int = 32, T: int = 10) -> tuple[jax.Array, jax.Array]:
    """A toy task on `xs [B, T, I]`: is the first feature's sum over time positive? Labels `[B]`."""
    xs = jax.random.normal(key, (batch, T, I))
    return xs, (xs[..., 0].sum(-1) > 0).astype(jnp.int32)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


# ---- Flax NNX -------------------------------------------------------------------------------------

def _is_param(x) -> bool:
    return isinstance(x, nnx.Param)


class NNXClassifier(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.rnn = nnx.data(jax.tree.map(nnx.Param, jrnn.GRU.init(rngs.params(), I, H)))
        self.readout = nnx.Linear(H, C, rngs=rngs)

    def __call__(self, xs: jax.Array) -> jax.Array:
        """`xs [B, T, I]` -> logits `[B, C]` from the final state."""
        params = jax.tree.map(lambda v: v[...], self.rnn, is_leaf=_is_param)
        _, h = jrnn.rnn_apply(params, xs)
        return self.readout(h)


def train_nnx(steps: int, key: jax.Array, path: str) -> tuple[list[float], NNXClassifier]:
    model = NNXClassifier(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(LEARNING_RATE), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, xs, labels):
        loss, grads = nnx.value_and_grad(lambda m: cross_entropy(m(xs), labels))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer, *data(k))) for k in jax.random.split(key, steps)]
    jrnn.save(path, {"model": nnx.state(model), "optimizer": nnx.state(optimizer)})
    return losses, model


def restore_nnx(path: str) -> NNXClassifier:
    model = NNXClassifier(nnx.Rngs(1))  # any init: the checkpoint overwrites it
    optimizer = nnx.Optimizer(model, optax.adam(LEARNING_RATE), wrt=nnx.Param)
    state = jrnn.load(path, like={"model": nnx.state(model), "optimizer": nnx.state(optimizer)})
    nnx.update(model, state["model"])
    nnx.update(optimizer, state["optimizer"])
    return model


# ---- Flax linen -----------------------------------------------------------------------------------

class LinenClassifier(linen.Module):
    @linen.compact
    def __call__(self, xs: jax.Array) -> jax.Array:
        rnn = self.param("rnn", lambda key: jrnn.GRU.init(key, I, H))
        _, h = jrnn.rnn_apply(rnn, xs)
        return linen.Dense(C)(h)


def train_linen(steps: int, key: jax.Array, path: str) -> tuple[list[float], dict]:
    model, tx = LinenClassifier(), optax.adam(LEARNING_RATE)
    params = model.init(jax.random.key(0), data(key)[0])["params"]
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, xs, labels):
        def loss_fn(p):
            return cross_entropy(model.apply({"params": p}, xs), labels)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for k in jax.random.split(key, steps):
        params, opt_state, loss = step(params, opt_state, *data(k))
        losses.append(float(loss))
    jrnn.save(path, {"params": params, "opt_state": opt_state, "step": steps})
    return losses, params


def restore_linen(path: str, template: dict) -> dict:
    """`template`: `{"params", "opt_state", "step"}` of the same model (e.g. freshly initialised)."""
    return jrnn.load(path, like=template)


# ---- Equinox --------------------------------------------------------------------------------------

class EqxClassifier(eqx.Module):
    rnn: jrnn.GRU
    readout: eqx.nn.Linear

    def __init__(self, key: jax.Array):
        k1, k2 = jax.random.split(key)
        self.rnn = jrnn.GRU.init(k1, I, H)
        self.readout = eqx.nn.Linear(H, C, key=k2)

    def __call__(self, xs: jax.Array) -> jax.Array:
        _, h = jrnn.rnn_apply(self.rnn, xs)
        return jax.vmap(self.readout)(h)


def train_equinox(steps: int, key: jax.Array, path: str) -> tuple[list[float], EqxClassifier]:
    model, tx = EqxClassifier(jax.random.key(0)), optax.adam(LEARNING_RATE)
    opt_state = tx.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model, opt_state, xs, labels):
        loss, grads = eqx.filter_value_and_grad(lambda m: cross_entropy(m(xs), labels))(model)
        updates, opt_state = tx.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    losses = []
    for k in jax.random.split(key, steps):
        model, opt_state, loss = step(model, opt_state, *data(k))
        losses.append(float(loss))
    jrnn.save(path, {"model": model, "opt_state": opt_state})
    return losses, model


def restore_equinox(path: str) -> EqxClassifier:
    model = EqxClassifier(jax.random.key(1))
    template = {"model": model, "opt_state": optax.adam(LEARNING_RATE).init(eqx.filter(model, eqx.is_array))}
    return jrnn.load(path, like=template)["model"]


def main(steps: int = 50) -> None:
    key = jax.random.key(42)
    with tempfile.TemporaryDirectory() as tmp:
        for name, train in (("Flax NNX", train_nnx), ("Flax linen", train_linen), ("Equinox", train_equinox)):
            losses, _ = train(steps, key, os.path.join(tmp, name + ".ckpt"))
            print(f"{name:10s} loss {losses[0]:.3f} -> {losses[-1]:.3f} after {steps} steps; checkpointed")


if __name__ == "__main__":
    main()
