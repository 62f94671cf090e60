"""NELBO math against exact references on tiny vocabularies (docs/design.md §3, §4)."""

import itertools

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

from dlm_jax import elbo
from dlm_jax.kernels import family, reference
from tests.conftest import kernel_config, toy_kernels

MARKOV = ["masking", "uniform", "semdlm_A", "semdlm_plus_uniform_A", "semdlm_plus_mask_A"]
TOPK = ["semdlm_B", "semdlm_plus_uniform_B", "semdlm_plus_mask_B"]


_COMPILED = {}


def compiled(kernel, fn):
  """fn(kernel, *arrays) compiled once per kernel: op-by-op these toys take seconds each."""
  key = (id(kernel), fn)
  if key not in _COMPILED:
    _COMPILED[key] = jax.jit(lambda *a: fn(kernel, *a))
  return _COMPILED[key]


def _sample_forward(kernel, key, x, t):
  return kernel.sample_forward(key, x, t)


def _prior_kl(kernel, x):
  return kernel.prior_kl(x)


def _dense_integrand(kernel, logits, x, z, t):
  return jax.vmap(lambda lg, xi, zi: reference.integrand(kernel, jax.nn.softmax(lg), xi, zi, t))(
      logits, x, z)


def forward(kernel, key, x, t):
  return compiled(kernel, _sample_forward)(key, x, t)


@pytest.fixture(autouse=True, scope="module")
def float64():
  """The toy checks compare to 1e-6: run this module in float64 only."""
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", False)


FORMS = ["mean", "mixture"]


@pytest.fixture(scope="module")
def kernels(float64):
  V = 12
  unigram = np.random.default_rng(5).dirichlet(np.ones(V))
  return {form: toy_kernels(V, unigram=unigram, parameterization=form) for form in FORMS}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", MARKOV + TOPK)
def test_production_matches_dense_reference(kernels, name, form):
  """Every kernel, both parameterisations, against the O(V^2) definition of its model rate."""
  kernel = kernels[form][name]
  V = kernel.vocab_size
  rng = np.random.default_rng(1)
  for t in (0.07, 0.5, 0.93):
    x = jnp.asarray(rng.integers(0, V, size=(1, 8)))
    z = forward(kernel, jax.random.key(int(100 * t)), x, jnp.array([t]))
    logits = jnp.asarray(rng.normal(size=(1, 8, V)))
    prod = compiled(kernel, elbo.nelbo_integrand)(logits, x, z, jnp.array([t]))
    dense = compiled(kernel, _dense_integrand)(logits[0], x[0], z[0], t)
    np.testing.assert_allclose(prod[0], dense, rtol=1e-5, atol=1e-9)   # float32 sums over V
  prior_kl = compiled(kernel, _prior_kl)(jnp.arange(V))
  for x in range(V):
    np.testing.assert_allclose(prior_kl[x], reference.prior_kl(kernel, x), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", ["semdlm_A", "semdlm_plus_mask_A", "semdlm_plus_uniform_A",
                                  "uniform"])
def test_structured_integrands_equal_the_full_vocabulary_one(kernels, name, form):
  """The O(k) and one-pass paths (pure SemDLM on its cluster, SemDLM+ mask on c(x), the
  uniform jump as special set + bulk) against the general O(V) form: values and gradients,
  at t from near 0 to 1, for confident (large) logits as well."""
  kernel = kernels[form][name]
  V = kernel.vocab_size
  x = jnp.asarray(np.random.default_rng(3).integers(0, V, size=(6, 16)))
  t = jnp.array([1e-3, 0.1, 0.5, 0.9, 1.0, 0.3])
  z = forward(kernel, jax.random.key(3), x, t)
  logits = jax.random.normal(jax.random.key(4), (6, 16, V)) * jnp.array([1, 1, 1, 1, 1, 8.0])[
      :, None, None]
  value_and_grad = lambda fn: jax.jit(jax.vmap(jax.value_and_grad(
      lambda lg, x, z, t: fn(kernel, lg[None], x[None], z[None], t[None]).sum())))(logits, x, z, t)
  own = lambda process, *args: process.integrand(*args)
  (fast, d_fast), (full, d_full) = (value_and_grad(own),
                                    value_and_grad(reference.full_vocabulary_integrand))
  np.testing.assert_allclose(fast, full, rtol=2e-6)
  scale = float(np.abs(np.asarray(d_full)).max())          # float32 rounding of the largest
  np.testing.assert_allclose(d_fast, d_full, rtol=1e-4, atol=1e-6 * scale)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", MARKOV + TOPK)
