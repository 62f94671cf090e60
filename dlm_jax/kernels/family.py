"""The interpolating kernel family (docs/design.md §1), as one frozen dataclass.

    q_t(z | x) = kappa [ A delta_x + B N_x + C u ] + (1 - kappa) delta_m
    A = e^{-s_sem - s_glob},  B = (1 - e^{-s_sem}) e^{-s_glob},  C = 1 - e^{-s_glob},
    kappa = e^{-s_mask}

with cumulative rates s_c(t) = -log alpha_c(t) of three components: semantic
(N_x, a neighbour table), global uniform (u) and mask (delta_m, the extra id V).
Masking, uniform, SemDLM and SemDLM+ are configurations of it:

| kernel       | components                         |
|--------------|------------------------------------|
| masking      | mask                               |
| uniform      | glob                               |
| semdlm       | sem                                |
| semdlm_plus  | sem + glob (uniform) or sem + mask |

This module is the kernel registry: it holds what every structure shares (coefficients,
rates, forward sampling, the generative start p_1) and picks, once, the module of the
kernel's structure (`kernel.structure`): `markov` for masking, uniform and partition
tables, `topk` for top-k tables. Each structure module owns its candidate set, NELBO
integrand and posterior step; nothing else branches on the structure.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax.errors import UserError
from dlm_jax.kernels import markov, schedules, topk

KERNELS = ("masking", "uniform", "semdlm", "semdlm_plus")
PARAMETERIZATIONS = ("mean", "mixture")
SEMANTIC = ("semdlm", "semdlm_plus")
GLOBAL_KINDS = ("uniform", "mask")
TABLES = {"partition": markov.PartitionTable, "topk": topk.TopkTable}


def _alpha(schedule, t):
  return jnp.ones_like(t) if schedule is None else schedule.alpha(t)


def _one_minus_alpha(schedule, t):
  return jnp.zeros_like(t) if schedule is None else schedule.one_minus_alpha(t)


def _rate(schedule, t):
  return jnp.zeros_like(t) if schedule is None else schedule.rate(t)


@dataclasses.dataclass(frozen=True, eq=False)
class Kernel:
  """One member of the family. `eq=False`: hashed by identity, usable as a jit static."""
  name: str
  vocab_size: int                      # V real tokens
  sem: Any = None                      # schedules (None: component absent)
  glob: Any = None
  mask: Any = None
  table: Any = None                    # None | markov.PartitionTable | topk.TopkTable
  unigram: Any = None                  # (V,) training-token frequencies, for p_1
  prior_kl_table: Any = None           # (V,) KL(q_1(.|x) || p_1), precomputed
  bulk_samples: int = 0                # topk + uniform NELBO: 0 exact, > 0 unbiased estimate
  parameterization: str = "mean"       # the model's reverse rate: mean | mixture (design.md §3)

  # ------------------------------------------------------------------ structure
  @property
  def structure(self):
    """The module owning candidates, integrand and posterior step for this kernel."""
    return topk if isinstance(self.table, topk.TopkTable) else markov

  @property
  def table_kind(self) -> str:
    return "none" if self.table is None else self.table.kind

  @property
  def has_mask(self) -> bool:
    return self.mask is not None

  @property
  def is_absorbing(self) -> bool:
    """The pure mask kernel (MDLM): revealed tokens never change again."""
    return self.has_mask and self.sem is None and self.glob is None

  @property
  def mask_id(self) -> int:
    return self.vocab_size if self.has_mask else -1

  @property
  def input_vocab_size(self) -> int:
    return self.vocab_size + int(self.has_mask)

  @property
  def mean_form(self) -> bool:
    """Whether the model rate is the mean form R^ = rate q_t(y | x_hat) / q_t(z | x_hat)
    (UDLM / Duo's); else the mixture over x_hat. The two coincide for the pure mask kernel."""
    return self.parameterization == "mean" and not self.is_absorbing

  @property
  def reports_truncated(self) -> bool:
    """Whether the reported NELBO integrates t over [t_min, 1] plus a reconstruction term
    (design.md §6): for every kernel that corrupts into real tokens. There a corrupted token
    at small t has a true reverse rate ~1/t, so the integrand over (0, 1] is ~(1/t) log(1/t)
    with probability ~t: under the mean form its mean is finite but its variance is not (the
    mixture form's mean is infinite too). The pure mask kernel reports t over (0, 1], as MDLM."""
    return not self.is_absorbing

  @property
  def is_markov(self) -> bool:
    """True when the NELBO is exact (tight with a perfect denoiser), False for (B)."""
    return self.structure.EXACT_NELBO

  @property
  def nelbo_label(self) -> str:
    """What the reported NELBO is (shown in every report)."""
    if self.is_markov:
      return "continuous-time NELBO: an upper bound on -log p(x), tight for a perfect denoiser"
    label = ("NELBO of a non-Markov top-k kernel: a valid upper bound on -log p(x) that stays "
             "loose even for a perfect denoiser")
    if self.glob is not None and self.bulk_samples > 0:
      label += f"; its uniform-target sum is an unbiased estimate ({self.bulk_samples} samples)"
    return label

  # ------------------------------------------------------------------ schedules
  def coefficients(self, t):
    """(A, B, C, kappa) at times t (any shape)."""
    a_sem, a_glob, kappa = _alpha(self.sem, t), _alpha(self.glob, t), _alpha(self.mask, t)
    # 1 - alpha from the schedules: as `1.0 - a_glob` C is 0 in float32 for t < 1.7e-4
    # (SemDLM+'s global schedule) and the uniform part would drop out of loss and gradient.
    return (a_sem * a_glob, _one_minus_alpha(self.sem, t) * a_glob,
            _one_minus_alpha(self.glob, t), kappa)

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

  def jump_in_coefficients(self, t):
    """(B) kernels: g_t^x = g_sem N_x + g_glob u + g_mask delta_m (docs/design.md §4), >= 0."""
    s_sem, s_glob, s_mask = self.rates(t)
    a_glob, kappa = _alpha(self.glob, t), _alpha(self.mask, t)
    g_sem = s_sem * a_glob * kappa
    g_glob = (s_sem * (1.0 - a_glob) + s_glob) * kappa
    g_mask = s_mask + (1.0 - kappa) * (s_sem + s_glob)
    return g_sem, g_glob, g_mask

  def real_marginal(self, A, B, C, is_x, n_xz):
    """q~(z | x) = A [z = x] + B N_x(z) + C / V, the real-token part of the marginal."""
    return A * is_x + B * n_xz + C / self.vocab_size

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
    if self.has_mask:
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
    return jnp.pad(real, (0, n - V)).at[self.mask_id].set(1.0 - kappa) if self.has_mask else real

  def sample_prior(self, key, shape):
    return jax.random.categorical(key, jnp.log(self.prior_probs()), shape=shape)

  def prior_kl(self, x):
    """KL(q_1(. | x) || p_1) per token, from the precomputed (V,) table."""
    return self.prior_kl_table[x]


def _prior_kl_table(kernel: Kernel, chunk: int = 256) -> np.ndarray:
  """KL(q_1(.|x) || p_1) for every x, by dense rows in chunks (numpy, once per run)."""
  V = kernel.vocab_size
  p1 = np.asarray(kernel.prior_probs(), np.float64)
  A, B, C, kappa = [float(c) for c in kernel.coefficients(jnp.asarray(1.0))]
  out = np.zeros((V,), np.float64)
  table = kernel.table
  ids = None if table is None else np.asarray(table.ids)
  w = None if table is None else np.asarray(table.weights, np.float64)
  log_p1 = np.log(np.maximum(p1, 1e-300))
  for start in range(0, V, chunk):
    xs = np.arange(start, min(start + chunk, V))
    q = np.zeros((len(xs), len(p1)))
    q[np.arange(len(xs)), xs] += kappa * A
    if ids is not None and B > 0:
      valid = ids[xs] >= 0
      rows = np.repeat(np.arange(len(xs)), ids.shape[1])
      np.add.at(q, (rows[valid.ravel()], ids[xs].ravel()[valid.ravel()]),
                kappa * B * w[xs].ravel()[valid.ravel()])
    q[:, :V] += kappa * C / V
    if kernel.has_mask:
      q[:, kernel.mask_id] += 1.0 - kappa
    logq = np.log(np.where(q > 0, q, 1.0))
    out[xs] = np.sum(np.where(q > 0, q * (logq - log_p1), 0.0), 1)
  return out.astype(np.float32)


def _components(kernel_cfg) -> dict:
  main = schedules.make_schedule(kernel_cfg.schedule, kernel_cfg.eps, kernel_cfg.power,
                                 "kernel.schedule")
  if kernel_cfg.name == "semdlm_plus":
    if kernel_cfg.global_kind not in GLOBAL_KINDS:
      raise UserError(f"kernel.global_kind must be one of {list(GLOBAL_KINDS)}, got "
                      f"{kernel_cfg.global_kind!r}")
    glob = schedules.make_schedule(kernel_cfg.global_schedule, kernel_cfg.global_eps,
                                   kernel_cfg.global_power, "kernel.global_schedule")
    return {"sem": main, "glob" if kernel_cfg.global_kind == "uniform" else "mask": glob}
  return {"masking": {"mask": main}, "uniform": {"glob": main},
          "semdlm": {"sem": main}}[kernel_cfg.name]


def needs_unigram(kernel_cfg) -> bool:
  """Whether p_1 depends on the training unigram in a way that matters: not for masking,
  whose p_1 is the mask up to the eps = alpha(1) of clean tokens (there the real-token part
  is uniform, so building the kernel needs no corpus; the bound stays a bound)."""
  return kernel_cfg.name != "masking"


def make_kernel(kernel_cfg, vocab_size: int, table=None, unigram=None) -> Kernel:
  """Builds the kernel named by `config.kernel` for a tokenizer of `vocab_size` ids.

  `table` (a neighbors.NeighborTable) is required by the semantic kernels; `unigram` (V,)
  defines p_1 (default: uniform).
  """
  name = kernel_cfg.name
  if name not in KERNELS:
    raise UserError(f"unknown kernel {name!r}; expected one of {list(KERNELS)}")
  comps = _components(kernel_cfg)
  unigram = (np.full((vocab_size,), 1.0 / vocab_size) if unigram is None
             else np.asarray(unigram, np.float64) / np.sum(unigram))
  device_table = None
  if "sem" in comps:
    if table is None:
      raise UserError(f"kernel {name!r} needs a neighbour table (kernel.neighbors)")
    if table.vocab_size != vocab_size:
      raise UserError(f"neighbour table has V={table.vocab_size}, the tokenizer {vocab_size}")
    device_table = TABLES[table.kind].from_numpy(table)
  parameterization = kernel_cfg.get("parameterization", "mean")
  if parameterization not in PARAMETERIZATIONS:
    raise UserError(f"kernel.parameterization must be one of {list(PARAMETERIZATIONS)}, got "
                    f"{parameterization!r}")
  kernel = Kernel(name=name, vocab_size=vocab_size, table=device_table,
                  unigram=jnp.asarray(unigram), parameterization=parameterization,
                  bulk_samples=int(kernel_cfg.get("bulk_samples", 0)), **comps)
  return dataclasses.replace(kernel, prior_kl_table=jnp.asarray(_prior_kl_table(kernel)))
