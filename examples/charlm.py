"""A character language model on Python's own documentation: embedding -> jrnn.Stack of LSTMs -> readout.

Corpus: `pydoc_data.topics` (the help() topics that ship with every Python), one document per topic in
sorted key order; the last 8% of the documents (rounded) are held out for validation. The vocabulary is
the set of characters of the training text, plus two reserved ids: 0 = document boundary, 1 = unknown.

Truncated backpropagation through time: the token stream `[BOUNDARY] doc [BOUNDARY] doc ... [BOUNDARY]` is
cut into `--batch-size` contiguous streams, each read in chunks of `--seq-len` steps; the LSTM state is
carried from one chunk to the next (with no gradient through it). Documents must not see each other, so a
bool `resets [B, T]` marks every BOUNDARY input (and each stream's first step: a stream other than the
first begins mid-document, from zeros), and

    jrnn.rnn_apply(rnn, xs, h0=carried, resets=resets)

runs from the carried state but restarts from zeros (the default `reset_state`) before each marked step,
wherever it falls in the chunk. The model
predicts every character and the BOUNDARY after each document's last one (its end); the validation
figure is bits per character, `mean cross-entropy (nats) / ln 2`, over every held-out target, the state
carried across the validation chunks in the same way.

    python examples/charlm.py                      # about 2-3 minutes on 2 CPU cores
    python examples/charlm.py --steps 2000 --hidden 512 --out runs/charlm-big    # longer, lower BPC

Writes to `--out` (default `runs/charlm/`): `params.ckpt` (`jrnn.save` of `{"embed", "rnn", "readout"}`;
`jrnn.load` reads it back), `vocab.json` (the characters of ids 2, 3, ...) and `results.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

import jrnn

DEMO_EXTRA = "examples/charlm.py needs the demo extra: pip install -e '.[demo]'"
try:
    import optax
    from tqdm.auto import tqdm
except ImportError as e:
    if __name__ == "__main__":
        sys.exit(f"{DEMO_EXTRA} ({e})")
    raise

BOUNDARY, UNKNOWN = 0, 1  # reserved ids; the characters of the vocabulary are ids 2, 3, ...
RESERVED = 2


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run depends on (the command-line flags)."""

    steps: int = 400
    hidden: int = 256
    layers: int = 2
    embed: int = 64
    seq_len: int = 64
    batch_size: int = 32
    lr: float = 3e-3
    clip: float = 1.0
    val_fraction: float = 0.08
    seed: int = 0
    sample_len: int = 400
    temperature: float = 0.6
    prompt: str = "The "


# ---------------------------------------------------------------------------------------------------------
# Data


def load_corpus(val_fraction: float = 0.08) -> tuple[list[str], list[str]]:
    """`(train, val)` documents: the `pydoc_data.topics` texts in sorted key order, the last ones held out.

    `val_fraction` of the documents (rounded, at least one) go to validation.
    """
    from pydoc_data.topics import topics

    docs = [topics[k] for k in sorted(topics)]
    n_val = max(1, round(val_fraction * len(docs)))
    return docs[:-n_val], docs[-n_val:]


def make_vocab(docs: list[str]) -> str:
    """The sorted characters of `docs`; character `vocab[i]` has id `i + 2` (0, 1 are reserved)."""
    return "".join(sorted(set().union(*map(set, docs))))


def encode(text: str, vocab: str) -> np.ndarray:
    """int32 ids of the characters of `text`; characters missing from `vocab` -> `UNKNOWN`."""
    codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    known = np.frombuffer(vocab.encode("utf-32-le"), np.uint32)  # sorted, as `make_vocab` makes it
    if not len(known):
        return np.full(codes.shape, UNKNOWN, np.int32)
    idx = np.minimum(np.searchsorted(known, codes), len(known) - 1)
    return np.where(known[idx] == codes, idx + RESERVED, UNKNOWN).astype(np.int32)


