"""Tests of the digits demo (examples/digits.py): training works, the entry point writes its files, sharding
changes nothing.

In-process where possible, so the conftest's strict dtype promotion, rank promotion "raise" and
warnings-as-errors hold inside the example too; the 8-device check needs its own process (the device
count is fixed when jax starts).
"""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "digits.py"


def _import_digits():
    spec = importlib.util.spec_from_file_location("digits", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["digits"] = module
    spec.loader.exec_module(module)
    return module


digits = _import_digits()


@pytest.fixture(scope="module")
def data():
    return digits.make_data()


def _subprocess_env(**extra) -> dict:
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "examples"), env.get("PYTHONPATH")]))
    return env


def test_make_data_shapes_and_split(data):
    assert data["x_train"].shape == (1437, 8, 8) and data["x_test"].shape == (360, 8, 8)
    assert data["x_train"].dtype == np.float32 and data["y_train"].dtype == np.int32
    assert 0.0 <= data["x_train"].min() and data["x_train"].max() <= 1.0
    whole = np.bincount(np.concatenate([data["y_train"], data["y_test"]]))
    assert np.all(np.abs(np.bincount(data["y_test"]) - 0.2 * whole) <= 1)  # stratified
    np.testing.assert_array_equal(digits.make_data()["x_test"], data["x_test"])  # a fixed split
    pixels = digits.make_data(pixels=True)
    assert pixels["x_train"].shape == (1437, 64, 1)
    np.testing.assert_array_equal(pixels["x_train"].reshape(-1, 8, 8), data["x_train"])  # same split


def test_train_steps_lower_the_loss_on_a_fixed_batch(data):
    # The GRU, the final-state readout and the bidirectional stack run in the other tests.
    cfg = digits.Config(cell="lstm", hidden=16, bidirectional=False, readout="mean", unroll=2, epochs=1,
                        warmup_epochs=0, lr=3e-2, recurrent_dropout=0.0)
    mesh = digits.make_mesh(1)
    optimizer = digits.make_optimizer(cfg, steps_per_epoch=10)
    step = digits.make_train_step(cfg, optimizer, mesh)
    params = digits.replicate(mesh, lambda k: digits.init_params(k, cfg, 8), jax.random.key(0))
    assert params["readout"]["w"].shape == (16, 10) and params["readout"]["b"].shape == (10,)
    opt_state = optimizer.init(params)
    xs, ys = digits.shard_batch(mesh, data["x_train"][:64], data["y_train"][:64])
    key = jax.random.key(1)
    donated = jax.tree.leaves((params, opt_state))
    losses = []  # without dropout, step i returns the loss of the params before its update
    for i in range(11):
        params, opt_state, loss = step(params, opt_state, xs, ys, key, np.int32(i))
        assert loss.shape == () and loss.dtype == jnp.float32
        losses.append(float(loss))
    assert all(leaf.is_deleted() for leaf in donated)  # the step reused the donated buffers
    assert np.all(np.diff(losses) < 0) and losses[-1] < losses[0] - 0.2, losses  # 2.29 -> 2.01 for the LSTM


def test_small_model_learns_in_a_few_epochs(data):
    cfg = digits.Config(hidden=32, epochs=5, warmup_epochs=1, lr=2e-2, seed=0)  # ~96% (seeds 0-2)
    out = digits.train(cfg, data, digits.make_mesh(), progress=False, verbose=False)
    history = out["history"]
    assert len(history["test_accuracy"]) == 5 and out["steps_per_epoch"] == 1437 // 64
    assert history["test_accuracy"][-1] > 0.90, history
    assert history["loss"][-1] < history["loss"][0]
    assert out["best_accuracy"] == max(history["test_accuracy"])


def test_main_end_to_end(tmp_path, capsys):
    out_dir = tmp_path / "run"
    results = digits.main(["--epochs", "1", "--hidden", "8", "--cell", "lstm", "--layers", "2",
                           "--out", str(out_dir), "--no-progress"])
    printed = capsys.readouterr().out
    assert "epoch   1" in printed and "final test accuracy" in printed and "wall time" in printed
    assert {"test_accuracy", "best_accuracy", "wall_s", "samples_per_s", "devices", "history"} <= set(results)
    assert results["samples_per_s"] > 0 and results["devices"] == jax.device_count()
    assert (out_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out_dir / "results.json").read_text())["test_accuracy"] == results["test_accuracy"]

    # The checkpoint loads without a template and gives the accuracy that was reported for it.
    params = jrnn.load(out_dir / "best.ckpt")
    assert isinstance(params["rnn"], jrnn.Stack) and len(params["rnn"].layers) == 2
    assert isinstance(params["rnn"].layers[0], jrnn.Bidirectional)
    assert isinstance(params["rnn"].layers[0].forward, jrnn.LSTM)
    cfg = digits.Config(**results["config"])
    data = digits.make_data()
    logits = jax.jit(digits.apply_model, static_argnums=2)(params, jnp.asarray(data["x_test"]), cfg)
    accuracy = float(np.mean(np.argmax(np.asarray(logits), axis=-1) == data["y_test"]))
    assert accuracy == pytest.approx(results["best_accuracy"], abs=1e-9)


