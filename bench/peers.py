"""jrnn against the other RNN implementations for JAX, and PyTorch eager, on four workloads.

    python bench/peers.py [--quick] [--smoke] [--workloads W1,W2] [--unrolls 1,4,16] [--jrnn-rows default]
                          [--out bench/results]

Every peer gets the same weights as jrnn (copied into its own layout) and its outputs are checked
against jrnn's before anything is timed. Then the forward pass (the sum of all outputs) and the
forward+backward pass (the gradient of that sum with respect to the params) are timed: JAX peers
with `common.time_jax` (trace, lower, compile and run apart), PyTorch eager with `common.time_call`.
Writes `peers.md` and `peers.json` after every row (each whole: a run cut short, e.g. by `timeout`, keeps
every row it measured), and `peers.png` (fwd+bwd median per workload and library) at the end.
`--jrnn-rows default` keeps only jrnn's default row (no unroll sweep, no autodiff row): the peers'
table first, where compiles are slow (bench/gpu.sh).

Each peer is one function `peer(kind, params) -> (peer_params, forward, ref)`: `forward(peer_params,
xs)` gives the outputs `[B, T, H]`, and `ref` is the jrnn params the outputs must match: `params`
itself, or a variant where the peer's cell differs (Haiku's GRU resets before the recurrent matmul).
A peer raises `Skip` for a cell it does not have; one that fails is reported in a row, not raised.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import os
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

os.environ["KERAS_BACKEND"] = "jax"  # before anything imports keras

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

import jrnn  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Workload:
    kind: str  # "SimpleRNN", "LSTM" or "GRU"
    B: int
    T: int
    I: int  # noqa: E741
    H: int


WORKLOADS = {
    "W1": Workload("SimpleRNN", B=4, T=80, I=100, H=64),
    "W2": Workload("LSTM", B=32, T=128, I=128, H=256),
    "W3": Workload("GRU", B=16, T=1024, I=64, H=128),
    "W4": Workload("LSTM", B=128, T=64, I=256, H=512),
}
# At these sizes W4 would be W2 again.
SMOKE = {name: dataclasses.replace(WORKLOADS[name], B=2, T=5, I=3, H=4) for name in ("W1", "W2", "W3")}
GATES = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}
UNROLLS = (1, 2, 4, 8, 16)  # --smoke tries the first two
CALLS = {"full": 20, "quick": 2, "smoke": 1}  # timed calls after the warm-up call
VERSIONS = ("jax", "jaxlib", "flax", "equinox", "dm-haiku", "keras", "torch", "numpy", "jrnn")


class Skip(Exception):
    """The peer has no such cell: a row with this note and no figures."""


def flops(w: Workload, direction: str) -> float:
    fwd = 2 * w.B * w.T * (w.I + w.H) * GATES[w.kind] * w.H
    return fwd if direction == "fwd" else 3 * fwd


def blocks(a, n: int) -> list:
    """The `n` gate blocks of the last axis of `a` (numpy)."""
    return np.split(np.asarray(a), n, axis=-1)


# ---------------------------------------------------------------------------------------------
# Peers: each builds (peer_params, forward, ref) from jrnn params `p` of kind `kind`.


def flax_linen(kind, p, lstm_cell="OptimizedLSTMCell"):
    import flax.linen as nn

    K, R, b, H = np.asarray(p.kernel), np.asarray(p.recurrent_kernel), np.asarray(p.bias), p.hidden_size
    ref = p
    if kind == "SimpleRNN":
        cell = nn.SimpleCell(features=H)
        params = {"i": {"kernel": K, "bias": b}, "h": {"kernel": R}}
    elif kind == "LSTM":
        cell = getattr(nn, lstm_cell)(features=H)
        params = {}
        for g, k, r, bb in zip("ifgo", blocks(K, 4), blocks(R, 4), blocks(b, 4), strict=True):
            params["i" + g] = {"kernel": k}
            params["h" + g] = {"kernel": r, "bias": bb}
    else:  # GRU z, r, h; flax has r, z and n = tanh(in(x) + r * hn(h)), biases on ir, iz, in, hn
        (kz, kr, kh), (rz, rr, rh) = blocks(K, 3), blocks(R, 3)
        (bz, br, bh), (cz, cr, ch) = blocks(b[0], 3), blocks(b[1], 3)
        cell = nn.GRUCell(features=H)
        params = {"ir": {"kernel": kr, "bias": br + cr}, "iz": {"kernel": kz, "bias": bz + cz},
                  "in": {"kernel": kh, "bias": bh}, "hr": {"kernel": rr}, "hz": {"kernel": rz},
                  "hn": {"kernel": rh, "bias": ch}}
    model = nn.RNN(cell)
    params = jax.tree.map(jnp.asarray, {"params": {"cell": params}})
    return params, model.apply, ref


def flax_nnx(kind, p):
    from flax import nnx

    K, R, b, H, I = (np.asarray(p.kernel), np.asarray(p.recurrent_kernel), np.asarray(p.bias),
                     p.hidden_size, p.input_size)
    rngs = nnx.Rngs(0)
    ref = p
    if kind == "SimpleRNN":
        cell = nnx.SimpleCell(I, H, rngs=rngs)
        weights = {"dense_i": {"kernel": K, "bias": b}, "dense_h": {"kernel": R}}
    elif kind == "LSTM":  # the fused cell (nnx's LSTMCell has a Dense per gate), gates i, f, g, o as jrnn
        cell = nnx.OptimizedLSTMCell(I, H, rngs=rngs)
        weights = {"dense_i": {"kernel": K}, "dense_h": {"kernel": R, "bias": b}}
    else:  # GRU r, z, n; no recurrent bias at all, so the reference drops jrnn's on the n part
        (kz, kr, kh), (rz, rr, rh) = blocks(K, 3), blocks(R, 3)
        (bz, br, bh), (cz, cr, _) = blocks(b[0], 3), blocks(b[1], 3)
        cell = nnx.GRUCell(I, H, rngs=rngs)
        weights = {"dense_i": {"kernel": np.concatenate([kr, kz, kh], -1),
                               "bias": np.concatenate([br + cr, bz + cz, bh])},
                   "dense_h": {"kernel": np.concatenate([rr, rz, rh], -1)}}
        ref = dataclasses.replace(p, bias=p.bias.at[1, 2 * H:].set(0))
    for layer, arrays in weights.items():
        for name, array in arrays.items():
            getattr(getattr(cell, layer), name).set_value(jnp.asarray(array))
    graphdef, params, rest = nnx.split(nnx.RNN(cell), nnx.Param, ...)

    def forward(params, xs):  # a zero carry given here: nnx.RNN's own would mutate an RNG under jit
        zeros = jnp.zeros((xs.shape[0], H), xs.dtype)
        carry = (zeros, zeros) if kind == "LSTM" else zeros
        return nnx.merge(graphdef, params, rest)(xs, initial_carry=carry)

    return params, forward, ref


def equinox(kind, p):
    import equinox as eqx

    if kind == "SimpleRNN":
        raise Skip("equinox has no SimpleRNN cell")
    t = {k: jnp.asarray(v.numpy()) for k, v in jrnn.to_torch(p, cell=True).items()}  # rows i,f,g,o / r,z,n
    H, I = p.hidden_size, p.input_size
    if kind == "LSTM":
        cell = eqx.nn.LSTMCell(I, H, key=jax.random.key(0))
        cell = eqx.tree_at(lambda c: (c.weight_ih, c.weight_hh, c.bias), cell,
                           (t["weight_ih"], t["weight_hh"], t["bias_ih"] + t["bias_hh"]))
    else:  # bias on the input part, bias_n on the recurrent n part (inside r *)
        cell = eqx.nn.GRUCell(I, H, key=jax.random.key(0))
        bias = t["bias_ih"] + t["bias_hh"].at[2 * H:].set(0)
        cell = eqx.tree_at(lambda c: (c.weight_ih, c.weight_hh, c.bias, c.bias_n), cell,
                           (t["weight_ih"], t["weight_hh"], bias, t["bias_hh"][2 * H:]))

    def one_sequence(cell, xs):  # [T, I] -> [T, H]
        h0 = jnp.zeros(H)

        def step(state, x):
            state = cell(x, state)
            return state, state[0] if kind == "LSTM" else state

        return jax.lax.scan(step, (h0, h0) if kind == "LSTM" else h0, xs)[1]

    def forward(cell, xs):
        return jax.vmap(one_sequence, in_axes=(None, 0))(cell, xs)

    return cell, forward, p


def haiku(kind, p):
    import haiku as hk

    K, R, b, H = np.asarray(p.kernel), np.asarray(p.recurrent_kernel), np.asarray(p.bias), p.hidden_size
    if kind == "SimpleRNN":  # hk.VanillaRNN is ReLU with a bias on both linears
        core, ref = (lambda: hk.VanillaRNN(H)), dataclasses.replace(p, activation="relu")
        params = {"vanilla_rnn/linear": {"w": K, "b": b},
                  "vanilla_rnn/linear_1": {"w": R, "b": np.zeros_like(b)}}
    elif kind == "LSTM":  # one linear over [x, h], gates i, g, f, o, and f + 1 inside
        core, ref = (lambda: hk.LSTM(H)), p
        (ki, kf, kc, ko), (ri, rf, rc, ro), (bi, bf, bc, bo) = blocks(K, 4), blocks(R, 4), blocks(b, 4)
        params = {"lstm/linear": {"w": np.concatenate([np.concatenate([ki, kc, kf, ko], -1),
                                                        np.concatenate([ri, rc, rf, ro], -1)]),
                                  "b": np.concatenate([bi, bc, bf - 1, bo])}}
    else:  # reset before the recurrent matmul, h' = (1 - z) h + z a: jrnn GRU(reset_after=False) with -z
        core = lambda: hk.GRU(H)  # noqa: E731
        ref = dataclasses.replace(p, bias=p.bias.sum(0), reset_after=False)
        flip = np.concatenate([-np.ones(H), np.ones(2 * H)]).astype(np.float32)
        params = {"gru": {"w_i": K * flip, "w_h": R * flip, "b": np.asarray(ref.bias) * flip}}

    def unroll(xs):
        c = core()
        return hk.dynamic_unroll(c, xs, c.initial_state(xs.shape[0]), time_major=False)[0]

    apply = hk.without_apply_rng(hk.transform(unroll)).apply
    return jax.tree.map(jnp.asarray, params), apply, ref


def keras(kind, p):
    import keras

    zeros = dict(kernel_initializer="zeros", recurrent_initializer="zeros", bias_initializer="zeros")
    layer = getattr(keras.layers, kind)(p.hidden_size, return_sequences=True, **zeros)  # set_weights below
    layer.build((None, None, p.input_size))
    layer.set_weights(jrnn.to_keras(p))
    trainable = [v.value for v in layer.trainable_variables]
    others = [v.value for v in layer.non_trainable_variables]

    def forward(trainable, xs):
        with jax.numpy_rank_promotion("allow"):  # Keras' cells broadcast, e.g. [B, H] * [H]
            return layer.stateless_call(trainable, others, xs)[0]

    return trainable, forward, p


def jax_experimental_rnn(kind, p):
    """cuDNN's LSTM through `jax.experimental.rnn.lstm` (a `custom_vjp`), jrnn's weights converted by
    `jrnn.interop.cudnn.to_cudnn` (which tests/test_cudnn.py checks against JAX's `lstm_ref`)."""
    from jax.experimental import rnn

    from jrnn.interop.cudnn import to_cudnn

    if kind != "LSTM":
        raise Skip("LSTM only")
    weights, layout = to_cudnn(p)  # before the backend check: the CPU smoke test runs it too
    if jax.default_backend() not in ("gpu", "rocm", "cuda"):
        raise Skip(f"cuDNN/MIOpen only, not {jax.default_backend()}")

    def forward(weights, xs):  # float32 at JAX_DEFAULT_MATMUL_PRECISION=highest: no TF32 in cuDNN either
        B = xs.shape[0]
        h0 = jnp.zeros((1, B, layout.hidden_size), xs.dtype)
        return rnn.lstm(xs, h0, h0, weights, jnp.full((B,), xs.shape[1], jnp.int32), dropout=0.0,
                        **layout.lstm_kwargs)[0]

    return weights, forward, p


def torch_device() -> str:
    """Where PyTorch runs: on the GPU (cuDNN, TF32 off: float32 like JAX's "highest") when JAX has one."""
    import torch

    if jax.default_backend() == "gpu" and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        return "cuda"
    torch.set_num_threads(os.cpu_count())
    return "cpu"


def torch_module(kind, p):
    """The PyTorch module holding `p` (timed eagerly, not through JAX), on `torch_device()`."""
    import torch

    cls = getattr(torch.nn, kind.replace("SimpleRNN", "RNN"))
    module = cls(p.input_size, p.hidden_size, batch_first=True)
    module.load_state_dict(jrnn.to_torch(p))
    return module.to(torch_device())


# (row name, package whose absence makes it "not installed", builder); jrnn's rows come first.
PEERS = [
    ("Flax linen OptimizedLSTMCell", "flax", flax_linen),
    ("Flax linen LSTMCell", "flax", functools.partial(flax_linen, lstm_cell="LSTMCell")),
    ("Flax nnx OptimizedLSTMCell", "flax", flax_nnx),
    ("Equinox + lax.scan", "equinox", equinox),
    ("Haiku dynamic_unroll", "haiku", haiku),
    ("Keras 3 (JAX)", "keras", keras),
    ("jax.experimental.rnn (cuDNN)", "jax", jax_experimental_rnn),
    ("PyTorch eager", "torch", None),
]
LSTM_ONLY = {"Flax linen LSTMCell"}  # the second LSTM variant; other cells get one Flax linen row


def row_name(name: str, kind: str) -> str:
    if kind != "LSTM" and name.startswith("Flax"):
        return name.replace(" OptimizedLSTMCell", "")
    return name


# ---------------------------------------------------------------------------------------------
# Checking and timing


def check(ys, want) -> str:
    """'ok <max abs err>' if the outputs match jrnn's to float32 tolerance; raises otherwise."""
    ys = np.asarray(ys)
    if ys.shape != want.shape:
        raise AssertionError(f"output shape {ys.shape}, expected {want.shape}")
    err = float(np.max(np.abs(ys - want))) if ys.size else 0.0
    if not np.allclose(ys, want, rtol=1e-4, atol=1e-4):
        raise AssertionError(f"outputs differ from jrnn: max abs err {err:.2e}")
    return f"ok {err:.0e}"


def jax_losses(forward):
    loss = lambda params, xs: forward(params, xs).sum()  # noqa: E731
    return {"fwd": loss, "fwd+bwd": jax.grad(loss)}


@functools.cache
def autodiff_kind(kind: type) -> type:
    """`kind` (SimpleRNN, LSTM, GRU) declaring no `fused`: `rnn_apply` then differentiates its loop by
    JAX's autodiff."""
    @jax.tree_util.register_dataclass
    @dataclasses.dataclass(frozen=True)
    class Autodiff(kind):
        fused = False

        def recur(self, gx, state, rec_mask=None):
            return self.activate(*self.activate_inputs(gx, state, rec_mask), state)

    Autodiff.__name__ = f"{kind.__name__}Autodiff"
    return Autodiff


def autodiff_cell(params):
    fields = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    return autodiff_kind(type(params))(**fields)


def time_jax_peer(forward, params, xs, calls):
    return {d: common.time_jax(f, params, xs, calls=calls) for d, f in jax_losses(forward).items()}


def time_torch(module, xs, calls):
    import torch

    device = next(module.parameters()).device
    x = torch.from_numpy(np.array(xs)).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def fwd():
        with torch.no_grad():
            module(x)[0].sum()
        sync()

    def fwd_bwd():
        module(x)[0].sum().backward()
        module.zero_grad()
        sync()

    return {"fwd": common.time_call(fwd, calls), "fwd+bwd": common.time_call(fwd_bwd, calls)}


def one_line(e: Exception) -> str:
    text = f"{type(e).__name__}: {e}".strip().splitlines()[0]
    return text if len(text) <= 150 else text[:147] + "..."


def run_workload(wname: str, w: Workload, calls: int, unrolls: tuple, log, rows: list, save=None,
                 jrnn_rows: str = "all") -> None:
    """Appends the rows of one workload, `{library, direction, status, note, ...timings}`, to `rows`,
    calling `save()` after each library's two rows. `jrnn_rows="default"`: no "jrnn best" (the unroll
    sweep) or "jrnn autodiff" rows."""
    kp, kx = jax.random.split(jax.random.key(0))
    params = getattr(jrnn, w.kind).init(kp, w.I, w.H, initializer="pytorch")
    xs = jax.random.normal(kx, (w.B, w.T, w.I), jnp.float32)

    def add(library, results=None, status="ok", note=""):
        for direction in ("fwd", "fwd+bwd"):
            r = dict(workload=wname, direction=direction, library=library, status=status, note=note)
            if results is not None:
                r.update(results[direction])
            rows.append(r)
        times = "" if results is None else " ".join(
            f"{d} {results[d]['median_ms']:.2f} ms" + (f" (compile {results[d]['compile_ms'] / 1e3:.1f} s)"
                                                       if "compile_ms" in results[d] else "")
            for d in ("fwd", "fwd+bwd"))
        log(f"  {library}: {status} {note} {times}")
        if save is not None:
            save()

    # jrnn: default (no unroll argument), then the best of `unrolls` for each direction.
    want = np.asarray(jax.jit(jrnn.rnn_apply)(params, xs)[0])
    default = time_jax_peer(lambda p, xs: jrnn.rnn_apply(p, xs)[0], params, xs, calls)
    add("jrnn default", default, note="the reference")
    if jrnn_rows == "default":
        unrolls = ()
    # The default unroll traces to the same program as the default call: reuse its timings.
    unroll_default = inspect.signature(jrnn.rnn_apply).parameters["unroll"].default
    sweep = {unroll_default: default} if type(unroll_default) is int else {}
    for k in unrolls:
        if k in sweep:
            continue
        # Every unroll gives the scan's outputs: tests/test_rnn.py checks that.
        forward = lambda p, xs, k=k: jrnn.rnn_apply(p, xs, unroll=k)[0]  # noqa: E731
        sweep[k] = time_jax_peer(forward, params, xs, calls)
    best = {}
    for direction in ("fwd", "fwd+bwd") if unrolls else ():
        k = min(unrolls, key=lambda k: sweep[k][direction]["median_ms"])
        best[direction] = dict(sweep[k][direction], unroll=k,
                               sweep_ms={u: sweep[u][direction]["median_ms"] for u in unrolls})
    if best:
        add("jrnn best", best, note="unroll " + "/".join(str(best[d]["unroll"]) for d in ("fwd", "fwd+bwd")))
    if jrnn_rows != "default":
        # The same cell without its `fused` declaration: the loop differentiated by JAX's autodiff, the
        # baseline of jrnn's own derivative (jrnn/derivative.py).
        autodiff = lambda p, xs: jrnn.rnn_apply(p, xs)[0]  # noqa: E731
        autodiff = time_jax_peer(autodiff, autodiff_cell(params), xs, calls)
        add("jrnn autodiff", autodiff, note="not fused: autodiff, not jrnn/derivative.py")

    for name, package, build in PEERS:
        if name in LSTM_ONLY and w.kind != "LSTM":
            continue
        library = row_name(name, w.kind)
        try:
            __import__(package)
        except ImportError:
            add(library, status="not installed")
            continue
        try:
            if build is None:  # PyTorch eager
                module = torch_module(w.kind, params)
                import torch

                device = next(module.parameters()).device
                with torch.no_grad():
                    ys = module(torch.from_numpy(np.array(xs)).to(device))[0].cpu().numpy()
                cudnn = " (cuDNN)" if device.type == "cuda" and torch.backends.cudnn.is_available() else ""
                add(library, time_torch(module, xs, calls), note=f"{check(ys, want)} on {device.type}{cudnn}")
                continue
            peer_params, forward, ref = build(w.kind, params)
            ref_ys = want if ref is params else np.asarray(jax.jit(jrnn.rnn_apply)(ref, xs)[0])
            note = check(jax.jit(forward)(peer_params, xs), ref_ys)
            add(library, time_jax_peer(forward, peer_params, xs, calls), note=note)
        except Skip as e:
            add(library, status="skipped", note=str(e))
        except Exception as e:  # a peer that fails must not stop the run
            add(library, status="failed", note=one_line(e))


# ---------------------------------------------------------------------------------------------
# Report


def fill_figures(rows: list[dict], workloads: dict, peak: float) -> None:
    """Adds GFLOP/s, % of the matmul peak and the ratio to the fastest of each (workload, direction)."""
    for r in rows:
        if r["status"] == "ok":
            r["gflops"] = flops(workloads[r["workload"]], r["direction"]) / r["median_ms"] / 1e6
            r["pct_peak"] = 100 * r["gflops"] / peak
    groups = {}
    for r in rows:
        if r["status"] == "ok":
            groups.setdefault((r["workload"], r["direction"]), []).append(r["median_ms"])
    for r in rows:
        if r["status"] == "ok":
            r["ratio"] = r["median_ms"] / min(groups[r["workload"], r["direction"]])


def versions() -> dict:
    out = {}
    for package in VERSIONS:
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def markdown(data: dict) -> str:
    m, v = data["machine"], data["versions"]
    unrolls = "/".join(map(str, data["unrolls"]))
    lines = [
        "# jrnn vs peers",
        "",
        f"`{data['command']}`",
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['platform']} ({m['device']}); {m['date']}; float32 matmul "
        f"peak {data['peak']['peak_gflops']:.0f} GFLOP/s; {data['calls']} timed calls after a warm-up.",
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        "",
        *([] if data.get("complete", True) else [
            f"**Partial** (saved after every row; {data['seconds']:.0f} s in): the last workload may lack "
            "rows" + (f"; not started: {', '.join(data['not_run'])}" if data["not_run"] else "") + ".", ""]),
        "Forward = sum of all outputs; fwd+bwd = gradient of that sum w.r.t. the params. FLOPs: forward "
        "2·B·T·(I+H)·G·H, fwd+bwd 3×. `×best`: median over the fastest median of its group. "
        + ("jrnn: its default row only (`--jrnn-rows default`). " if data.get("jrnn_rows") == "default" else
           f"jrnn best: the best of unroll {unrolls} (note: the unroll chosen for fwd / fwd+bwd). jrnn "
           "autodiff: the default through `jax.grad` of the loop instead of jrnn's own derivative (the "
           "cell not `fused`). ")
        + "`compile ms`: XLA's compile alone (trace and lower apart, in the JSON). `check`: max abs "
        "difference from jrnn's outputs for the same weights.",
        "",
    ]
    header = ["dir", "library", "median ms", "min ms", "compile ms", "×best", "GFLOP/s", "% peak",
              "check / note"]
    for wname, w in data["workloads"].items():
        lines += [f"## {wname}: {w['kind']} B={w['B']} T={w['T']} I={w['I']} H={w['H']}", "",
                  "| " + " | ".join(header) + " |", "|---|---|" + "---:|" * 6 + "---|"]
        for r in data["rows"]:
            if r["workload"] != wname:
                continue
            if r["status"] == "ok":
                cells = [r["direction"], r["library"], f"{r['median_ms']:.2f}", f"{r['min_ms']:.2f}",
                         f"{r['compile_ms']:.0f}" if "compile_ms" in r else "eager", f"{r['ratio']:.2f}",
                         f"{r['gflops']:.1f}", f"{r['pct_peak']:.1f}", r["note"]]
            elif r["direction"] == "fwd":
                cells = ["", r["library"], *[""] * 6, f"{r['status']}: {r['note']}"]
            else:
                continue
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "Notes: Haiku's `VanillaRNN` is ReLU (checked against jrnn `activation=\"relu\"`) and its `GRU` "
        "resets before the recurrent matmul (checked against jrnn `GRU(reset_after=False)`); Flax nnx's "
        "`GRUCell` has no recurrent bias (checked against jrnn with that bias zero). PyTorch forward "
        "runs under `torch.no_grad()`; its fwd+bwd is forward, sum, backward, zero grads. Keras runs "
        "`layer.stateless_call` under `jax.jit`. `jax.experimental.rnn` lowers only on CUDA/ROCm "
        "(cuDNN/MIOpen); its weights are jrnn's through `jrnn/interop/cudnn.py`'s `to_cudnn`. PyTorch "
        "runs on CUDA (cuDNN, TF32 off) when JAX has a GPU: its note names the device.",
        "",
    ]
    return "\n".join(lines)


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # One bar per library: Flax's OptimizedLSTMCell row for the LSTM workloads, not its LSTMCell row.
    rows = [dict(r, library=r["library"].replace(" OptimizedLSTMCell", "")) for r in data["rows"]
            if not r["library"].endswith(" LSTMCell")]
    libraries = [lib for lib in dict.fromkeys(r["library"] for r in rows)  # in the order of the table
                 if any(r["library"] == lib and r["status"] == "ok" for r in rows)]
    rows = [r for r in rows if r["direction"] == "fwd+bwd" and r["status"] == "ok"]
    workloads = list(data["workloads"])
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(workloads)), 4.5))
    width = 0.8 / max(1, len(libraries))
    for j, lib in enumerate(libraries):
        heights = []
        for wname in workloads:
            match = [r["median_ms"] for r in rows if r["workload"] == wname and r["library"] == lib]
            heights.append(match[0] if match else np.nan)
        ax.bar(np.arange(len(workloads)) + (j - (len(libraries) - 1) / 2) * width, heights, width, label=lib)
    ax.set_xticks(np.arange(len(workloads)))
    ax.set_xticklabels([f"{n}\n{w['kind']} B{w['B']} T{w['T']} H{w['H']}"
                        for n, w in data["workloads"].items()])
    ax.set_yscale("log")
    ax.set_ylabel("fwd+bwd median ms (log)")
    ax.set_title(f"RNN fwd+bwd, {data['machine']['cpu']}, {data['machine']['cores']} cores", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the real workloads, fewer calls")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds: for tests")
    parser.add_argument("--workloads", default=None, help="e.g. W1,W3 (default: all)")
    parser.add_argument("--unrolls", default=None, help="jrnn best: the unrolls tried (default 1,2,4,8,16)")
    parser.add_argument("--jrnn-rows", choices=("all", "default"), default="all",
                        help="default: jrnn's default row only (no unroll sweep, no autodiff row)")
    parser.add_argument("--out", default=str(common.RESULTS), help="folder for peers.{md,json,png}")
    args = parser.parse_args()
    table = SMOKE if args.smoke else WORKLOADS
    names = [n.strip() for n in (args.workloads or ",".join(table)).split(",") if n.strip()]
    unknown = [n for n in names if n not in table]
    if unknown:
        parser.error(f"unknown workloads {unknown}; expected some of {list(table)}")
    calls = CALLS["smoke" if args.smoke else "quick" if args.quick else "full"]
    unrolls = UNROLLS[:2] if args.smoke else UNROLLS
    if args.unrolls:
        unrolls = tuple(int(u) for u in args.unrolls.split(","))
    if args.jrnn_rows == "default":
        unrolls = ()
    common.RESULTS = Path(args.out)  # common.write writes under common.RESULTS
    name = "peers_smoke" if args.smoke else "peers"
    start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    log("matmul peak")
    peak = common.matmul_peak(256 if args.smoke else 2048, calls=5 if calls > 2 else 3)
    head = {"command": "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
            "machine": common.machine(), "versions": versions(), "peak": peak, "calls": calls,
            "unrolls": unrolls, "jrnn_rows": args.jrnn_rows}
    rows = []

    def save(i: int, complete: bool = False) -> dict:
        """Writes the md and JSON of every row so far, workload `names[i]` the last begun; returns the
        data."""
        fill_figures(rows, table, peak["peak_gflops"])
        data = dict(head, workloads={n: dataclasses.asdict(table[n]) for n in names[:i + 1]},
                    not_run=names[i + 1:], complete=complete, rows=rows, seconds=time.perf_counter() - start)
        common.write(name, data, markdown(data))
        return data

    for i, wname in enumerate(names):
        log(f"{wname} {table[wname]}")
        # Saved after every row, so a run cut short keeps what it measured.
        run_workload(wname, table[wname], calls, unrolls, log, rows, functools.partial(save, i),
                     args.jrnn_rows)
    data = save(len(names) - 1, complete=True)
    print(markdown(data))
    plot(data, common.RESULTS / f"{name}.png")
    log(f"wrote {common.RESULTS}/{name}.{{md,json,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