def decode(ids, vocab: str) -> str:
    """Text of `ids`: BOUNDARY as a blank line, UNKNOWN as U+FFFD."""
    table = ["\n\n", "\ufffd", *vocab]
    return "".join(table[i] for i in np.asarray(ids).tolist())


def make_batches(docs: list[np.ndarray], batch_size: int, seq_len: int) -> dict[str, np.ndarray]:
    """Chunks for truncated BPTT: arrays `[N, B, T]` (chunk, stream, step).

    The tokens `[BOUNDARY] doc_0 [BOUNDARY] doc_1 ... [BOUNDARY]` are cut into `batch_size` contiguous
    streams of `N * seq_len` (input, target) pairs, the target being the next token; the last stream is
    padded (weight 0) so that every target is counted exactly once. Chunk `i` of every stream follows
    chunk `i - 1`, so the state carries over.

    Returns:
      `inputs`, `targets` (int32), `resets` (bool: the state restarts from zeros before this step: a
      BOUNDARY input, and the first step of each stream) and `weights` (float32: 1 for real targets).
    """
    pieces = [np.full(1, BOUNDARY, np.int32)]
    for doc in docs:
        pieces += [np.asarray(doc, np.int32), np.full(1, BOUNDARY, np.int32)]
    tokens = np.concatenate(pieces)
    pairs = len(tokens) - 1
    B, T = batch_size, seq_len
    n = max(1, -(-pairs // (B * T)))  # chunks per stream
    tokens = np.concatenate([tokens, np.full(B * n * T + 1 - len(tokens), BOUNDARY, np.int32)])
    weights = (np.arange(B * n * T) < pairs).astype(np.float32)

    def chunked(a: np.ndarray) -> np.ndarray:  # [B * n * T] -> [n, B, T]
        return np.ascontiguousarray(a.reshape(B, n, T).transpose(1, 0, 2))

    inputs = chunked(tokens[:-1])
    resets = inputs == BOUNDARY
    resets[0, :, 0] = True  # every stream starts afresh (also after the previous epoch's last chunk)
    return {"inputs": inputs, "targets": chunked(tokens[1:]), "resets": resets, "weights": chunked(weights)}


# ---------------------------------------------------------------------------------------------------------
# Model


def init_params(key: jax.Array, vocab_size: int, cfg: Config) -> dict[str, Any]:
    """`{"embed": [V, E], "rnn": jrnn.Stack of LSTMs, "readout": {"w": [H, V], "b": [V]}}`, float32."""
    k_embed, k_rnn, k_out = jax.random.split(key, 3)
    embed = jax.random.normal(k_embed, (vocab_size, cfg.embed), jnp.float32)
    rnn = jrnn.Stack.init(k_rnn, jrnn.LSTM, cfg.embed, cfg.hidden, cfg.layers)
    w = jax.random.normal(k_out, (cfg.hidden, vocab_size), jnp.float32) / np.float32(math.sqrt(cfg.hidden))
    return {"embed": embed, "rnn": rnn, "readout": {"w": w, "b": jnp.zeros((vocab_size,), jnp.float32)}}


def initial_state(params: dict[str, Any], batch_size: Optional[int] = None):
    """Zeros: a tuple of `LSTMState`s `[B, H]` (`[H]` when `batch_size` is None, broadcast by `rnn_apply`)."""
    return jrnn.initial_state(params["rnn"], () if batch_size is None else (batch_size,))


def readout(params: dict[str, Any], h: jax.Array) -> jax.Array:
    """Logits `[..., V]` of the top layer's output `h [..., H]`."""
    w, b = params["readout"]["w"], params["readout"]["b"]
    return h @ w + jnp.expand_dims(b, tuple(range(h.ndim - 1)))


def apply_model(params: dict[str, Any], inputs: jax.Array, state, resets: jax.Array):
    """Logits `[B, T, V]` of the next token and the state after the chunk.

    Runs from `state` (carried from the previous chunk); before each step where `resets` is set the state
    goes back to zeros (`rnn_apply`'s default `reset_state`), not to `state`, so a document starting
    mid-chunk sees nothing of the one before.
    """
    xs = jnp.take(params["embed"], inputs, axis=0)
    ys, state = jrnn.rnn_apply(params["rnn"], xs, state, resets=resets)
    return readout(params, ys), state


def loss_fn(params: dict[str, Any], state, batch: dict[str, jax.Array]):
    """`(mean cross-entropy over the weighted targets, new state)` for one chunk."""
    logits, state = apply_model(params, batch["inputs"], state, batch["resets"])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    weights = batch["weights"]
    return jnp.sum(ce * weights) / jnp.maximum(jnp.sum(weights), 1), state


# ---------------------------------------------------------------------------------------------------------
# Training and evaluation


def make_optimizer(cfg: Config) -> optax.GradientTransformation:
    """Adam on a cosine decay to a tenth of `lr` over `steps`, after clipping the global gradient norm."""
    schedule = optax.cosine_decay_schedule(cfg.lr, max(cfg.steps, 1), alpha=0.1)
    return optax.chain(optax.clip_by_global_norm(cfg.clip), optax.adam(schedule))


def make_train_step(optimizer: optax.GradientTransformation):
    """`step(params, opt_state, state, batch) -> (params, opt_state, state, loss)`: one jitted function.

    `params`, `opt_state` and the carried `state` are donated (their buffers are reused for the outputs).
    """

    def train_step(params, opt_state, state, batch):
        (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, batch)
        with jax.numpy_dtype_promotion("standard"):  # optax's Adam bias correction computes `float ** int32`
            updates, opt_state = optimizer.update(grads, opt_state, params)
        # Truncated BPTT: the next chunk starts from this state's values, with no gradient back into this
        # chunk. (Only `params` are differentiated here, so this is explicit rather than needed, and stays
        # right if the step is composed, e.g. scanned over several chunks under one `jax.grad`.)
        new_state = jax.lax.stop_gradient(new_state)
        return optax.apply_updates(params, updates), opt_state, new_state, loss

    return jax.jit(train_step, donate_argnums=(0, 1, 2))


@jax.jit
def _chunk_nats(params: dict[str, Any], batches: dict[str, jax.Array]) -> jax.Array:
    """Summed cross-entropy (nats) of each chunk `[N]`, the state carried across the chunks."""

    def body(state, batch):
        logits, state = apply_model(params, batch["inputs"], state, batch["resets"])
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        return state, jnp.sum(ce * batch["weights"])

    state = initial_state(params, batches["inputs"].shape[1])
    return jax.lax.scan(body, state, batches)[1]


def evaluate(params: dict[str, Any], batches: dict[str, np.ndarray]) -> dict[str, float]:
    """Bits per character (`nats / ln 2`) and nats per character over the weighted targets of `batches`."""
    nats = float(np.sum(np.asarray(_chunk_nats(params, batches), np.float64)))
    count = float(np.sum(batches["weights"], dtype=np.float64))
    return {"bpc": nats / count / math.log(2), "nats_per_char": nats / count, "chars": int(count)}


@functools.partial(jax.jit, static_argnames=("length",))
def _sample_ids(params, prompt_ids, key, temperature, length: int) -> jax.Array:
    rnn = params["rnn"]
    zeros = initial_state(params)  # one sequence: states [H]
    ys, state = jrnn.rnn_apply(rnn, jnp.take(params["embed"], prompt_ids, axis=0), zeros)  # [P, H]

    def step(carry, key):
        logits, state = carry
        token = jax.random.categorical(key, logits / temperature).astype(jnp.int32)
        # A sampled BOUNDARY starts a new document: from zeros, as in training.
        state = jax.tree.map(lambda z, s: jnp.where(token == BOUNDARY, z, s), zeros, state)
        out, state = jrnn.cell_apply(rnn, params["embed"][token], state)
        return (readout(params, out), state), token

    _, tokens = jax.lax.scan(step, (readout(params, ys[-1]), state), jax.random.split(key, length))
    return tokens


def sample(params: dict[str, Any], vocab: str, prompt: str, length: int, *, key: jax.Array,
           temperature: float = 1.0) -> str:
    """`prompt` continued by `length` characters drawn from `softmax(logits / temperature)`.

    The prompt starts a new document (after a BOUNDARY); it is read by one `rnn_apply`, then each
    character is drawn and fed back through `jrnn.cell_apply` on the stack, one step at a time.
    """
    if length <= 0:
        return prompt
    prompt_ids = np.concatenate([np.full(1, BOUNDARY, np.int32), encode(prompt, vocab)])
    tokens = _sample_ids(params, prompt_ids, key, np.float32(temperature), length)
    return prompt + decode(tokens, vocab)


def train(cfg: Config, train_docs: list[np.ndarray], *, vocab_size: int, progress: bool = True):
    """Trains from `cfg.seed` for `cfg.steps` chunks; each epoch reads the documents in a fresh order."""
    optimizer = make_optimizer(cfg)
    train_step = make_train_step(optimizer)
    # Jitted: one compile each, not one per eager op.
    params = jax.jit(init_params, static_argnums=(1, 2))(jax.random.key(cfg.seed), vocab_size, cfg)
    opt_state = jax.jit(optimizer.init)(params)
    # `jrnn.initial_state` gives each LSTMState one zeros array as both `h` and `c`; the step donates the
    # state, and one buffer cannot be donated twice: copy the leaves into buffers of their own.
    state = jax.tree.map(jnp.copy, initial_state(params, cfg.batch_size))
    rng = np.random.default_rng(cfg.seed)

    def epoch_batches():
        order = rng.permutation(len(train_docs))
        return make_batches([train_docs[i] for i in order], cfg.batch_size, cfg.seq_len)

    batches = epoch_batches()
    t0 = time.perf_counter()  # compile ahead of time, so that the throughput is the training's alone
    first = {k: v[0] for k, v in batches.items()}
    train_step = train_step.lower(params, opt_state, state, first).compile()
    compile_s = time.perf_counter() - t0

    losses = []
    bar = tqdm(total=cfg.steps, unit="step", dynamic_ncols=True, disable=not progress)
    t0 = time.perf_counter()
    step, chunk = 0, 0
    while step < cfg.steps:
        if chunk == len(batches["inputs"]):
            batches, chunk = epoch_batches(), 0  # the next epoch; its first chunk resets every stream
        batch = {k: v[chunk] for k, v in batches.items()}
        params, opt_state, state, loss = train_step(params, opt_state, state, batch)
        losses.append(loss)
        step, chunk = step + 1, chunk + 1
        bar.update(1)
        if step % 20 == 0 or step == cfg.steps:
            bar.set_postfix(loss=f"{float(loss):.3f}")
    losses = np.asarray(jax.device_get(losses), np.float64)  # waits for the last step
    train_s = time.perf_counter() - t0
    bar.close()
    return params, {"losses": losses, "compile_s": compile_s, "train_s": train_s,
                    "chars_per_s": cfg.steps * cfg.batch_size * cfg.seq_len / train_s}


# ---------------------------------------------------------------------------------------------------------
# Command line


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}; got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}; got {text!r}")
        return value
    return parse


