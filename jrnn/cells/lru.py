"""LRU (Orvieto et al., 2023, "Resurrecting Recurrent Neural Networks for Long Sequences")."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from jrnn.cell import Cell, lift
from jrnn.cells.base import check_fields, check_init_args, check_real, pytree_dataclass


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class LRU(Cell):
    """Params of an LRU: a complex diagonal linear recurrence with a real readout.

        h_t = lambda * h_{t-1} + gamma * (x_t B)        (complex, `[..., N]`)
        y_t = Re(h_t C) + D * x_t                        (real, `[..., I]`)

    with the paper's exponential parametrisation `lambda = exp(-exp(nu_log) + i exp(theta_log))`
    (so `|lambda| < 1`: stable for any parameter values) and normalisation `gamma = exp(gamma_log)`,
    initialised to `sqrt(1 - |lambda|^2)`. The state is complex (`complex128` for float64 params,
    else `complex64`: bfloat16 params project and read out in bfloat16, and recur in `complex64`); the
    output has the input's width, as in the paper. N is `hidden_size`.

    Attributes:
      nu_log, theta_log, gamma_log: `[N]`.
      B_re, B_im: `[I, N]`, the input projection.
      C_re, C_im: `[N, I]`, the readout.
      D: `[I]`, the skip term.
    """

    nu_log: jax.Array
    theta_log: jax.Array
    gamma_log: jax.Array
    B_re: jax.Array
    B_im: jax.Array
    C_re: jax.Array
    C_im: jax.Array
    D: jax.Array

    linear = True
    has_readout = True

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raises `TypeError`/`ValueError` naming the field when the params do not fit together: run
        where the params are built (their constructor, `dataclasses.replace`, `jrnn.load`)."""
        check_fields(self, "LRU", (("nu_log", ("N",)), ("theta_log", ("N",)), ("gamma_log", ("N",)),
                                   ("B_re", ("I", "N")), ("B_im", ("I", "N")), ("C_re", ("N", "I")),
                                   ("C_im", ("N", "I")), ("D", ("I",))))

    @classmethod
    def init(cls, key: jax.Array, input_size: int, hidden_size: int, *, r_min: float = 0.0,
             r_max: float = 1.0, max_phase: float = 2 * math.pi, dtype=jnp.float32) -> LRU:
        """The paper's initialisation: eigenvalues uniform on the ring `r_min <= |lambda| <= r_max`
        with phases in `[0, max_phase]`; `B`, `C` complex Glorot-like normals; `D` standard normal."""
        input_size, hidden_size, dtype = check_init_args(key, input_size, hidden_size, "keras", dtype)
        r_min, r_max, max_phase = (check_real(n, v) for n, v in
                                   (("r_min", r_min), ("r_max", r_max), ("max_phase", max_phase)))
        if not 0 <= r_min < r_max <= 1:
            raise ValueError(f"LRU needs 0 <= `r_min` < `r_max` <= 1; got r_min={r_min!r}, r_max={r_max!r}")
        if not max_phase > 0:
            raise ValueError(f"`max_phase` must be positive; got {max_phase!r}")
        I, N = input_size, hidden_size
        k = jax.random.split(key, 7)
        u1 = jax.random.uniform(k[0], (N,), jnp.float32)
        u2 = jax.random.uniform(k[1], (N,), jnp.float32)
        nu_log = jnp.log(-0.5 * jnp.log(u1 * (r_max**2 - r_min**2) + r_min**2))
        theta_log = jnp.log(max_phase * u2)
        gamma_log = jnp.log(jnp.sqrt(1 - jnp.exp(-jnp.exp(nu_log)) ** 2))
        normal = lambda key, shape, fan: jax.random.normal(key, shape, jnp.float32) / math.sqrt(fan)  # noqa: E731
        return cls(*(a.astype(dtype) for a in (
            nu_log, theta_log, gamma_log, normal(k[2], (I, N), 2 * I), normal(k[3], (I, N), 2 * I),
            normal(k[4], (N, I), N), normal(k[5], (N, I), N), jax.random.normal(k[6], (I,), jnp.float32))))

    @property
    def input_size(self) -> int:
        return self.B_re.shape[-2]

    @property
    def hidden_size(self) -> int:
        return self.nu_log.shape[-1]

    @property
    def output_size(self) -> int:
        return self.D.shape[-1]

    @property
    def dtype(self):
        return self.nu_log.dtype

    @property
    def state_dtype(self):
        return jnp.dtype(jnp.complex128 if self.dtype == jnp.float64 else jnp.complex64)

    @property
    def _real_dtype(self):
        """The real dtype of the state's parts (float32 for float32 and bfloat16 params)."""
        return jnp.finfo(self.state_dtype).dtype

    @property
    def output_dtype(self):
        return jnp.dtype(jnp.float64 if self.dtype == jnp.float64 else jnp.float32)

    def project(self, x: jax.Array) -> jax.Array:
        """`gamma * (x B) [..., N]`, complex."""
        x = x.astype(self.dtype)
        gamma = jnp.exp(self.gamma_log)
        re, im = x @ self.B_re, x @ self.B_im
        gamma = lift(gamma, re.ndim)
        real = self._real_dtype
        return jax.lax.complex((gamma * re).astype(real), (gamma * im).astype(real))

    def coefficients(self, gx: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`a = lambda` (the same at every step), `b = gx`; each complex `[..., N]`."""
        real = self._real_dtype
        nu, theta = self.nu_log.astype(real), self.theta_log.astype(real)
        lam = jnp.exp(jax.lax.complex(-jnp.exp(nu), jnp.exp(theta)))
        return jnp.broadcast_to(lam.astype(gx.dtype), gx.shape), gx

    def readout(self, out: jax.Array, x: jax.Array) -> jax.Array:
        """`Re(h C) + D * x`: the real output `[..., I]` from the state `[..., N]` and input `[..., I]`."""
        y = out.real.astype(self.dtype) @ self.C_re - out.imag.astype(self.dtype) @ self.C_im
        return (y + lift(self.D, x.ndim) * x.astype(self.dtype)).astype(self.output_dtype)
