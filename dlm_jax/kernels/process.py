"""What every diffusion process of the family shares (docs/design.md §1), as a pytree.

    q_t(z | x) = kappa [ A delta_x + B N_x + C u ] + (1 - kappa) delta_m
    A = e^{-s_sem - s_glob},  B = (1 - e^{-s_sem}) e^{-s_glob},  C = 1 - e^{-s_glob},
    kappa = e^{-s_mask}

with cumulative rates s_c(t) = -log alpha_c(t) of three components: semantic (N_x, a
neighbour table), global uniform (u) and mask (delta_m, the extra id V).

A process is a `flax.struct` pytree: its static fields (V, the component schedules, the
parameterisation) are part of a jit's cache key, its arrays (the neighbour table, the
training unigram, the prior-KL table) are leaves, so a process enters every jit as an
argument and no table is a constant of a compiled step. Each member (masking.py,
uniform.py, semdlm.py, semdlm_plus_mask.py, semdlm_plus_uniform.py, topk.py) owns its
loss (`integrand`), its candidate set, its evidence tilt and its posterior step, and states
its capabilities as attributes; `family.make_process` picks the member once.
"""

from __future__ import annotations

import hashlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dlm_jax.kernels import logspace


def _alpha(schedule, t):
  return jnp.ones_like(t) if schedule is None else schedule.alpha(t)


def _one_minus_alpha(schedule, t):
  return jnp.zeros_like(t) if schedule is None else schedule.one_minus_alpha(t)


def _rate(schedule, t):
  return jnp.zeros_like(t) if schedule is None else schedule.rate(t)


_REQUIRED = object()


def static(default=_REQUIRED):
  """A field that is part of the pytree's structure (hashed into a jit's cache key)."""
  if default is _REQUIRED:
    return struct.field(pytree_node=False)
  return struct.field(pytree_node=False, default=default)


