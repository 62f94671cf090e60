"""Schedule lab math: TC / DTC against hand-computed values, exact sampler laws."""

import math

import numpy as np
import pytest

from dlm_jax.analysis import synthetic


def _h(p):
  return -sum(v * math.log(v) for v in (p, 1 - p) if v > 0)


def test_tc_dtc_of_families_match_closed_forms():
  L = 6
  # Copy blocks of size b over V symbols: H = (L/b) log V, TC = (L - L/b) log V, DTC = H.
  p = synthetic.independent_blocks(3, L, 2, 1.0)
  assert math.isclose(synthetic.total_correlation(p), (L - L / 2) * math.log(3), rel_tol=1e-9)
  assert math.isclose(synthetic.dual_total_correlation(p), L / 2 * math.log(3), rel_tol=1e-9)
  # Parity: TC = log 2, DTC = (L - 1) log 2.
  p = synthetic.parity(L)
  assert math.isclose(synthetic.total_correlation(p), math.log(2), rel_tol=1e-9)
  assert math.isclose(synthetic.dual_total_correlation(p), (L - 1) * math.log(2), rel_tol=1e-9)
  # Binary Markov chain with flip g: H = log 2 + (L - 1) h(g); TC = (L - 1)(log 2 - h(g));
  # H(x_i | rest) = h(g) at the ends; inside, the neighbours agree w.p. a = (1-g)^2 + g^2,
  # then x_i is their value w.p. (1-g)^2 / a, else x_i is a fair coin.
  g = 0.2
  p = synthetic.markov_chain(2, L, g)
  H = math.log(2) + (L - 1) * _h(g)
  a = (1 - g) ** 2 + g**2
  inner = a * _h((1 - g) ** 2 / a) + (1 - a) * math.log(2)
  assert math.isclose(synthetic.entropy(p), H, rel_tol=1e-9)
  assert math.isclose(synthetic.total_correlation(p), (L - 1) * (math.log(2) - _h(g)),
                      rel_tol=1e-9)
  assert math.isclose(synthetic.dual_total_correlation(p), H - 2 * _h(g) - (L - 2) * inner,
                      rel_tol=1e-9)


@pytest.mark.parametrize("family", ["markov", "parity", "blocks"])
def test_one_token_at_a_time_is_exact_and_one_step_is_the_product(family):
  L = 5
  p = {"markov": synthetic.markov_chain(2, L, 0.1), "parity": synthetic.parity(L),
       "blocks": synthetic.independent_blocks(2, L - 1, 2, 0.8)}[family]
  q = synthetic.sampler_law(p, "fixed", p.ndim)               # one position per step
  assert abs(synthetic.kl(p, q)) < 1e-12
  np.testing.assert_allclose(q.sum(), 1.0, atol=1e-12)
  # One step reveals everything at once from the marginals: KL = TC exactly.
  q1 = synthetic.sampler_law(p, "ancestral", 1)
  assert math.isclose(synthetic.kl(p, q1), synthetic.total_correlation(p), rel_tol=1e-9)


def test_kl_decreases_in_k_on_a_coupled_chain():
  p = synthetic.markov_chain(2, 8, 0.1)
  for law in ("fixed", "ancestral", "random"):
    kls = [synthetic.kl(p, synthetic.sampler_law(p, law, K)) for K in range(1, 9)]
    assert all(b < a for a, b in zip(kls, kls[1:])), (law, kls)
    assert all(abs(synthetic.sampler_law(p, law, K).sum() - 1) < 1e-9 for K in (2, 5))
  assert synthetic.kl(p, synthetic.sampler_law(p, "fixed", 8)) < 1e-12
