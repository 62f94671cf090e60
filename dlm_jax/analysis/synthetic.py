"""Synthetic sequence distributions with exact conditionals, and the exact output law of the
masking sampler driven by the oracle denoiser (the setting of work on distribution-agnostic unmasking schedules;
docs/design.md §6).

A distribution is a dense array p of shape (V,) * L (small V, L). Its dependence is
summarised by
  TC(p)  = sum_i H(x_i) - H(x)                    (total correlation)
  DTC(p) = H(x) - sum_i H(x_i | x_{-i})           (dual total correlation)
both in nats. The oracle denoiser returns the exact conditionals p(x_i | x_R) of the
revealed set R. A masking sampler with K steps reveals, at step k, a uniformly random set
of n_k masked positions, each drawn independently from the oracle given x_R; the law of the
sizes is the unmasking law (`dlm_jax.samplers.unmasking`): `ancestral` (each masked position
independently w.p. 1 / (K - k), the log-linear schedule), `fixed` (n_k from the grid) or
`random` (a uniform random composition). `sampler_law` computes the sampler's output
distribution q exactly by dynamic programming over revealed sets, so KL(p || q) is exact.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.special import gammaln

# ----------------------------------------------------------------------------- families


def independent_blocks(V: int, L: int, block: int, copy: float) -> np.ndarray:
  """Blocks of `block` positions, independent of each other. In a block the first token is
  uniform and every other one equals it w.p. `copy`, else is uniform."""
  if L % block:
    raise ValueError(f"block {block} must divide L = {L}")
  one = np.zeros((V,) * block)
  for xs in itertools.product(range(V), repeat=block):
    prob = 1.0 / V
    for x in xs[1:]:
      prob *= copy * (x == xs[0]) + (1 - copy) / V
    one[xs] = prob
  p = one
  for _ in range(L // block - 1):
    p = np.multiply.outer(p, one)
  return p


def markov_chain(V: int, L: int, flip: float) -> np.ndarray:
  """x_1 uniform; x_{i+1} = x_i w.p. 1 - flip, else uniform over the other V - 1 values."""
  trans = (1 - flip) * np.eye(V) + flip * (1 - np.eye(V)) / (V - 1)
  p = np.full((V,), 1.0 / V)
  for _ in range(L - 1):
    p = p[..., None] * trans[(None,) * (p.ndim - 1)]
  return p


def parity(L: int) -> np.ndarray:
  """Binary x_1..x_{L-1} uniform and x_L their parity."""
  p = np.zeros((2,) * L)
  for xs in itertools.product(range(2), repeat=L - 1):
    p[xs + (sum(xs) % 2,)] = 2.0 ** -(L - 1)
  return p


# ----------------------------------------------------------------------------- information


def entropy(p) -> float:
  p = np.asarray(p).ravel()
  p = p[p > 0]
  return float(-(p * np.log(p)).sum())


def total_correlation(p) -> float:
  L = p.ndim
  marginals = [p.sum(axis=tuple(j for j in range(L) if j != i)) for i in range(L)]
  return sum(entropy(m) for m in marginals) - entropy(p)


def dual_total_correlation(p) -> float:
  L = p.ndim
  conditional = 0.0
  for i in range(L):
    rest = p.sum(axis=i, keepdims=True)                     # p(x_{-i})
    cond = np.where(p > 0, p / np.where(rest > 0, rest, 1.0), 1.0)
    conditional += float(-(p * np.log(cond)).sum())         # H(x_i | x_{-i})
  return entropy(p) - conditional


def kl(p, q) -> float:
  p, q = np.asarray(p).ravel(), np.asarray(q).ravel()
  live = p > 0
  return float((p[live] * (np.log(p[live]) - np.log(np.maximum(q[live], 1e-300)))).sum())


# ----------------------------------------------------------------------------- the sampler


def size_law(law: str, K: int, L: int):
  """law(k, r) -> (L + 1,) probabilities of revealing n of the r masked positions at step k."""
  if law == "fixed":
    cum = np.round(L * (1.0 - np.linspace(1.0, 0.0, K + 1)[1:])).astype(int)
    cum[-1] = L
    sizes = np.diff(cum, prepend=0)
    return lambda k, r: np.eye(L + 1)[sizes[k]]
  if law == "ancestral":
    def binomial(k, r):
      q = 1.0 / (K - k)
      n = np.arange(L + 1)
      out = np.zeros(L + 1)
      out[: r + 1] = [math.comb(r, j) * q**j * (1 - q) ** (r - j) for j in range(r + 1)]
      return out * (n <= r)
    return binomial
  if law == "random":
    def composition(k, r):
      m = K - k
      out = np.zeros(L + 1)
      if m == 1:
        out[r] = 1.0
        return out
      lb = lambda a, b: gammaln(a + 1) - gammaln(b + 1) - gammaln(a - b + 1)
      n = np.arange(r + 1)
      out[: r + 1] = np.exp(lb(r - n + m - 2, m - 2) - lb(r + m - 1, m - 1))
      return out
    return composition
  raise ValueError(f"unknown law {law!r}")


def _marginal_over(p, subset_mask, L):
  """p(x_R) broadcast back to the full shape (R given as a bitmask)."""
  drop = tuple(i for i in range(L) if not subset_mask >> i & 1)
  return p.sum(axis=drop, keepdims=True) if drop else p


def sampler_law(p, law: str, K: int) -> np.ndarray:
  """The exact output distribution of the K-step masking sampler with the oracle denoiser."""
  L = p.ndim
  sizes = size_law(law, K, L)
  full = (1 << L) - 1
  marg = [np.broadcast_to(_marginal_over(p, R, L), p.shape) for R in range(full + 1)]
  safe = [np.where(m > 0, m, 1.0) for m in marg]
  popcount = [bin(R).count("1") for R in range(full + 1)]
  f = {0: np.ones(p.shape)}
  for k in range(K):
    nxt: dict[int, np.ndarray] = {}
    for R, mass in f.items():
      r = L - popcount[R]
      law_k = sizes(k, r)
      free = full & ~R
      D = free
      while True:                                         # every subset D of the free positions
        n = popcount[D]
        if law_k[n] > 0:
          weight = law_k[n] / math.comb(r, n)
          term = mass * weight
          for i in range(L):
            if D >> i & 1:
              term = term * (marg[R | 1 << i] / safe[R])   # p(x_i | x_R), independently
          nxt[R | D] = nxt.get(R | D, 0.0) + term
        if D == 0:
          break
        D = (D - 1) & free
    f = nxt
  return np.asarray(f[full])