@pytest.mark.parametrize("args, message", [
    (["--cell", "rnn"], "invalid choice"),
    (["--hidden", "0"], "expected a positive int"),
    (["--epochs", "two"], "expected a positive int"),
    (["--lr=-1e-3"], "expected a positive float"),
    (["--recurrent-dropout", "1"], "expected a float in [0, 1)"),
    (["--devices", "1000"], "device(s) available"),
    (["--batch-size", "5000"], "exceeds the training set"),
])
def test_bad_flags_are_argparse_errors(args, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        digits.main([*args, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_demo_extra_is_one_clear_line():
    code = ("import runpy, sys; sys.modules['optax'] = None; "
            f"sys.argv = ['examples/digits.py']; runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=_subprocess_env())
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(digits.DEMO_EXTRA), proc.stderr


SHARDING_CHECK = textwrap.dedent("""
    import json
    import jax, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    jax.config.update("jax_numpy_rank_promotion", "raise")
    import digits

    assert jax.device_count() == 8, jax.devices()
    cfg = digits.Config(hidden=16, layers=2, bidirectional=False, warmup_epochs=0, epochs=1,
                        dropout=0.1, recurrent_dropout=0.2, layer_dropout=0.1)  # every kind of dropout
    data = digits.make_data()
    xs_np, ys_np = data["x_train"][:64], data["y_train"][:64]
    optimizer = digits.make_optimizer(cfg, steps_per_epoch=10)
    init = jax.device_get(jax.jit(lambda k: digits.init_params(k, cfg, 8))(jax.random.key(0)))
    results = {}
    for n in (8, 1):
        mesh = digits.make_mesh(n)
        replicated = NamedSharding(mesh, P())
        params = jax.device_put(init, replicated)
        opt_state = jax.device_put(optimizer.init(init), replicated)
        xs, ys = digits.shard_batch(mesh, xs_np, ys_np)
        assert len(xs.sharding.device_set) == n and xs.addressable_shards[0].data.shape == (64 // n, 8, 8)
        step = digits.make_train_step(cfg, optimizer, mesh)
        losses = []
        for i in range(2):
            params, opt_state, loss = step(params, opt_state, xs, ys, jax.random.key(1), np.int32(i))
            losses.append(float(loss))
        assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(params))
        results[n] = (jax.device_get(params), losses)
    (p8, l8), (p1, l1) = results[8], results[1]
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(init)))
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(p8), jax.tree.leaves(p1)))
    print(json.dumps({"diff": diff, "moved": moved, "losses_8": l8, "losses_1": l1}))
""")


def test_sharded_step_matches_single_device():
    flags = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), "--xla_force_host_platform_device_count=8"]))
    proc = subprocess.run([sys.executable, "-c", SHARDING_CHECK], capture_output=True, text=True, timeout=300,
                          env=_subprocess_env(XLA_FLAGS=flags, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["moved"] > 1e-3  # the steps did change the params
    assert out["diff"] < 1e-5, out
    np.testing.assert_allclose(out["losses_8"], out["losses_1"], rtol=1e-5)


def test_config_matches_the_flags():
    parse = digits.make_parser().parse_args
    assert digits.config_from_args(parse([])) == digits.Config()
    assert digits.config_from_args(parse(["--pixels"])) == digits.Config(pixels=True, lr=digits.PIXELS_LR)
    assert digits.config_from_args(parse(["--pixels", "--lr", "1e-3"])).lr == 1e-3
    cfg = digits.config_from_args(parse(["--cell", "lstm", "--no-bidirectional", "--readout", "mean",
                                         "--recurrent-dropout", "0", "--batch-size", "32"]))
    assert cfg == dataclasses.replace(digits.Config(), cell="lstm", bidirectional=False, readout="mean",
                                      recurrent_dropout=0.0, batch_size=32)
