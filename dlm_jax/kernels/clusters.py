"""The Markov members of the family: masking, uniform and the partition (A) tables
(docs/design.md §2, §3, §5).

With N_y uniform over y's cluster c(y) of n(y) tokens (self included), N is idempotent and
the forward process is a CTMC in z with rates r_t(y -> z) = s_sem' N_y(z) + s_glob' / V
+ s_mask' [z = m]. Masking and uniform are the table-free members (every token its own
cluster). This module holds what they share: the device table, the candidate set C(z), the
evidence tilt, the exact posterior step (`MarkovProcess`) and the log-space pieces of their
losses (each loss lives in its member's module).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dlm_jax.kernels import logspace
from dlm_jax.kernels.process import Process


class PartitionTable(struct.PyTreeNode):
  """Device arrays of a partition table. ids/weights: (V, k) rows of N (the cluster)."""
  ids: Any
  weights: Any
  cluster: Any          # (V,) cluster id
  members: Any          # (n_clusters, k_max) ids, -1 padded
  size: Any             # (V,) n(y) = |c(y)|, float32
  kind = "partition"

  @classmethod
  def from_numpy(cls, table) -> "PartitionTable":
    """From a `neighbors.NeighborTable` of kind partition: a row of N lists y's cluster."""
    cluster = np.asarray(table.cluster)
    first = np.zeros(cluster.max() + 1, np.int64)
    first[cluster[::-1]] = np.arange(len(cluster))[::-1]       # one member per cluster
    members = np.asarray(table.ids)[first]
    return cls(ids=jnp.asarray(table.ids), weights=jnp.asarray(table.weights),
               cluster=jnp.asarray(cluster), members=jnp.asarray(members),
               size=jnp.asarray(np.bincount(cluster)[cluster], jnp.float32))


def e3(c):
  return jnp.reshape(c, (-1, 1, 1))


class MarkovProcess(Process):
  """A Markov member: candidates, evidence and the exact posterior step from the clusters."""

  def grouping(self, y):
    """(c(y), n(y)) per token; without a table every token is its own cluster."""
    if self.table is None:
      return y, jnp.ones(y.shape, jnp.float32)
    return self.table.cluster[y], self.table.size[y]

  def same_group(self, a):
    """[c(a) = c(y)] for every y of the vocabulary: (..., V) for a: (...)."""
    return self.grouping(jnp.arange(self.vocab_size))[0] == self.grouping(a)[0][..., None]

  def neighbour_weight(self, x, z):
    """N_x(z) elementwise (0 without a table)."""
    if self.table is None:
      return jnp.zeros(x.shape, jnp.float32)
    cx, n = self.grouping(x)
    return (cx == self.grouping(z)[0]) / n

  def rows(self):
    """The clusters as rows, numbered as `grouping` numbers them: (ids (R, K) -1 padded, row
    sizes (R,)). Without a table every token is a row of one."""
    if self.table is None:
      return jnp.arange(self.vocab_size)[:, None], jnp.ones((self.vocab_size,), jnp.float32)
    members = self.table.members
    return members, jnp.sum(members >= 0, -1).astype(jnp.float32)

  def candidates(self, z, t):
    _, B, C, _ = self.coefficients(t)
    masked = z == self.mask_id
    zr = jnp.where(masked, 0, z)
    cand = (jnp.arange(self.vocab_size) == zr[..., None]) | (e3(C) > 0) | masked[..., None]
    if self.table is not None:
      cand |= (e3(B) > 0) & self.same_group(zr)
    return cand

  def log_evidence(self, z, t):
    A, B, C, _ = self.coefficients(t)
    masked = z == self.mask_id
    zr = jnp.where(masked, 0, z)
    q = self.real_marginal(e3(A), e3(B), e3(C), jnp.arange(self.vocab_size) == zr[..., None],
                           self.same_group(zr) / self.grouping(zr)[1][..., None])
    return jnp.where(masked[..., None], 0.0, logspace.log(q))

  def log_mixture(self, A, B, C, log_v, size):
    """log [A v(y) + B/n(y) sum_{c(y)} v + C/V sum_all v] for all y, from log v (B, L, V)."""
    V = self.vocab_size
    parts = [e3(logspace.log(A)) + log_v,
             e3(logspace.log(C)) - jnp.log(V) + jax.nn.logsumexp(log_v, -1, keepdims=True)]
    if self.table is not None:
      parts.append(e3(logspace.log(B)) - jnp.log(size)
                   + cluster_logsumexp(self.table.cluster, self.table.members, log_v))
    return logspace.logsumexp_stack(parts)

  def posterior_sample(self, key, z, x, t, s):
    """q(z_t | z_s) has the marginal's closed form with rate increments s_c(t) - s_c(s)
    (A1, B1, C1 below). For real z_t the posterior over real z_s is the mixture
    A1 q~_s(z|x) [z_s = z] + B1/n q~_s(z_s|x) [c(z_s) = c(z)] + C1/V q~_s(z_s|x); for
    z_t = m it keeps the mask w.p. (1 - kappa_s) / (1 - kappa_t), else draws z_s ~ q~_s(.|x).
    """
    V = self.vocab_size
    As, Bs, Cs, _ = self.coefficients(s)
    a_sem, a_glob = self.component_alpha_ratio(t, s)
    A1, B1, C1 = a_sem * a_glob, (1.0 - a_sem) * a_glob, 1.0 - a_glob
    k_fresh, k_mix, k_in, k_member, k_stay = jax.random.split(key, 5)
    fresh = self.sample_real(k_fresh, x, s)                       # ~ q~_s(. | x)
    masked = z == self.mask_id
    zr = jnp.where(masked, 0, z)
    q_z = self.real_marginal(As, Bs, Cs, zr == x, self.neighbour_weight(x, zr))
    if self.table is not None:
      table = self.table
      same = table.cluster[zr] == table.cluster[x]
      n = table.size[zr]
      w2 = B1 / n * ((As + Bs) * same + Cs * n / V)                  # B1/n q~_s(c(z) | x)
      # z_s ~ q~_s(. | x) restricted to c(z): x itself (A_s), else uniform over the cluster.
      point_x = As * same
      spread = Bs * same + Cs * n / V
      slot = jnp.floor(jax.random.uniform(k_member, z.shape) * n).astype(jnp.int32)
      member = table.members[table.cluster[zr], jnp.minimum(slot, table.members.shape[1] - 1)]
      in_cluster = jnp.where(jax.random.uniform(k_in, z.shape) * (point_x + spread) < point_x,
                             x, member)
    else:
      w2, in_cluster = 0.0, zr
    w1, w3 = A1 * q_z, C1 / V
    u = jax.random.uniform(k_mix, z.shape) * (w1 + w2 + w3)
    y = jnp.where(u < w1, zr, jnp.where(u < w1 + w2, in_cluster, fresh))
    if self.has_mask_token:
      # 1 - kappa from the schedule: by subtraction it is 0 at small t in float32.
      stay = (jax.random.uniform(k_stay, z.shape) * self.one_minus_kappa(t)
              < self.one_minus_kappa(s))
      y = jnp.where(masked, jnp.where(stay, self.mask_id, fresh), y)
    return y


