"""Sequence parallelism on 8 simulated CPU devices: `rnn_apply(..., axis_name="t")` inside `jax.shard_map`
with `xs` split on its time axis, against one device running the whole sequence (values, final state,
gradients). Run by tests/test_sequence_parallel.py in a subprocess, since the device count is fixed when
JAX starts; prints one line per case and the collectives of a compiled gradient."""

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import re  # noqa: E402
import sys  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jrnn  # noqa: E402

D, B, T, I, H = 8, 3, 40, 2, 4  # 5 steps per device
MESH = jax.make_mesh((D,), ("t",), axis_types=(jax.sharding.AxisType.Auto,))
LENGTHS = np.array([40, 23, 0])  # the second ends inside the fifth device's block


def split_run(params, xs, h0, **kw):
    """`rnn_apply` with `xs [B, T, I]` (and a `mask` or `resets` `[B, T]`) split over the devices on T."""
    per_step = {k: kw.pop(k) for k in ("mask", "resets") if k in kw}

    @partial(jax.shard_map, mesh=MESH, in_specs=(P(), P(None, "t"), P(), P(None, "t")),
             out_specs=(P(None, "t"), P()))
    def run(params, xs, h0, per_step):
        return jrnn.rnn_apply(params, xs, h0, axis_name="t", **per_step, **kw)

    return run(params, xs, h0, per_step)


def loss(run, params, xs, h0):
    ys, h = run(params, xs, h0)
    w = jnp.linspace(-1.0, 1.0, ys.shape[-1])
    return jnp.sum(jnp.sin(ys) * w) + sum(jnp.sum(jnp.cos(jnp.real(a))) for a in jax.tree.leaves(h)), (ys, h)


def check(name, params, h0, **kw):
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    one = partial(jrnn.rnn_apply, **{**kw, "mode": "sequential"})  # one device, step by step: the reference
    many = partial(split_run, **kw)
    grad = lambda run: jax.jit(jax.value_and_grad(partial(loss, run), argnums=(0, 1, 2), has_aux=True))  # noqa: E731
    got, want = grad(many)(params, xs, h0), grad(one)(params, xs, h0)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=2e-5, atol=2e-5)
    print(f"{name}: values, final state and gradients equal one device's", flush=True)
    return grad(many), (params, xs, h0)


def collectives(fn, args) -> dict:
    """The collectives in the compiled program, by kind, with their shapes."""
    hlo = fn.lower(*args).compile().as_text()
    found = re.findall(r"= (\(.*?\)|\S+) (all-gather|all-reduce|reduce-scatter|collective-permute|all-to-all)"
                       r"(?:-start)?\(", hlo)
    out = {}
    for shape, kind in found:
        out.setdefault(kind, []).append(re.sub(r"\{[0-9,]*\}", "", shape))  # without layouts
    return out


if __name__ == "__main__":
    assert jax.device_count() == D, jax.devices()
    k = jax.random.split(jax.random.key(0), 4)
    resets = np.zeros((B, T), bool)
    resets[0, [3, 17]] = True  # one inside a block, one on a block's first step (t = 15 would be too)
    mask = np.ones((B, T), bool)
    mask[1, 8:22] = False  # a hole across three blocks
    grad, args = check("mingru chunked h0 lengths resets mask", jrnn.MinGRU.init(k[0], I, H),
                       jnp.full((B, H), 0.3), lengths=LENGTHS, resets=resets, mask=mask)
    pair = jrnn.Bidirectional.init(k[1], jrnn.LRU, I, H, merge="sum")  # both directions, a complex state
    check("bidirectional lru parallel reverse lengths", pair, None, lengths=LENGTHS, reverse=True,
          mode="parallel")
    for kind, shapes in collectives(grad, args).items():
        print(f"collective {kind}: {len(shapes)} x {sorted(set(shapes))}")
    # The example trains on sequences split over the same 8 devices.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import sequence_parallel

    losses = sequence_parallel.main(["--steps", "25", "--T", "64"])["losses"]
    assert losses[-1] < losses[0] / 5, losses
    print(f"example: loss {losses[0]:.3f} -> {losses[-1]:.4f}")
