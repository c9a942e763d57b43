"""Tests of examples/charlm.py: batching, truncated BPTT with document resets, training, the whole run.

The example is imported in-process, so the conftest's strict dtype promotion, rank promotion "raise" and
warnings-as-errors hold inside it too. Sizes are tiny; `main` writes under `tmp_path`.
"""

import dataclasses
import importlib.util
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax  # noqa: E402, F401  (the test extra installs it: a missing one must fail, not skip)
import tqdm  # noqa: E402, F401

import jrnn

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "charlm.py"
_spec = importlib.util.spec_from_file_location("examples_charlm", EXAMPLE)
charlm = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = charlm  # dataclasses look their module up while the file runs
_spec.loader.exec_module(charlm)

TINY = charlm.Config(hidden=8, layers=2, embed=5, seq_len=6, batch_size=3)
V = 9  # 2 reserved ids + 7 characters
RESERVED = charlm.RESERVED
apply_model = jax.jit(charlm.apply_model)  # jitted: one compile per shape instead of one per eager op


def tiny_params(seed: int = 0):
    return jax.jit(charlm.init_params, static_argnums=(1, 2))(jax.random.key(seed), V, TINY)


def random_state(params, batch_size: int, seed: int = 1):
    """A non-zero state, as if carried from an earlier chunk."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape).astype(np.float32)),
                        charlm.initial_state(params, batch_size))


def assert_trees_close(a, b, **tol):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


TOL = dict(rtol=1e-5, atol=1e-6)


def test_vocab_encode_decode():
    vocab = charlm.make_vocab(["hello", "world"])
    assert vocab == "dehlorw"
    ids = charlm.encode("held?", vocab)
    assert ids.dtype == np.int32
    assert ids.tolist() == [4, 3, 5, 2, charlm.UNKNOWN]
    assert charlm.decode(ids, vocab) == "held\ufffd"
    assert charlm.decode([charlm.BOUNDARY], vocab) == "\n\n"


def test_make_batches_streams_and_resets():
    docs = [np.arange(2, 2 + n, dtype=np.int32) for n in (5, 9, 3, 7)]
    tokens = np.concatenate([x for d in docs for x in ([charlm.BOUNDARY], d)] + [[charlm.BOUNDARY]])
    B, T = 3, 4
    b = charlm.make_batches(docs, B, T)
    N = b["inputs"].shape[0]
    assert N == math.ceil((len(tokens) - 1) / (B * T))
    assert {k: v.shape for k, v in b.items()} == dict.fromkeys(("inputs", "targets", "resets", "weights"),
                                                                (N, B, T))
    assert b["inputs"].dtype == b["targets"].dtype == np.int32 and b["resets"].dtype == bool
    # Each stream, read chunk after chunk, is a contiguous piece of the tokens; targets are the next tokens.
    inputs = b["inputs"].transpose(1, 0, 2).reshape(B, N * T)
    targets = b["targets"].transpose(1, 0, 2).reshape(B, N * T)
    weights = b["weights"].transpose(1, 0, 2).reshape(-1)
    assert weights.sum() == len(tokens) - 1  # every target counted once, padding weighs 0
    real = weights > 0
    np.testing.assert_array_equal(inputs.reshape(-1)[real], tokens[:-1])
    np.testing.assert_array_equal(targets.reshape(-1)[real], tokens[1:])
    # Resets at every document start (a BOUNDARY input) and at each stream's first step, nowhere else.
    expected = b["inputs"] == charlm.BOUNDARY
    expected[0, :, 0] = True
    np.testing.assert_array_equal(b["resets"], expected)


def random_ids(shape, seed: int) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).integers(RESERVED, V, shape, dtype=np.int32))


def log_softmax(logits) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def test_carried_state_equals_one_run_over_the_joined_chunks():
    """Truncated BPTT's forward pass: two chunks with the state carried = one run over both."""
    params = tiny_params()
    B, T = TINY.batch_size, TINY.seq_len
    ids = random_ids((B, 2 * T), seed=2)
    resets = np.zeros((B, 2 * T), bool)
    resets[0, 0] = resets[1, 2] = resets[1, T + 1] = resets[2, T] = True  # starts, inside, at the cut
    state0 = random_state(params, B)
    with jax.default_matmul_precision("float32"):
        joined, h_joined = apply_model(params, ids, state0, jnp.asarray(resets))
        first, h1 = apply_model(params, ids[:, :T], state0, jnp.asarray(resets[:, :T]))
        second, h2 = apply_model(params, ids[:, T:], h1, jnp.asarray(resets[:, T:]))
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), joined, **TOL)
    assert_trees_close(h2, h_joined, **TOL)
    # ... and the same in the jitted evaluation, which scans `apply_model` over the chunks of `make_batches`.
    batches = charlm.make_batches([np.arange(2, n, dtype=np.int32) for n in (9, 5, 8, 3, 9)], B, T)
    assert batches["inputs"].shape[0] >= 2
    with jax.default_matmul_precision("float32"):
        per_chunk = charlm._chunk_nats(params, batches)
        state, total = charlm.initial_state(params, B), 0.0
        for i in range(batches["inputs"].shape[0]):
            logits, state = apply_model(params, batches["inputs"][i], state, batches["resets"][i])
            ce = -np.take_along_axis(log_softmax(logits), batches["targets"][i][..., None], axis=-1)[..., 0]
            total += float(np.sum(ce * batches["weights"][i]))
    np.testing.assert_allclose(float(np.sum(per_chunk)), total, rtol=1e-5)


