"""Cells of your own: a peephole LSTM, a layer-normalised LSTM and an IndRNN on `jrnn.Cell`.

A cell is a params pytree (a frozen dataclass registered with `jax.tree_util.register_dataclass`) that
derives from `jrnn.Cell` and defines its sizes and either `project` + `recur` (the input projection then
runs once per chunk of steps, as one matrix product) or a whole `step`. `jrnn.rnn_apply` gives it
lengths, reverse, resets, dropout, remat, `Stack` and `Bidirectional`; `jrnn.register` lets `jrnn.save`
and `jrnn.load` hold it. Gradients come from autodiff.

    python examples/custom_cell.py      # runs each cell over a batch, checks a gradient, saves and loads
"""

from __future__ import annotations

import dataclasses
import tempfile
from typing import Optional

import jax
import jax.numpy as jnp

import jrnn


@jrnn.register
@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PeepholeLSTM(jrnn.Cell):
    """LSTM with peephole connections (Gers and Schmidhuber, 2000): the gates also see the cell state,
    `i, f` the previous one and `o` the new one, through diagonal weights `peephole [3, H]`."""

    kernel: jax.Array            # [I, 4H], gates i, f, c, o
    recurrent_kernel: jax.Array  # [H, 4H]
    peephole: jax.Array          # [3, H]: p_i, p_f, p_o
    bias: jax.Array              # [4H]

    recurrent_dropout = True  # `recur` applies `rec_mask` where h enters the recurrent matmul

    @classmethod
    def init(cls, key, input_size: int, hidden_size: int) -> PeepholeLSTM:
        lstm = jrnn.LSTM.init(key, input_size, hidden_size)  # Keras' initializers, forget bias 1
        return cls(lstm.kernel, lstm.recurrent_kernel, jnp.zeros((3, hidden_size)), lstm.bias)

    input_size = property(lambda self: self.kernel.shape[-2])
    hidden_size = property(lambda self: self.recurrent_kernel.shape[-2])

    def zero_state(self, batch_shape=()) -> jrnn.LSTMState:
        zeros = jnp.zeros((*batch_shape, self.hidden_size), self.state_dtype)
        return jrnn.LSTMState(zeros, zeros)

    def project(self, x):
        return x @ self.kernel + self.bias

    def recur(self, gx, state, rec_mask: Optional[jax.Array] = None):
        i, f, g, o = jnp.split(gx + self.masked(state.h, rec_mask) @ self.recurrent_kernel, 4, axis=-1)
        p_i, p_f, p_o = self.peephole
        c = jax.nn.sigmoid(f + p_f * state.c) * state.c + jax.nn.sigmoid(i + p_i * state.c) * jnp.tanh(g)
        h = jax.nn.sigmoid(o + p_o * c) * jnp.tanh(c)
        return h, jrnn.LSTMState(h, c)


def layer_norm(z, scale, offset, eps: float = 1e-5):
    mean = z.mean(-1, keepdims=True)
    return (z - mean) * jax.lax.rsqrt(((z - mean) ** 2).mean(-1, keepdims=True) + eps) * scale + offset


@jrnn.register
@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LayerNormLSTM(jrnn.Cell):
    """Layer-normalised LSTM (Ba et al., 2016, eqs. 20-22): the input and recurrent projections are each
    normalised over their `4H` gates, and the cell state before the output tanh over its `H` units."""

    kernel: jax.Array            # [I, 4H]
    recurrent_kernel: jax.Array  # [H, 4H]
    bias: jax.Array              # [4H]
    scale: jax.Array             # [3, 4H]: gains of the input, recurrent, and (first H) cell norms
    offset: jax.Array            # [3, 4H]: their biases

    recurrent_dropout = True

    @classmethod
    def init(cls, key, input_size: int, hidden_size: int) -> LayerNormLSTM:
        lstm = jrnn.LSTM.init(key, input_size, hidden_size)
        G = 4 * hidden_size
        return cls(lstm.kernel, lstm.recurrent_kernel, lstm.bias, jnp.ones((3, G)), jnp.zeros((3, G)))

    input_size = property(lambda self: self.kernel.shape[-2])
    hidden_size = property(lambda self: self.recurrent_kernel.shape[-2])

    def zero_state(self, batch_shape=()) -> jrnn.LSTMState:
        zeros = jnp.zeros((*batch_shape, self.hidden_size), self.state_dtype)
        return jrnn.LSTMState(zeros, zeros)

    def project(self, x):  # once per chunk of steps: normalising over the gate axis needs no state
        return layer_norm(x @ self.kernel, self.scale[0], self.offset[0]) + self.bias

    def recur(self, gx, state, rec_mask: Optional[jax.Array] = None):
        z = layer_norm(self.masked(state.h, rec_mask) @ self.recurrent_kernel, self.scale[1], self.offset[1])
        i, f, g, o = jnp.split(gx + z, 4, axis=-1)
        c = jax.nn.sigmoid(f) * state.c + jax.nn.sigmoid(i) * jnp.tanh(g)
        H = self.hidden_size
        h = jax.nn.sigmoid(o) * jnp.tanh(layer_norm(c, self.scale[2, :H], self.offset[2, :H]))
        return h, jrnn.LSTMState(h, c)


@jrnn.register
@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class IndRNN(jrnn.Cell):
    """IndRNN (Li et al., 2018), written as one whole `step`: `h' = relu(x W + u * h + b)`."""

    kernel: jax.Array     # [I, H]
    u: jax.Array          # [H], one recurrent weight per unit
    bias: jax.Array       # [H]

    @classmethod
    def init(cls, key, input_size: int, hidden_size: int) -> IndRNN:
        k1, k2 = jax.random.split(key)
        kernel = jax.nn.initializers.glorot_uniform()(k1, (input_size, hidden_size))
        return cls(kernel, jax.random.uniform(k2, (hidden_size,)), jnp.zeros(hidden_size))

    input_size = property(lambda self: self.kernel.shape[-2])
    hidden_size = property(lambda self: self.kernel.shape[-1])

    def step(self, x, h):
        h = jax.nn.relu(x @ self.kernel + self.u * h + self.bias)
        return h, h


def main() -> None:
    key, kx = jax.random.split(jax.random.key(0))
    xs = jax.random.normal(kx, (4, 20, 8))  # [B, T, I]
    lengths = jnp.array([20, 13, 5, 0])
    run = jax.jit(jrnn.rnn_apply, static_argnames=jrnn.STATIC_ARGNAMES)
    for kind in (PeepholeLSTM, LayerNormLSTM, IndRNN):
        model = jrnn.Stack((jrnn.Bidirectional.init(key, kind, 8, 16), kind.init(key, 32, 16)))
        ys, state = run(model, xs, lengths=lengths, key=key, dropout=0.1, remat=5)
        loss = lambda m: jnp.mean(jrnn.masked_mean(run(m, xs, lengths=lengths)[0], lengths) ** 2)  # noqa: E731
        grads = jax.grad(loss)(model)
        with tempfile.TemporaryDirectory() as tmp:
            jrnn.save(f"{tmp}/model", model)
            again = jrnn.load(f"{tmp}/model")
        same = all(bool(jnp.array_equal(a, b)) for a, b in zip(jax.tree.leaves(model), jax.tree.leaves(again),
                                                               strict=True))
        norm = float(jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grads))))
        print(f"{kind.__name__:14} ys {tuple(ys.shape)}, |grad| {norm:.3f}, saved and loaded: {same}")


if __name__ == "__main__":
    main()