def test_gradients_are_finite(kernels, name, form):
  """Both branches of every integrand are evaluated under jnp.where: no NaN may leak into the
  gradient from the branch that is not selected (seen once as a NaN train step)."""
  kernel = kernels[form][name]
  V = kernel.vocab_size
  x = jnp.asarray(np.random.default_rng(0).integers(0, V, size=(4, 16)))
  t = jnp.array([1e-3, 0.2, 0.7, 1.0])
  z = forward(kernel, jax.random.key(0), x, t)
  logits = jax.random.normal(jax.random.key(1), (4, 16, V))
  grad = jax.jit(jax.grad(
      lambda lg: elbo.nelbo_integrand(kernel, lg, x, z, t, jax.random.key(2)).sum()))(logits)
  assert np.isfinite(np.asarray(grad)).all()


@pytest.mark.parametrize("name", MARKOV + TOPK)
def test_rates_generate_the_marginal(kernels, name):
  """d/dt q_t(.|x) = q_t(.|x) G_t: (A) with the Markov generator, (B) with g^x."""
  kernel = kernels["mean"][name]
  V, n = kernel.vocab_size, kernel.input_vocab_size
  for t in (0.2, 0.6, 0.9):
    h = 1e-6
    for x in range(0, V, 3):
      dq = (reference.marginal(kernel, jnp.asarray(x), t + h) - reference.marginal(kernel, jnp.asarray(x), t - h)) / (2 * h)
      if kernel.exact_nelbo:
        gen = reference.markov_rates(kernel, t)
      else:
        g = reference.jump_in_rates(kernel, x, t)
        gen = jnp.broadcast_to(g, (n, n)) * (1 - jnp.eye(n))
        gen = gen - jnp.diag(gen.sum(1))
      np.testing.assert_allclose(dq, reference.marginal(kernel, jnp.asarray(x), t) @ gen, atol=1e-6)


def _marginals(kernel, ts):
  return jax.vmap(lambda t: reference.marginal(kernel, jnp.arange(kernel.vocab_size), t))(ts)


def _toy_nelbo(kernel, p, x, denoiser, n_quad=48):
  """L = 1: E_t E_z[integrand] + prior KL by Gauss-Legendre quadrature in t (the nodes form
  the batch) and enumeration of z (the positions). denoiser(q) -> logits (T, z, x') from the
  marginals q (T, x', z)."""
  n = kernel.input_vocab_size
  nodes, weights = np.polynomial.legendre.leggauss(n_quad)
  ts = 0.5 * (nodes + 1)
  q = np.asarray(compiled(kernel, _marginals)(jnp.asarray(ts)))
  logits = jnp.asarray(denoiser(q))
  integrand = np.asarray(compiled(kernel, elbo.nelbo_integrand)(
      logits, jnp.full((n_quad, n), x), jnp.broadcast_to(jnp.arange(n), (n_quad, n)),
      jnp.asarray(ts), jax.random.key(0)))
  reachable = q[:, x] > 0                                         # z outside supp q_t(.|x) never occurs
  per_t = np.sum(np.where(reachable, q[:, x] * integrand, 0.0), 1)
  prior_kl = compiled(kernel, _prior_kl)(jnp.asarray(x))
  return float(np.sum(0.5 * weights * per_t)) + float(prior_kl)


def optimal_denoiser(kernel, p):
  """The denoiser that makes the NELBO tight at L = 1: for the mixture form the Bayes posterior
  p(x' | z) ∝ p(x') q_t(z | x'); for the mean form the data distribution p itself, whatever z
  is (its tilt by q_t(z | x') is that posterior)."""
  def logits(q):
    if kernel.mean_form:
      return np.broadcast_to(np.log(p), (q.shape[0], q.shape[2], len(p)))
    post = p[None, :, None] * q                                   # (T, x', z): p(x') q(z|x')
    post = post / np.maximum(post.sum(1, keepdims=True), 1e-300)
    return np.log(np.maximum(post, 1e-300)).transpose(0, 2, 1)   # (T, z, x')
  return logits