class Process(struct.PyTreeNode):
  """One member of the family. Subclasses implement `integrand`, `candidates`,
  `log_evidence` and `posterior_sample`."""
  name: str = static()                 # the config's kernel.name
  vocab_size: int = static()           # V real tokens
  sem: Any = static(None)              # component schedules (None: component absent)
  glob: Any = static(None)
  mask: Any = static(None)
  parameterization: str = static("mean")   # the model's reverse rate: mean | mixture (§3)
  bulk_samples: int = static(0)        # top-k + uniform NELBO: 0 exact, > 0 unbiased estimate
  table: Any = None                    # None | clusters.PartitionTable | topk.TopkTable
  unigram: Any = None                  # (V,) training-token frequencies, for p_1
  prior_kl_table: Any = None           # (V,) KL(q_1(.|x) || p_1), precomputed

  # ------------------------------------------------------------------ capabilities
  absorbing = False       # the pure mask kernel: revealed tokens never change again
  exact_nelbo = True      # the NELBO is tight for a perfect denoiser (False: top-k tables)

  @property
  def cacheable(self) -> bool:
    """Whether a sampler may reuse the network's output while no token changed."""
    return self.absorbing

  @property
  def reported_bound(self) -> str:
    """The NELBO form reported (design.md §6): "nelbo" (t over (0, 1]) for the mask kernel,
    "truncated" (t over [t_min, 1] plus a reconstruction term) for every kernel that corrupts
    into real tokens: there a corrupted token at small t has a true reverse rate ~1/t, so the
    integrand over (0, 1] is ~(1/t) log(1/t) with probability ~t: under the mean form its
    mean is finite but its variance is not (the mixture form's mean is infinite too)."""
    return "nelbo" if self.absorbing else "truncated"

  @property
  def has_mask_token(self) -> bool:
    """Whether the state space has the extra mask id V (the network then embeds V + 1 ids)."""
    return self.mask is not None

  @property
  def mask_id(self) -> int:
    return self.vocab_size if self.has_mask_token else -1

  @property
  def input_vocab_size(self) -> int:
    return self.vocab_size + int(self.has_mask_token)

  @property
  def mean_form(self) -> bool:
    """Whether the model rate is the mean form R^ = rate q_t(y | x_hat) / q_t(z | x_hat)
    (UDLM / Duo's); else the mixture over x_hat. The two coincide for the pure mask kernel."""
    return self.parameterization == "mean" and not self.absorbing

  @property
  def table_kind(self) -> str:
    return "none" if self.table is None else self.table.kind

  def describe(self) -> dict:
    """What a checkpoint records of the process (and a restore must agree with)."""
    return {"kernel": self.name, "structure": self.table_kind,
            "parameterization": self.parameterization, "table": self.table_hash()}

  def table_hash(self) -> str:
    """A content hash of the neighbour table ("none" without one)."""
    if self.table is None:
      return "none"
    if any(isinstance(a, jax.ShapeDtypeStruct) for a in jax.tree.leaves(self.table)):
      return "abstract"
    digest = hashlib.sha256()
    for field in sorted(vars(self.table)):
      digest.update(field.encode() + np.ascontiguousarray(np.asarray(getattr(self.table, field)))
                    .tobytes())
    return digest.hexdigest()[:16]

  @property
  def nelbo_label(self) -> str:
    """What the reported NELBO is (shown in every report)."""
    if self.exact_nelbo:
      return "continuous-time NELBO: an upper bound on -log p(x), tight for a perfect denoiser"
    label = ("NELBO of a non-Markov top-k kernel: a valid upper bound on -log p(x) that stays "
             "loose even for a perfect denoiser")
    if self.glob is not None and self.bulk_samples > 0:
      label += f"; its uniform-target sum is an unbiased estimate ({self.bulk_samples} samples)"
    return label

  def prior_floor(self):
    """Per-token nats (V,) of a floor under the prior term that no training removes, with what
    it is, or None. Only pure SemDLM has one (semdlm.py)."""
    return None

  # ------------------------------------------------------------------ schedules
  def coefficients(self, t):
    """(A, B, C, kappa) at times t (any shape)."""
    a_sem, a_glob, kappa = _alpha(self.sem, t), _alpha(self.glob, t), _alpha(self.mask, t)
    # 1 - alpha from the schedules: as `1.0 - a_glob` C is 0 in float32 for t < 1.7e-4
    # (SemDLM+'s global schedule) and the uniform part would drop out of loss and gradient.
    return (a_sem * a_glob, _one_minus_alpha(self.sem, t) * a_glob,
            _one_minus_alpha(self.glob, t), kappa)

  def one_minus_kappa(self, t):
    """1 - kappa_t, the probability of the mask, from the schedule (no cancellation)."""
    return _one_minus_alpha(self.mask, t)

  def rates(self, t):
    """(s_sem', s_glob', s_mask') at times t."""
    return _rate(self.sem, t), _rate(self.glob, t), _rate(self.mask, t)

  def alpha(self, t):
    """Probability that a token is still clean: kappa * A."""
    A, _, _, kappa = self.coefficients(t)
    return kappa * A

  def noise_level(self, t):
    """sigma(t) = -log alpha(t) = s_sem + s_glob + s_mask, the total cumulative rate (for one
    component, MDLM's / Duo's sigma), from 1 - alpha_c so that it is accurate near t = 0."""
    return sum(-jnp.log1p(-c.one_minus_alpha(t)) for c in (self.sem, self.glob, self.mask)
               if c is not None)

  def component_alpha_ratio(self, t, s):
    """(alpha_sem(t) / alpha_sem(s), alpha_glob(t) / alpha_glob(s)): the t|s increments."""
    return tuple(_alpha(c, t) / _alpha(c, s) for c in (self.sem, self.glob))

  def real_marginal(self, A, B, C, is_x, n_xz):
    """q~(z | x) = A [z = x] + B N_x(z) + C / V, the real-token part of the marginal."""
    return A * is_x + B * n_xz + C / self.vocab_size

  def masked_rate_weight(self, t):
    """s_mask' kappa / (1 - kappa) (0 where 1 - kappa = 0): the weight of the masked z's KL."""
    one_minus = self.one_minus_kappa(t)
    return jnp.where(one_minus > 0, self.rates(t)[2] * self.coefficients(t)[3]
                     / jnp.where(one_minus > 0, one_minus, 1.0), 0.0)

  # ------------------------------------------------------------------ forward process
  def sample_real(self, key, x, t):
    """y ~ q~_t(. | x) = A delta_x + B N_x + C u (the real-token part, no mask), O(k) per
    token. x: (B, L), t: broadcastable to x."""
    A, B, _, _ = [jnp.broadcast_to(c, x.shape) for c in self.coefficients(jnp.asarray(t))]
    k_which, k_nb, k_uni = jax.random.split(key, 3)
    r = jax.random.uniform(k_which, x.shape)
    z = x
    if self.sem is not None:
      ids, weights = self.table.ids[x], self.table.weights[x]
      logw = jnp.log(jnp.maximum(weights, 1e-30))
      j = jax.random.categorical(k_nb, jnp.where(ids >= 0, logw, -jnp.inf))
      neighbour = jnp.take_along_axis(ids, j[..., None], -1)[..., 0]
      z = jnp.where((r >= A) & (r < A + B), neighbour, z)
    if self.glob is not None:
      z = jnp.where(r >= A + B, jax.random.randint(k_uni, x.shape, 0, self.vocab_size), z)
    return z

  def sample_forward(self, key, x, t):
    """z ~ q_t(. | x) per token, in two stages (O(k) per token). x: (B, L), t: (B,)."""
    k_real, k_mask = jax.random.split(key)
    z = self.sample_real(k_real, x, t[:, None])
    if self.has_mask_token:
      kappa = self.coefficients(t)[3][:, None]
      z = jnp.where(jax.random.uniform(k_mask, x.shape) < kappa, z, self.mask_id)
    return z

  # ------------------------------------------------------------------ generative start p_1
  def pushed_unigram(self):
    """sum_x unigram(x) N_x(.) (the unigram itself without a table)."""
    if self.table is None:
      return self.unigram
    ids, weights = self.table.ids, self.table.weights
    valid = ids >= 0
    return jnp.zeros((self.vocab_size,)).at[jnp.where(valid, ids, 0)].add(
        jnp.where(valid, weights * self.unigram[:, None], 0.0))

  def prior_probs(self):
    """p_1 = sum_x unigram(x) q_1(. | x): the exact marginal when unigram is the data's."""
    V, n = self.vocab_size, self.input_vocab_size
    A, B, C, kappa = self.coefficients(jnp.asarray(1.0))
    real = kappa * (A * self.unigram + B * self.pushed_unigram() + C / V)
    if not self.has_mask_token:
      return real
    return jnp.pad(real, (0, n - V)).at[self.mask_id].set(self.one_minus_kappa(jnp.asarray(1.0)))

  def sample_prior(self, key, shape):
    return jax.random.categorical(key, jnp.log(self.prior_probs()), shape=shape)

  def prior_kl(self, x):
    """KL(q_1(. | x) || p_1) per token, from the precomputed (V,) table."""
    return self.prior_kl_table[x]

  # ------------------------------------------------------------------ the reverse step
  def frequency_penalty(self, z):
    """SemDLM+'s semantic-frequency f(x) (docs/design.md §5) per sequence: (B, V), from the
    real tokens of z (B, L): the count of x plus sum_j w_{x,j} the count of N_{x,j}, over L."""
    V, (batch, length) = self.vocab_size, z.shape
    counts = jnp.zeros((batch, V + 1)).at[jnp.arange(batch)[:, None],
                                          jnp.where(z < V, z, V)].add(1.0)[:, :V]
    f = counts
    if self.table is not None:
      ids, weights = self.table.ids, self.table.weights
      nb = jnp.take(counts, jnp.where(ids >= 0, ids, 0), axis=1)                # (B, V, k)
      f = f + jnp.sum(jnp.where(ids >= 0, weights * nb, 0.0), -1)
    return f / length

  def x_posterior(self, z, t):
    """(allowed, tilt) of the reverse step's x-draw given z_t: x is drawn from x_hat restricted
    to the candidates C(z) = {x : q_t(z | x) > 0} (`allowed`, (B, L, V)) and, under the mean
    form, tilted by log q~_t(z | x) (`tilt`, else None): then the posterior step from x is
    p(z_s | z_t) ∝ q(z_t | z_s) q_s(z_s | x_hat) (design.md §5). The loss's reconstruction
    term and the sampler both read this one function."""
    return self.candidates(z, t), (self.log_evidence(z, t) if self.mean_form else None)

  def x_log_posterior(self, logits, z, t):
    """log p(x | z_t) over V (B, L, V) from the denoiser's logits (`x_posterior`)."""
    allowed, tilt = self.x_posterior(z, t)
    logits = logits.astype(jnp.float32)
    if tilt is not None:
      logits = logits + tilt
    return logspace.restricted_log_softmax(logits, allowed)

  # ------------------------------------------------------------------ the loss
  def integrand_from_head(self, head, h, x, z, t, key=None):
    """`integrand` from hidden states h (..., d) and the network's head(h, columns=None)."""
    return self.integrand(head(h), x, z, t, key)

  def integrand(self, logits, x, z, t, key=None):
    """The exact per-token NELBO integrand (docs/design.md §3) in log space. (B, L) nats."""
    raise NotImplementedError

  def candidates(self, z, t):
    """C(z) = {x : q_t(z | x) > 0} as a (B, L, V) mask (all of V where z is the mask)."""
    raise NotImplementedError

  def log_evidence(self, z, t):
    """log q~_t(z | x') for every x' (B, L, V) (0 where z is the mask)."""
    raise NotImplementedError

  def posterior_sample(self, key, z, x, t, s):
    """z_s ~ q(z_s | z_t = z, x) for scalar times s < t; x a candidate of z."""
    raise NotImplementedError