# ---------------------------------------------------------------------------- log-space pieces
def member_grid(members, v, fill):
  """v (..., V) laid out on the (n_clusters, k_max) member grid; padding slots = fill."""
  flat = v.reshape(-1, v.shape[-1])      # 2-D: XLA:CPU gathers a 3-D minor axis ~8x slower
  valid = members >= 0
  # Clipped ids and a select, not a padding column: concatenating one copies all of v, and
  # XLA:CPU fuses that copy into the gather's reduction at ~4x the cost.
  grid = jnp.take(flat, jnp.where(valid, members, 0).reshape(-1), axis=-1)
  grid = jnp.where(valid.reshape(-1), grid, jnp.asarray(fill, v.dtype))
  return grid.reshape(v.shape[:-1] + valid.shape)


def _per_member(cluster, per_cluster):
  """(..., n_clusters) -> (..., V): each y gets its cluster's value."""
  flat = per_cluster.reshape(-1, per_cluster.shape[-1])
  return jnp.take(flat, cluster, axis=-1).reshape(per_cluster.shape[:-1] + (-1,))


def _cluster_sum(cluster, members, g):
  """For every y, sum_{y' in c(y)} g(y'): two gathers, no scatter."""
  return _per_member(cluster, member_grid(members, g, 0.0).sum(-1))


@jax.custom_vjp
def cluster_logsumexp(cluster, members, log_v):
  """For every y, log sum_{y' in c(y)} exp(log_v(y')). log_v: (B, L, V)."""
  return _per_member(cluster, jax.nn.logsumexp(member_grid(members, log_v, logspace.NEG), -1))


def _cluster_logsumexp_fwd(cluster, members, log_v):
  out = cluster_logsumexp(cluster, members, log_v)
  return out, (cluster, members, log_v, out)


def _cluster_logsumexp_bwd(residuals, g):
  # d out(y) / d log_v(y') = exp(log_v(y') - out(y')) for y' in c(y); summed over the y of
  # the cluster. Written out so that the backward pass is gathers (autodiff of the forward
  # gathers would scatter-add over (B, L, V), slow on every backend).
  cluster, members, log_v, out = residuals
  weight = jnp.where(log_v > logspace.NEG / 2, jnp.exp(log_v - out), 0.0)
  return None, None, weight * _cluster_sum(cluster, members, g)


cluster_logsumexp.defvjp(_cluster_logsumexp_fwd, _cluster_logsumexp_bwd)


def kl_term(positive, rho, log_rho, log_rho_hat):
  """rho^ - rho + rho log(rho / rho^) = rho (e^d - 1 - d), d = log(rho^ / rho), where rho > 0
  (its three terms cancel to O(rho d^2): summed directly they lose ~log(rho) digits), else
  rho^."""
  d = jnp.where(positive, log_rho_hat - log_rho, 0.0)
  small = jnp.abs(d) < 1e-3
  series = d * d * (0.5 + d * (1.0 / 6.0 + d * (1.0 / 24.0 + d / 120.0)))
  gap = jnp.where(small, series, jnp.expm1(jnp.where(small, 1.0, d)) - d)
  return jnp.where(positive, rho * gap, jnp.exp(log_rho_hat))


def log_source_weights(process, log_x_hat, q_z, candidate, axes):
  """log w(x') over the candidates, the weights that make rho^ = A w + B/n W_c + C/V W:
  the mixture form's w = x_hat(x') / q~(z | x'), or the mean form's w = x_hat(x') /
  q~(z | x_hat) with q~(z | x_hat) = sum_x' x_hat(x') q~(z | x') (design.md §3)."""
  log_q_z = logspace.log(q_z)
  if process.mean_form:
    log_q_z = jax.nn.logsumexp(jnp.where(candidate, log_x_hat + log_q_z, logspace.NEG), axes,
                               keepdims=True)
  return jnp.where(candidate, log_x_hat - log_q_z, logspace.NEG)