def random_denoiser(seed):
  """A context-free denoiser that is a random distribution for every (t, z)."""
  def logits(q):
    return np.random.default_rng(seed).normal(size=(q.shape[0], q.shape[2], q.shape[1])) * 2
  return logits


@pytest.fixture(scope="module")
def toy(float64):
  V = 6
  p = np.random.default_rng(3).dirichlet(np.ones(V))
  return p, {form: toy_kernels(V, seed=2, eps=1e-2, unigram=p, k=2, parameterization=form)
             for form in FORMS}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", MARKOV)
def test_optimal_nelbo_is_tight_for_markov_kernels(toy, name, form):
  """Masking, uniform and every partition (A) kernel, both forms: NELBO == -log p(x) at the
  form's optimal denoiser (quadrature error)."""
  p, kernels = toy
  kernel = kernels[form][name]
  for x in range(len(p)):
    assert abs(_toy_nelbo(kernel, p, x, optimal_denoiser(kernel, p)) + np.log(p[x])) < 1e-3


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", MARKOV + TOPK)
def test_random_denoisers_give_an_upper_bound(toy, name, form):
  """For any denoiser the NELBO bounds the model's -log p_theta(x), so its mean under the data
  is at least the entropy H(p): checked for random context-free denoisers."""
  p, kernels = toy
  entropy = -np.sum(p * np.log(p))
  for seed in range(3):
    nelbo = sum(p[x] * _toy_nelbo(kernels[form][name], p, x, random_denoiser(seed))
                for x in range(len(p)))
    assert nelbo >= entropy - 1e-4, (seed, nelbo, entropy)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", TOPK)
def test_optimal_nelbo_is_a_loose_bound_for_topk_kernels(toy, name, form):
  """Overlapping top-k (B) kernels are not Markov in z: E_p[NELBO] > H(p) by a real gap."""
  p, kernels = toy
  kernel = kernels[form][name]
  nelbo = sum(p[x] * _toy_nelbo(kernel, p, x, optimal_denoiser(kernel, p)) for x in range(len(p)))
  entropy = -np.sum(p * np.log(p))
  assert nelbo - entropy > 1e-3


def test_masking_is_the_same_under_both_forms(kernels):
  """The mask kernel has one reverse rate: mean and mixture forms give the same integrand."""
  mean, mixture = kernels["mean"]["masking"], kernels["mixture"]["masking"]
  x = jnp.asarray(np.random.default_rng(0).integers(0, 12, size=(3, 16)))
  t = jnp.array([1e-3, 0.4, 0.9])
  z = forward(mean, jax.random.key(0), x, t)
  logits = jax.random.normal(jax.random.key(1), (3, 16, 12))
  np.testing.assert_allclose(elbo.nelbo_integrand(mean, logits, x, z, t),
                             elbo.nelbo_integrand(mixture, logits, x, z, t), rtol=1e-12)
  assert not mean.mean_form and mean.reported_bound == "nelbo"


def test_mdlm_closed_form():
  """The general Markov integrand on the masking kernel == MDLM: 1/t-weighted NLL on masks."""
  V = 11
  kernel = family.make_process(kernel_config("masking", eps=1e-3), V)
  logits = jax.random.normal(jax.random.key(0), (2, 5, V))
  x = jax.random.randint(jax.random.key(1), (2, 5), 0, V)
  z = jnp.where(jnp.arange(5) % 2 == 0, kernel.mask_id, x)
  t = jnp.array([0.3, 0.8])
  nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), x[..., None], -1)[..., 0]
  mdlm = jnp.where(z == kernel.mask_id, nll / t[:, None], 0.0)     # log-linear: weight 1/t
  np.testing.assert_allclose(kernel.integrand(logits, x, z, t), mdlm, rtol=1e-6)
  np.testing.assert_allclose(reference.full_vocabulary_integrand(kernel, logits, x, z, t), mdlm,
                             rtol=1e-6)
  np.testing.assert_allclose(kernel.prior_kl(x), 1e-3 * np.log(V), rtol=1e-6)