def test_document_boundary_inside_a_chunk_starts_from_zeros():
    """After a boundary the outputs are the new document's alone, whatever state was carried in."""
    params = tiny_params()
    B, T, at = TINY.batch_size, TINY.seq_len, 2  # documents start at step 2 of streams 0 and 1
    ids = random_ids((B, T), seed=3).at[:2, at].set(charlm.BOUNDARY)
    resets = jnp.zeros((B, T), bool).at[:2, at].set(True)
    carried = random_state(params, B)
    zeros = charlm.initial_state(params, B)
    with jax.default_matmul_precision("float32"):
        logits, _ = apply_model(params, ids, carried, resets)
        # The new document alone, from zeros (what follows it in this chunk cannot change its outputs).
        alone, _ = apply_model(params, jnp.roll(ids, -at, axis=1), zeros, jnp.zeros((B, T), bool))
        no_reset, _ = apply_model(params, ids, carried, jnp.zeros((B, T), bool))
    np.testing.assert_allclose(logits[:2, at:], alone[:2, :T - at], **TOL)
    np.testing.assert_allclose(logits[:2, :at], no_reset[:2, :at], **TOL)  # before it, the carried state
    np.testing.assert_allclose(logits[2], no_reset[2], **TOL)  # a stream without a boundary
    assert np.abs(np.asarray(no_reset[:2, at:] - alone[:2, :T - at])).max() > 1e-3  # the carried state counts


def test_train_steps_lower_the_loss_on_a_fixed_batch():
    cfg = dataclasses.replace(TINY, lr=3e-2, steps=15)
    optimizer = charlm.make_optimizer(cfg)
    step = charlm.make_train_step(optimizer)
    params = tiny_params()
    opt_state = optimizer.init(params)
    docs = [np.arange(2, V, dtype=np.int32)] * 3
    batch = {k: v[0] for k, v in charlm.make_batches(docs, cfg.batch_size, cfg.seq_len).items()}
    losses = []
    for _ in range(cfg.steps):  # each step from zeros, on the same chunk
        state = jax.tree.map(jnp.copy, charlm.initial_state(params, cfg.batch_size))  # donated
        params, opt_state, state, loss = step(params, opt_state, state, batch)
        losses.append(float(loss))
    assert math.log(V) * 0.7 < losses[0] < math.log(V) * 1.5  # about uniform at the start
    assert losses[-1] < 0.8 * losses[0] and losses[-1] == min(losses)
    assert jax.tree.structure(state) == jax.tree.structure(charlm.initial_state(params, cfg.batch_size))


def test_sample_continues_the_prompt():
    vocab = "abcdefg"
    text = charlm.sample(tiny_params(), vocab, "bad", 25, key=jax.random.key(0), temperature=0.8)
    assert text.startswith("bad")
    assert set(text[3:]) <= set(vocab) | {"\n", "\ufffd"}
    again = charlm.sample(tiny_params(), vocab, "bad", 25, key=jax.random.key(0), temperature=0.8)
    assert again == text


def test_main_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    results = charlm.main(["--steps", "3", "--hidden", "16", "--layers", "1", "--embed", "8",
                           "--seq-len", "32", "--batch-size", "8", "--sample-len", "20", "--out", str(out),
                           "--no-progress"])
    assert math.isfinite(results["val_bpc"]) and 0 < results["val_bpc"] < 10
    n_val_docs = len(charlm.load_corpus()[1])
    assert results["val_targets"] == results["val_chars"] + n_val_docs  # every character + each document end
    assert results["sample"].startswith(charlm.Config.prompt)
    assert "bits per character" in capsys.readouterr().out
    restored = jrnn.load(out / "params.ckpt")
    assert set(restored) == {"embed", "rnn", "readout"}
    assert isinstance(restored["rnn"], jrnn.Stack) and len(restored["rnn"].layers) == 1
    assert restored["embed"].shape == (results["vocab_size"], 8)
    assert (out / "vocab.json").exists() and (out / "results.json").exists()
