"""Strict dtype promotion and no implicit rank promotion: silent broadcasting is a bug."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
# The suite compiles about a thousand small programs and runs each a few times: XLA's cheap backend
# passes take ~40% off the wall time on 2 cores (tests/test_rnn.py and test_parallel.py: 3:27 -> 1:58).
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), FAST_COMPILE]))

import jax  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