def duo_uniform_nelbo(V, one_minus_alpha, dalpha, logits, x, z):
  """UDLM / Duo's continuous-time integrand of the uniform kernel (Schiff et al. 2024, arXiv
  2412.10193; Sahoo et al. 2025, arXiv 2506.10892), our own implementation in 40-digit
  arithmetic (its terms cancel by up to 1e8 at t = 1e-7, beyond float64):
  -alpha'/(V alpha) [V/xb_i - V/xbt_i - sum_{j != i} (xb_j/xb_i) log(xbt_i xb_j / (xbt_j xb_i))]
  with xb = V alpha x + (1 - alpha), xbt the same with x_theta = softmax(logits), i = z. Terms
  with equal (logit, [j = x]) are summed once, times their count."""
  mp = mpmath.mp.clone()
  mp.dps = 40
  values, counts = np.unique(np.asarray(logits), return_counts=True)
  lse = mp.log(sum(c * mp.exp(mp.mpf(float(v))) for v, c in zip(values, counts)))
  oma = mp.mpf(one_minus_alpha)
  alpha = 1 - oma
  xbt = lambda j: V * alpha * mp.exp(mp.mpf(float(logits[j])) - lse) + oma
  xb = lambda j: V * alpha * (j == x) + oma
  others = np.flatnonzero(np.arange(V) != z)
  keys = np.stack([np.asarray(logits, np.float64)[others], others == x], axis=1)
  _, first, counts = np.unique(keys, axis=0, return_index=True, return_counts=True)
  total = sum(int(c) * xb(j) / xb(z) * mp.log(xbt(z) * xb(j) / (xbt(j) * xb(z)))
              for j, c in zip(others[first].tolist(), counts))
  return float(dalpha / (V * alpha) * (V / xb(z) - V / xbt(z) - total))


@pytest.mark.parametrize("V", [9, 412, 50258])
def test_udlm_duo_closed_form(V):
  """The uniform kernel's mean-form integrand == UDLM / Duo's closed form to 1e-9, at t from
  1e-7 to 1 - 1e-6, for flat, random and peaked denoisers (right and wrong), clean and
  corrupted z. A denoiser sure of the right token costs 1e-27 to 1e-16 nats, below what
  float64 logits resolve: there the agreement is to 1e-15 nats absolute."""
  kernel = family.make_process(kernel_config("uniform", eps=1e-3), V)
  rng = np.random.default_rng(V)
  times = [1e-7, 1e-4, 0.5, 1 - 1e-6]
  pairs = [(2, 2), (2, 5), (0, V - 1)]
  denoisers = {"flat": np.zeros(V), "peaked": np.where(np.arange(V) == 2, 30.0, 0.0),
               "peaked_elsewhere": np.where(np.arange(V) == 7, 30.0, 0.0)}
  if V < 1000:
    denoisers["random"] = rng.normal(size=V) * 2
  cases = list(itertools.product(times, pairs, denoisers))
  logits = jnp.asarray(np.stack([denoisers[d] for _, _, d in cases]))[:, None]
  x = jnp.asarray([[xz[0]] for _, xz, _ in cases])
  z = jnp.asarray([[xz[1]] for _, xz, _ in cases])
  t = jnp.asarray([c[0] for c in cases], jnp.float64)
  ours = np.asarray(jax.jit(kernel.integrand)(logits, x, z, t))[:, 0]
  for (time, (xi, zi), name), value in zip(cases, ours):
    duo = duo_uniform_nelbo(V, (1 - 1e-3) * time, -(1 - 1e-3), denoisers[name], xi, zi)
    np.testing.assert_allclose(value, duo, rtol=1e-9, atol=1e-15,
                               err_msg=f"t={time} x={xi} z={zi} {name}")


def test_mixture_form_costs_one_over_t_at_small_t():
  """The defect the mean form removes (design.md §3): with a flat denoiser and z = x the
  mixture integrand grows like (1 - x_hat(z)) / t, the mean form's stays O(1) (V = 12,
  t = 1e-4: 9167.5 vs 0.917 nats)."""
  V = 12
  values = {}
  for form in FORMS:
    kernel = family.make_process(kernel_config("uniform", eps=0.0, parameterization=form), V)
    values[form] = float(kernel.integrand(jnp.zeros((1, 1, V)), jnp.array([[3]]),
                                          jnp.array([[3]]), jnp.array([1e-4]))[0, 0])
  assert values["mean"] == pytest.approx(0.917, rel=1e-3)
  assert values["mixture"] == pytest.approx(9167.5, rel=1e-3)