def make_parser() -> argparse.ArgumentParser:
    d = Config()
    p = argparse.ArgumentParser(prog="examples/charlm.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=_positive(int), default=d.steps, help="training chunks (optimizer steps)")
    p.add_argument("--hidden", type=_positive(int), default=d.hidden, help="LSTM hidden size")
    p.add_argument("--layers", type=_positive(int), default=d.layers, help="stacked LSTM layers")
    p.add_argument("--embed", type=_positive(int), default=d.embed, help="embedding size")
    p.add_argument("--seq-len", type=_positive(int), default=d.seq_len, help="steps per chunk (BPTT length)")
    p.add_argument("--batch-size", type=_positive(int), default=d.batch_size, help="parallel streams")
    p.add_argument("--lr", type=_positive(float), default=d.lr, help="peak Adam learning rate")
    p.add_argument("--seed", type=int, default=d.seed, help="init, document order and sampling")
    p.add_argument("--out", default=os.path.join("runs", "charlm"), help="output directory")
    p.add_argument("--sample-len", type=int, default=d.sample_len, help="characters to sample")
    p.add_argument("--temperature", type=_positive(float), default=d.temperature, help="sampling temperature")
    p.add_argument("--prompt", default=d.prompt, help="text the sample continues")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Trains, evaluates, samples and saves; returns the results (also written to `<out>/results.json`)."""
    wall0 = time.perf_counter()
    args = make_parser().parse_args(argv)
    cfg = Config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
                    if hasattr(args, f.name)})
    train_text, val_text = load_corpus(cfg.val_fraction)
    vocab = make_vocab(train_text)
    V = len(vocab) + RESERVED
    train_docs = [encode(d, vocab) for d in train_text]
    val_batches = make_batches([encode(d, vocab) for d in val_text], cfg.batch_size, cfg.seq_len)
    n_train, n_val = sum(map(len, train_text)), sum(map(len, val_text))
    print(f"jrnn {jrnn.__version__}, jax {jax.__version__}, {jax.devices()[0].device_kind}")
    print(f"pydoc topics: {len(train_text)} train documents ({n_train:,} chars), {len(val_text)} validation "
          f"({n_val:,} chars); vocabulary {V}; {cfg.layers}-layer LSTM-{cfg.hidden}, embedding {cfg.embed}; "
          f"{cfg.steps} steps of {cfg.batch_size} x {cfg.seq_len} chars")

    params, log = train(cfg, train_docs, vocab_size=V, progress=args.progress)
    val = evaluate(params, val_batches)
    text = sample(params, vocab, cfg.prompt, cfg.sample_len, key=jax.random.key(cfg.seed + 1),
                  temperature=cfg.temperature)

    os.makedirs(args.out, exist_ok=True)
    ckpt = os.path.join(args.out, "params.ckpt")
    jrnn.save(ckpt, params)
    with open(os.path.join(args.out, "vocab.json"), "w") as f:
        json.dump({"reserved": {"boundary": BOUNDARY, "unknown": UNKNOWN}, "chars": vocab}, f)
    tail = log["losses"][-min(50, len(log["losses"])):]
    results = {"val_bpc": val["bpc"], "val_nats_per_char": val["nats_per_char"], "val_targets": val["chars"],
               "train_loss": float(tail.mean()), "train_bpc": float(tail.mean() / math.log(2)),
               "vocab_size": V, "train_chars": n_train, "val_chars": n_val,
               "compile_s": log["compile_s"], "train_s": log["train_s"], "chars_per_s": log["chars_per_s"],
               "wall_s": time.perf_counter() - wall0, "sample": text, "checkpoint": ckpt,
               "config": dataclasses.asdict(cfg)}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"train loss {results['train_loss']:.3f} nats ({results['train_bpc']:.3f} bpc, last {len(tail)} "
          f"steps); validation {val['bpc']:.3f} bits per character over {val['chars']:,} targets")
    print(f"sample (temperature {cfg.temperature}):\n{text}\n")
    print(f"{log['chars_per_s']:,.0f} chars/s; compile {log['compile_s']:.1f} s, "
          f"train {log['train_s']:.1f} s, wall time {results['wall_s']:.1f} s; params in {ckpt}")
    return results


if __name__ == "__main__":
    main()
