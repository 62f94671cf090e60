"""NELBO math against exact references on tiny vocabularies (DESIGN.md §3)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax import elbo
from dlm_jax.kernels import schedules
from dlm_jax.kernels.interpolating import MaskingKernel



@pytest.fixture(autouse=True, scope="module")
def float64():
  """The toy checks compare to 1e-6: run this module in float64 only."""
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", False)


def _kernel(V, schedule="loglinear", eps=0.0):
  return MaskingKernel(vocab_size=V, schedule=schedules.make_schedule(schedule, eps))


@pytest.mark.parametrize("t", [0.05, 0.4, 0.93])
def test_masking_integrand_matches_dense_reference(t):
  V = 7
  kernel = _kernel(V, eps=1e-3)
  rng = np.random.default_rng(0)
  for x in range(V):
    logits = rng.normal(size=(V,))
    x_hat = jax.nn.softmax(logits)
    for z in (x, kernel.mask_id):
      dense = elbo.dense_integrand(kernel, x_hat, x, z, t)
      prod = elbo.masking_integrand(kernel, jnp.asarray(logits)[None, None], jnp.array([[x]]),
                                    jnp.array([[z]]), jnp.array([t]))[0, 0]
      np.testing.assert_allclose(prod, dense, rtol=1e-6, atol=1e-9)


def test_dense_rates_generate_the_marginal():
  """d/dt q_t(.|x) = q_t(.|x) R_t: the rates and the closed-form marginal agree."""
  kernel = _kernel(5, "cosine", eps=0.0)
  x = jnp.arange(5)
  for t in (0.1, 0.5, 0.8):
    h = 1e-6
    dq = (kernel.marginal(x, t + h) - kernel.marginal(x, t - h)) / (2 * h)
    np.testing.assert_allclose(dq, kernel.marginal(x, t) @ kernel.rates(t), atol=1e-7)


def _toy_joint(V, seed=0):
  p = np.random.default_rng(seed).dirichlet(np.ones(V * V) * 0.5).reshape(V, V)
  return p


def _bayes_logits(p, z, mask_id):
  """log p(x_i | observed positions of z) for both positions of an L = 2 toy."""
  V = p.shape[0]
  post = p.copy()
  if z[0] != mask_id:
    post = post * (np.arange(V) == z[0])[:, None]
  if z[1] != mask_id:
    post = post * (np.arange(V) == z[1])[None, :]
  post = post / post.sum()
  with np.errstate(divide="ignore"):
    return np.log(np.stack([post.sum(1), post.sum(0)]))


def _toy_nelbo(kernel, p, x, n_quad=64):
  """E_t E_z [integrand] + prior KL by Gauss-Legendre in t and enumeration of z (L = 2)."""
  nodes, weights = np.polynomial.legendre.leggauss(n_quad)
  ts, ws = 0.5 * (nodes + 1), 0.5 * weights
  m = kernel.mask_id
  total = 0.0
  for t, w in zip(ts, ws):
    a = float(kernel.alpha(t))
    for z in itertools.product(*[(xi, m) for xi in x]):
      prob = np.prod([a if zi != m else 1 - a for zi in z])
      logits = jnp.asarray(_bayes_logits(p, z, m))[None]
      integrand = elbo.masking_integrand(kernel, logits, jnp.array([x]), jnp.array([z]),
                                         jnp.array([t]))
      total += w * prob * float(integrand.sum())
  return total + float(elbo.prior_kl(kernel, jnp.array([x])).sum())


@pytest.mark.parametrize("schedule", ["loglinear", "cosine"])
def test_bayes_optimal_nelbo_equals_nll(schedule):
  """With the exact posterior as denoiser the masking NELBO is tight: == -log p(x)."""
  V = 4
  p = _toy_joint(V)
  kernel = _kernel(V, schedule, eps=0.0)
  for x in [(0, 1), (2, 2), (3, 0)]:
    np.testing.assert_allclose(_toy_nelbo(kernel, p, x), -np.log(p[x]), rtol=1e-6)


def test_nelbo_is_a_bound_with_eps():
  """alpha_1 = eps > 0: p_1 puts eps on uniform tokens, so the model p_theta != p and only
  the expected bound holds: E_p[NELBO] >= H(p), with a small gap."""
  V = 3
  p = _toy_joint(V, seed=1)
  kernel = _kernel(V, "loglinear", eps=1e-2)
  xs = list(itertools.product(range(V), range(V)))
  expected_nelbo = sum(p[x] * _toy_nelbo(kernel, p, x, n_quad=24) for x in xs)
  entropy = -sum(p[x] * np.log(p[x]) for x in xs)
  assert 0 < expected_nelbo - entropy < 0.05


def test_mdlm_closed_form_and_prior():
  V = 11
  kernel = _kernel(V, "loglinear", eps=1e-3)
  logits = jax.random.normal(jax.random.key(0), (2, 5, V))
  x = jax.random.randint(jax.random.key(1), (2, 5), 0, V)
  z = jnp.where(jnp.arange(5) % 2 == 0, kernel.mask_id, x)
  t = jnp.array([0.3, 0.8])
  got = elbo.masking_integrand(kernel, logits, x, z, t)
  nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), x[..., None], -1)[..., 0]
  want = jnp.where(z == kernel.mask_id, (1 - 1e-3) / ((1 - 1e-3) * t[:, None]) * nll, 0.0)
  np.testing.assert_allclose(got, want, rtol=1e-6)   # MDLM: 1/t weight for log-linear
  np.testing.assert_allclose(elbo.prior_kl(kernel, x), 1e-3 * np.log(V), rtol=1e-6)


def test_forward_sampling_frequency():
  kernel = _kernel(50, "cosine", eps=0.0)
  x = jnp.full((4, 20_000), 7)
  t = jnp.array([0.1, 0.5, 0.9, 1.0])
  z = kernel.sample_forward(jax.random.key(3), x, t)
  masked = np.asarray((z == kernel.mask_id).mean(1))
  expected = 1 - np.asarray(kernel.alpha(t))
  # binomial std <= sqrt(0.25 / 20000) = 0.0035; 5 sigma
  np.testing.assert_allclose(masked, expected, atol=0.018)
  assert set(np.unique(z).tolist()) <= {7, kernel.mask_id}


def test_ar_nll_shifts_targets():
  logits = jnp.log(jax.nn.one_hot(jnp.array([[1, 2, 0]]), 3) * 0.98 + 0.01)
  nll = elbo.ar_nll(logits, jnp.array([[0, 1, 2]]))
  np.testing.assert_allclose(nll, -np.log([[0.99 / 1.01] * 2]), rtol=1e-5)