@pytest.mark.parametrize("form", FORMS)
def test_topk_bulk_estimate_is_unbiased(kernels, form):
  exact_kernel = kernels[form]["semdlm_plus_uniform_B"]
  import dataclasses  # pylint: disable=g-import-not-at-top
  sampled = dataclasses.replace(exact_kernel, bulk_samples=4)
  V = exact_kernel.vocab_size
  x = jnp.arange(V)[None] % V
  t = jnp.array([0.6])
  z = jax.jit(exact_kernel.sample_forward)(jax.random.key(0), x, t)
  logits = jax.random.normal(jax.random.key(1), (1, V, V))
  exact = jax.jit(lambda: elbo.nelbo_integrand(exact_kernel, logits, x, z, t))()  # eager: 10 s
  draws = jax.jit(jax.vmap(lambda k: elbo.nelbo_integrand(sampled, logits, x, z, t, k)))(
      jax.random.split(jax.random.key(2), 1000))
  mean, sem = draws.mean(0), draws.std(0) / np.sqrt(1000)
  assert np.all(np.abs(mean - exact) < 5 * sem + 1e-9)
  assert float(draws.std(0).max()) > 0       # it really is an estimate


@pytest.mark.parametrize("name", ["semdlm_A", "semdlm_plus_mask_A", "semdlm_B",
                                  "semdlm_plus_uniform_B"])
def test_forward_sampling_matches_marginal(kernels, name):
  kernel = kernels["mean"][name]
  V, n = kernel.vocab_size, kernel.input_vocab_size
  count = 20_000
  for x in (4, 7):
    z = kernel.sample_forward(jax.random.key(x), jnp.full((2, count), x), jnp.array([0.3, 0.8]))
    for row, t in enumerate((0.3, 0.8)):
      freq = np.bincount(np.asarray(z[row]), minlength=n) / count
      # per-state binomial std <= 0.0036: 5 sigma
      np.testing.assert_allclose(freq, reference.marginal(kernel, jnp.asarray(x), t), atol=0.018)


def test_ar_nll_shifts_targets():
  logits = jnp.log(jax.nn.one_hot(jnp.array([[1, 2, 0]]), 3) * 0.98 + 0.01)
  nll = elbo.ar_nll(logits, jnp.array([[0, 1, 2]]))
  np.testing.assert_allclose(nll, -np.log([[0.99 / 1.01] * 2]), rtol=1e-5)


@pytest.mark.parametrize("name", MARKOV + TOPK)
def test_mean_form_standard_error_shrinks_like_one_over_sqrt_passes(toy, name):
  """The reported estimate (one t and z_t per row, t over [1e-3, 1], as `evaluate` reports
  every kernel but masking) has a finite variance under the mean form, so its standard error
  over batches shrinks as 1/sqrt(passes): 4x the batches halve it. The denoiser is a partly
  trained one: 0.7 x the optimum (the data distribution, at L = 1) + 0.3 x a random
  context-free one."""
  from dlm_jax import objectives  # pylint: disable=g-import-not-at-top
  p, kernels = toy
  kernel = kernels["mean"][name]
  V, n = len(p), kernel.input_vocab_size
  noise = jax.nn.softmax(jnp.asarray(random_denoiser(0)(np.zeros((1, V, n)))[0]), -1)
  table = jnp.log(0.3 * noise + 0.7 * jnp.asarray(p)[None])           # (z, x') logits
  batch = 64

  def batch_mean(key):
    k_x, k_t, k_z, k_bulk = jax.random.split(key, 4)
    x = jax.random.choice(k_x, V, (batch, 1), p=jnp.asarray(p))
    t = objectives.sample_times(k_t, batch, objectives.EVAL_T_MIN)
    z = kernel.sample_forward(k_z, x, t)
    return jnp.mean(elbo.nelbo_per_token(kernel, table[z], x, z, t, k_bulk))

  means = np.asarray(jax.jit(jax.vmap(batch_mean))(jax.random.split(jax.random.key(0), 320)))
  se = lambda m: np.std(m, ddof=1) / np.sqrt(len(m))
  ratio = se(means) / se(means[:80])
  assert 0.35 < ratio < 0.75, ratio
  assert np.isfinite(means).all() and means.mean() > -np.sum(p * np.log(p))
