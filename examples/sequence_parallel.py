"""Sequence parallelism: train a MinGRU on sequences split over devices on the time axis.

    python examples/sequence_parallel.py [--devices 8] [--steps 60] [--T 512]

On a CPU the devices are simulated (`--xla_force_host_platform_device_count`); on a machine with several
accelerators drop that flag and use the real ones. Each device holds `T / devices` steps of every
sequence; `rnn_apply(..., axis_name="t")` inside `jax.shard_map` runs each block from a zero state,
combines the blocks' maps across devices (one all-reduce of `2 x [devices, B, H]`) and corrects each
block, so the model sees the whole sequence. The task: predict the running mean of the inputs so far,
which a linear recurrence can represent and which needs the steps held by earlier devices.
Prints the loss, and what crosses the devices in one training step, read off the compiled program.
"""

from __future__ import annotations

import argparse
import os
import re
import sys


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--T", type=int, default=512, help="sequence length, a multiple of --devices")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args(argv)
    flag = f"--xla_force_host_platform_device_count={args.devices}"
    os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), flag]))

    from functools import partial

    import jax
    import jax.numpy as jnp
    import optax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import jrnn

    if jax.device_count() < args.devices:
        sys.exit(f"{jax.device_count()} devices; JAX was started before this script set {flag}")
    mesh = jax.make_mesh((args.devices,), ("t",), axis_types=(jax.sharding.AxisType.Auto,))
    I, H = 1, 32
    k1, k2 = jax.random.split(jax.random.key(0))
    params = {"rnn": jrnn.MinGRU.init(k1, I, H), "readout": jax.random.normal(k2, (H, 1)) / H**0.5}

    @partial(jax.shard_map, mesh=mesh, in_specs=(P(), P(None, "t")), out_specs=P(None, "t"))
    def features(rnn, xs):  # xs [B, T / devices, I] on each device
        return jrnn.rnn_apply(rnn, xs, axis_name="t")[0]

    def loss(params, xs, target):
        ys = features(params["rnn"], xs) @ params["readout"]
        return jnp.mean((ys - target) ** 2)

    optimizer = optax.adam(1e-2)

    @jax.jit
    def step(params, opt_state, xs, target):
        value, grads = jax.value_and_grad(loss)(params, xs, target)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    def batch(key):
        xs = jax.random.uniform(key, (args.batch, args.T, I), minval=-1.0, maxval=1.0)
        target = jnp.cumsum(xs, axis=1) / jnp.arange(1, args.T + 1)[None, :, None]  # the running mean
        split = NamedSharding(mesh, P(None, "t"))
        return jax.device_put(xs, split), jax.device_put(target, split)

    opt_state = optimizer.init(params)
    keys = jax.random.split(jax.random.key(1), args.steps + 1)
    xs, target = batch(keys[0])
    hlo = step.lower(params, opt_state, xs, target).compile().as_text()
    found = re.findall(r"= (\(.*?\)|\S+) (all-reduce|all-gather|reduce-scatter|collective-permute|all-to-all)"
                       r"(?:-start)?\(", hlo)
    crossing = sorted({f"{kind} {re.sub(r'[{][0-9,]*[}]', '', shape)}" for shape, kind in found})
    losses = []
    for i in range(args.steps):
        xs, target = batch(keys[i])
        params, opt_state, value = step(params, opt_state, xs, target)
        losses.append(float(value))
        if i % 10 == 0 or i == args.steps - 1:
            print(f"step {i:3d}  loss {losses[-1]:.5f}", flush=True)
    print(f"{args.devices} devices x {args.T // args.devices} steps each; per training step the devices "
          f"exchange: {'; '.join(crossing)}")
    return {"losses": losses, "collectives": crossing}


if __name__ == "__main__":
    main()
