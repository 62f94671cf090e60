"""Unmasking-size laws for the masking kernel: how many masked positions a step reveals.

- `ancestral`: the exact reverse step: each masked position is revealed independently with
  probability (alpha_s - alpha_t) / (1 - alpha_t), so step sizes are binomial.
- `fixed`: deterministic sizes. After step k exactly round(M F(s_k)) of the M initially
  masked positions are revealed, F(tau) = (alpha_tau - alpha_1) / (1 - alpha_1) the share
  the schedule has revealed by time tau (equal sizes M / K for the log-linear schedule).
- `random`: randomized sizes, this project's own law. *Adaptation to Intrinsic Dependence in
  Diffusion Language Models* (Zhao, Cai; arXiv 2602.20126) randomizes the sizes too and
  proves KL rates O~(TC/K) and O~(DTC/K) for "two specific parameter choices"; what is public
  to us is its abstract, which does not give them, so their law is not implemented here and
  this one must not be cited as theirs: (n_1, ..., n_K) is a uniformly random composition of M into K
  nonnegative parts, drawn step by step: with r positions left and m steps to go,
  P(n) = C(r - n + m - 2, m - 2) / C(r + m - 1, m - 1). The mean size is r / m, as in
  `fixed` with the log-linear schedule, and the law is Markov in the count (so the schedule
  lab can compute its output distribution exactly).

Which positions are revealed is a uniformly random order (a random priority per position,
fixed for the whole loop); the tokens come from the denoiser as in every step.

Ordered laws (heuristics, not exact samplers of the model): each step draws a token for every
masked position, then reveals the most confident ones, with step sizes from `fixed`:
- `confidence`: the probability of the drawn token (LLaDA's low-confidence remasking);
- `margin`: top-1 minus top-2 probability (Dream's `topk_margin`, MaskGIT-plus);
- `entropy`: minus the entropy of the position's distribution (Dream's `entropy`);
- `threshold`: every masked position whose drawn token's probability is at least
  `threshold`, and at least the most confident one (Fast-dLLM's parallel decoding): sizes
  follow the model's confidence, so it usually needs far fewer than `steps` network calls.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

RANDOM_ORDER_LAWS = ("ancestral", "fixed", "random")
ORDERED_LAWS = ("confidence", "margin", "entropy", "threshold")
LAWS = RANDOM_ORDER_LAWS + ORDERED_LAWS


@dataclasses.dataclass(frozen=True)
class Plan:
  rank: jax.Array         # (B, L) reveal order among the masked positions (others: >= M)
  revealed: jax.Array     # (B, K) how many are revealed after step k

  def reveal(self, step):
    """(B, L) True where a position is revealed by the end of step `step`."""
    return self.rank < self.revealed[:, step][:, None]


def share_revealed(kernel, tau):
  """F(tau): the share of masked positions the schedule has revealed by time tau."""
  a1 = kernel.alpha(jnp.asarray(1.0, tau.dtype))
  return (kernel.alpha(tau) - a1) / (1.0 - a1)


def plan(law: str, key, kernel, times, masked) -> Plan:
  """The reveal plan of `law` for the (B, L) `masked` positions over the grid `times` (K + 1
  points from 1 to 0)."""
  batch = masked.shape[0]
  k_order, k_cuts = jax.random.split(key)
  priority = jnp.where(masked, jax.random.uniform(k_order, masked.shape), 2.0)
  rank = jnp.argsort(jnp.argsort(priority, -1), -1)
  total = masked.sum(-1, keepdims=True).astype(times.dtype)
  steps = times.shape[0] - 1
  if law in ("fixed",) + ORDERED_LAWS:
    tau = jnp.broadcast_to(times[1:], (batch, steps))
    revealed = jnp.round(total * share_revealed(kernel, tau)).astype(jnp.int32)
    revealed = revealed.at[:, -1].set(total[:, 0].astype(jnp.int32))
  elif law == "random":
    revealed = random_composition(k_cuts, total[:, 0].astype(jnp.int32), steps,
                                  masked.shape[1])
  else:
    raise ValueError(f"no plan for law {law!r}")
  return Plan(rank=rank, revealed=revealed)


def composition_log_probs(left, steps_to_go, max_size: int):
  """log P(n | r = left, m = steps_to_go) of a uniform composition, for n = 0..max_size."""
  n = jnp.arange(max_size + 1)
  r, m = left[..., None].astype(jnp.float32), steps_to_go[..., None].astype(jnp.float32)
  log_binom = lambda a, b: (jax.scipy.special.gammaln(a + 1) - jax.scipy.special.gammaln(b + 1)
                            - jax.scipy.special.gammaln(a - b + 1))
  logp = log_binom(r - n + m - 2, m - 2) - log_binom(r + m - 1, m - 1)
  last = jnp.where(n == r, 0.0, -jnp.inf)                       # m = 1: reveal all that is left
  return jnp.where(n > r, -jnp.inf, jnp.where(m == 1, last, logp))


def random_composition(key, total, steps: int, max_size: int):
  """(B, K) cumulative counts of uniformly random compositions of `total` (B,) into K parts."""
  def body(left, k):
    logp = composition_log_probs(left, jnp.full_like(left, steps - k), max_size)
    n = jax.random.categorical(jax.random.fold_in(key, k), logp)
    return left - n, left - n
  _, left_after = jax.lax.scan(body, total, jnp.arange(steps))
  return (total[None, :] - left_after).T.astype(jnp.int32)


def confidence_scores(law: str, scores, x):
  """(B, L) confidence of each position's drawn token x under softmax(scores) (B, L, V):
  higher is revealed first."""
  logp = jax.nn.log_softmax(scores.astype(jnp.float32), -1)
  if law in ("confidence", "threshold"):
    return jnp.exp(jnp.take_along_axis(logp, x[..., None], -1)[..., 0])
  if law == "margin":
    top2 = jax.lax.top_k(logp, 2)[0]
    return jnp.exp(top2[..., 0]) - jnp.exp(top2[..., 1])
  if law == "entropy":
    p = jnp.exp(logp)
    return jnp.sum(jnp.where(p > 0, p * logp, 0.0), -1)
  raise ValueError(f"no confidence score for law {law!r}")


def most_confident(confidence, masked, count):
  """(B, L) True at the `count` (B,) most confident masked positions of each row."""
  score = jnp.where(masked, confidence, -jnp.inf)
  rank = jnp.argsort(jnp.argsort(-score, -1, stable=True), -1, stable=True)
  return masked & (rank < count[:, None])


def ordered_reveal(law: str, confidence, masked, target_revealed, initially_masked,
                   threshold: float, last_step):
  """(B, L) positions an ordered law reveals this step. `target_revealed` (B,): how many of
  the `initially_masked` (B,) positions the `fixed` sizes have revealed after this step."""
  if law == "threshold":
    sure = masked & (confidence >= threshold)
    best = most_confident(confidence, masked, jnp.ones(masked.shape[:1], jnp.int32))
    return jnp.where(last_step, masked, sure | best)
  count = target_revealed - (initially_masked - masked.sum(-1))
  return most_confident(confidence, masked, jnp.maximum(count, 0))
