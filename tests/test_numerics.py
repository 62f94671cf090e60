"""Regression tests for four numerical failures (B1-B4 of the house-keeping round): the
cosine schedule at t = 1, eps = 0 at t = 1, masking at tiny t, and a confidently wrong
denoiser whose probability of the true token underflows in float32."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax import elbo, objectives
from dlm_jax.kernels import family, neighbors, reference
from tests.conftest import kernel_config, toy_kernels

V = 12


def test_b1_cosine_schedule_reaches_eps_exactly():
  """cos(pi/2) is -4.4e-8 in float32: alpha(1) < 0 made p_1 NaN and every sample token 0."""
  masking = family.make_process(kernel_config("masking", schedule="cosine", eps=0.0), V)
  assert float(masking.mask.alpha(jnp.float32(1.0))) == 0.0
  probs = np.asarray(masking.prior_probs())
  assert np.isfinite(probs).all()
  np.testing.assert_allclose(probs, np.eye(V + 1)[V], atol=1e-7)
  z = masking.sample_prior(jax.random.key(0), (2, 64))
  assert (np.asarray(z) == masking.mask_id).all()
  uniform = family.make_process(kernel_config("uniform", schedule="cosine", eps=0.0), V)
  np.testing.assert_allclose(np.asarray(uniform.prior_probs()), 1.0 / V, rtol=1e-5)


@pytest.mark.parametrize("name", ["uniform", "semdlm_plus_mask_A", "semdlm_plus_uniform_B"])
def test_b2_eps_zero_is_safe_at_the_largest_training_time(name):
  """sample_times drew t = 1 with probability ~B/2^23 per step; with eps = 0 the rates
  diverge there and a long run stopped on a NaN. t = 1 is never drawn, and the integrand at
  the largest time drawn is finite, with a finite gradient."""
  t = objectives.times_from_offset(0.0, 4, 0.0)
  assert float(t.max()) < 1.0
  kernel = toy_kernels(V, eps=0.0)[name]
  x = jnp.asarray(np.random.default_rng(0).integers(0, V, size=(4, 16)))
  z = kernel.sample_forward(jax.random.key(0), x, t)
  logits = jax.random.normal(jax.random.key(1), (4, 16, V))
  loss = lambda lg: elbo.nelbo_per_token(kernel, lg, x, z, t, jax.random.key(2)).sum()
  value, grad = jax.jit(jax.value_and_grad(loss))(logits)
  assert np.isfinite(float(value)) and np.isfinite(np.asarray(grad)).all()


def test_b3_masking_cosine_gradient_is_finite_at_tiny_t():
  """1 - cos(pi t / 2) rounds to 0 in float32 below t ~ 1.6e-4: the weight was inf and the
  unselected branch of jnp.where put NaN into the gradient."""
  kernel = family.make_process(kernel_config("masking", schedule="cosine", eps=0.0), V)
  x = jnp.asarray(np.random.default_rng(0).integers(0, V, size=(3, 8)))
  t = jnp.asarray([1e-6, 1e-4, 0.5], jnp.float32)
  z = x.at[:, ::2].set(kernel.mask_id)
  logits = jax.random.normal(jax.random.key(1), (3, 8, V))
  value, grad = jax.value_and_grad(lambda lg: elbo.nelbo_integrand(kernel, lg, x, z, t).sum())(
      logits)
  assert np.isfinite(float(value)) and np.isfinite(np.asarray(grad)).all()
  # MDLM's weight for the cosine schedule: -alpha'/(1 - alpha) ~ 2/t at small t.
  nll = -jax.nn.log_softmax(logits)[0, 0, x[0, 0]]
  np.testing.assert_allclose(float(elbo.nelbo_integrand(kernel, logits, x, z, t)[0, 0]),
                             2e6 * float(nll), rtol=1e-3)


def _confidently_wrong(x, gap):
  """Logits that put all mass on (x + 1) % V: x_hat(x) ~ e^-gap, below float32's range."""
  logits = np.zeros(x.shape + (V,), np.float32)
  logits[..., :] = -gap
  np.put_along_axis(logits, ((x + 1) % V)[..., None], 0.0, -1)
  return logits


def _reference_float64(kernel, logits, x, z, t):
  with jax.enable_x64(True):
    probs = jax.nn.softmax(jnp.asarray(logits, jnp.float64), -1)
    one = lambda p, xi, zi: reference.integrand(kernel, p, xi, zi, t)
    return np.asarray(jax.jit(jax.vmap(jax.vmap(one)))(probs, jnp.asarray(x), jnp.asarray(z)))


@pytest.mark.parametrize("name", ["semdlm_B", "semdlm_plus_mask_B"])
def test_b4_topk_without_uniform_part_grows_with_the_logit_gap(name):
  """_safe_log(0) = 0 gave -0.44 nats instead of ~284 for a confidently wrong model."""
  kernel = toy_kernels(V, eps=1e-2)[name]
  rng = np.random.default_rng(0)
  x = rng.integers(0, V, size=(1, 6))
  t = 0.5
  z = np.asarray(kernel.sample_forward(jax.random.key(3), jnp.asarray(x), jnp.asarray([t])))
  logits = _confidently_wrong(x, 120.0)
  ours = np.asarray(elbo.nelbo_integrand(kernel, jnp.asarray(logits), jnp.asarray(x),
                                         jnp.asarray(z), jnp.asarray([t], jnp.float32)))
  exact = _reference_float64(kernel, logits, x, z, t)
  assert exact.max() > 10.0
  np.testing.assert_allclose(ours, exact, rtol=1e-3, atol=1e-3)
  grad = jax.grad(lambda lg: elbo.nelbo_integrand(
      kernel, lg, jnp.asarray(x), jnp.asarray(z), jnp.asarray([t], jnp.float32)).sum())(
          jnp.asarray(logits))
  assert np.isfinite(np.asarray(grad)).all() and np.abs(np.asarray(grad)).max() > 0


def test_b4_partition_with_mask_on_a_singleton_cluster():
  """Special tokens are one-token clusters: with the mask as global part, a masked special
  token under a confidently wrong model scored 0 instead of ~350 nats."""
  emb = np.random.default_rng(0).normal(size=(V, 5))
  table = neighbors.build(emb, "partition", 3, "toy", special=(0,))
  kernel = family.make_process(kernel_config("semdlm_plus", global_kind="mask", eps=1e-2,
                                            global_eps=1e-2), V, table)
  x = np.zeros((1, 4), np.int64)
  z = np.full((1, 4), kernel.mask_id)
  t = 0.9
  logits = _confidently_wrong(x, 120.0)
  ours = np.asarray(elbo.nelbo_integrand(kernel, jnp.asarray(logits), jnp.asarray(x),
                                         jnp.asarray(z), jnp.asarray([t], jnp.float32)))
  exact = _reference_float64(kernel, logits, x, z, t)
  assert exact.min() > 10.0
  np.testing.assert_allclose(ours, exact, rtol=1e-3)


@pytest.mark.parametrize("form", ["mean", "mixture"])
@pytest.mark.parametrize("vocab,t", [(50257, 1e-3), (412, 1e-5)])
def test_b5_uniform_bulk_is_finite_when_the_denoiser_is_sure_of_a_corrupted_z(vocab, t, form):
  """x != z and z's logit 28 above the rest: x_hat(z) rounds to 1 in float32 and C / V < 3e-8,
  so the bulk pass's u - 1 rounded to -1 and log1p(-1) * 0 made the value and the gradient
  NaN. Now both are finite and the value agrees with the float64 evaluation."""
  kernel = family.make_process(kernel_config("uniform", eps=1e-3, parameterization=form), vocab)
  x, z = jnp.array([[3, 5]]), jnp.array([[9, 5]])         # one corrupted, one clean position
  logits = jnp.zeros((1, 2, vocab)).at[:, :, 9].set(28.0)
  fn = jax.jit(jax.value_and_grad(
      lambda lg, tt: elbo.nelbo_integrand(kernel, lg, x, z, tt).sum()))
  value, grad = fn(logits, jnp.array([t], jnp.float32))
  assert np.isfinite(float(value)) and np.isfinite(np.asarray(grad)).all()
  with jax.enable_x64(True):
    exact = float(jax.jit(lambda lg, tt: elbo.nelbo_integrand(kernel, lg, x, z, tt).sum())(
        logits.astype(jnp.float64), jnp.array([t], jnp.float64)))
  np.testing.assert_allclose(float(value), exact, rtol=1e-3)


@pytest.mark.parametrize("schedule,power,t", [("loglinear", 2.0, 1e-4), ("cosine", 1.5, 1e-3)])
def test_b6_the_uniform_part_survives_small_t_in_float32(schedule, power, t):
  """C = 1 - alpha_glob was computed as `1.0 - a_glob`: 0 in float32 for t < 1.7e-4 under
  SemDLM+'s default global schedule (t^2) and t < 3.4e-3 under cosine at power 1.5, so the
  uniform part dropped out of loss and gradient. It now comes from one_minus_alpha."""
  emb = np.random.default_rng(0).normal(size=(V, 5))
  kernel = family.make_process(kernel_config(
      "semdlm_plus", global_kind="uniform", global_schedule=schedule, global_power=power,
      global_eps=1e-3), V, neighbors.build(emb, "partition", 3, "toy", special=()))
  _, _, C, _ = kernel.coefficients(jnp.asarray([t], jnp.float32))
  exact = float(kernel.glob.one_minus_alpha(np.float64(t)))
  assert exact > 0 and float(C[0]) == pytest.approx(exact, rel=1e-5)
  # A token that left its cluster is possible only through the uniform part: finite cost.
  x, z = jnp.array([[0]]), jnp.array([[int(np.flatnonzero(
      np.asarray(kernel.table.cluster) != int(kernel.table.cluster[0]))[0])]])
  loss = elbo.nelbo_integrand(kernel, jnp.zeros((1, 1, V)), x, z, jnp.asarray([t], jnp.float32))
  assert np.isfinite(np.asarray(loss)).all() and float(loss[0, 0]) > 0


# ---------------------------------------------------------------- the float64 audit (math3)
def _padded_partition_processes():
  """Pure SemDLM and SemDLM+ (partition + mask) on clusters [0, 1, 0, 1, 2, 1]: token 0's
  cluster has 2 members, the largest 3, so c(0) has a padding slot."""
  table = neighbors.partition_table(np.array([0, 1, 0, 1, 2, 1]), "toy", special=())
  out = {}
  for form in ("mean", "mixture"):
    out[("semdlm", form)] = family.make_process(kernel_config("semdlm", parameterization=form),
                                                6, table)
    out[("semdlm_plus_mask", form)] = family.make_process(kernel_config(
        "semdlm_plus", global_kind="mask", parameterization=form), 6, table)
  return out


@pytest.mark.parametrize("float64", [False, True])
def test_math3_b1_padding_slots_are_not_token_0(float64):
  """Padding slots of a cluster were read as token 0: with z = 0 in a cluster smaller than
  k_max the within-cluster integrand gave 13.67 nats where the O(V) form gives 0.469 (x = 2),
  and 0.601 for 0.760 (x = z = 0). Both kernels that use it, both forms, both precisions."""
  dtype = jnp.float64 if float64 else jnp.float32
  with jax.enable_x64(float64):
    logits = jnp.asarray(np.random.default_rng(0).normal(0.0, 2.0, size=(1, 1, 6)), dtype)
    t = jnp.asarray([0.5], dtype)
    for (name, form), process in _padded_partition_processes().items():
      integrand = jax.jit(process.integrand)
      full_integrand = jax.jit(functools.partial(reference.full_vocabulary_integrand, process))
      for x, z in ((2, 0), (0, 0), (1, 3), (0, 2)):
        args = (logits, jnp.array([[x]]), jnp.array([[z]]), t)
        ours = float(integrand(*args)[0, 0])
        full = float(full_integrand(*args)[0, 0])
        dense = float(reference.integrand(process, jax.nn.softmax(logits[0, 0]), x, z, 0.5))
        np.testing.assert_allclose(ours, full, rtol=1e-5, err_msg=f"{name} {form} x={x} z={z}")
        np.testing.assert_allclose(ours, dense, rtol=1e-4, err_msg=f"{name} {form} x={x} z={z}")


def test_math3_b3_one_minus_kappa_is_not_a_subtraction():
  """1 - kappa was `1.0 - kappa`: 0 in float32 at small t, so the top-k integrand at z = mask
  returned 0 instead of ~1e7 nats and the posterior step never kept a mask. Both come from
  the schedule's one_minus_alpha now."""
  toy = toy_kernels(V, eps=1e-3)
  topk = toy["semdlm_plus_mask_B"]
  x, z = jnp.array([[3]]), jnp.array([[topk.mask_id]])
  logits = _confidently_wrong(np.asarray(x), 20.0)
  for t in (1e-4, 1e-6):
    ours = float(topk.integrand(jnp.asarray(logits, jnp.float32), x, z,
                                jnp.asarray([t], jnp.float32))[0, 0])
    with jax.enable_x64(True):
      exact = float(topk.integrand(jnp.asarray(logits, jnp.float64), x, z,
                                   jnp.asarray([t], jnp.float64))[0, 0])
    assert exact > 1e5
    np.testing.assert_allclose(ours, exact, rtol=1e-3)
  # From z_t = m the posterior keeps the mask w.p. ~(1 - kappa_s) / (1 - kappa_t): 1/2 for
  # masking's log-linear schedule, 1/4 for SemDLM+'s (t^2), at s = t / 2.
  x = jnp.zeros((1, 20000), jnp.int32)
  z = jnp.full((1, 20000), topk.mask_id)
  t, s = 2e-8, 1e-8
  for process in (topk, toy["masking"], toy["semdlm_plus_mask_A"]):
    expected = (float(process.mask.one_minus_alpha(np.float64(s)))
                / float(process.mask.one_minus_alpha(np.float64(t))))
    kept = process.posterior_sample(jax.random.key(0), z, x, jnp.float32(t),
                                    jnp.float32(s)) == process.mask_id
    assert expected in (pytest.approx(0.5), pytest.approx(0.25))
    assert abs(float(kept.mean()) - expected) < 0.02, type(process).__name__


@pytest.mark.parametrize("form", ["mean", "mixture"])
def test_uniform_jump_gradients_match_finite_differences(form):
  """The bulk's hand-written backward (global_jump._bulk, SemDLM+) and the uniform closed form
  (autodiff) against central differences of their own values, float64, at t where the bulk
  matters."""
  from tests.conftest import toy_kernels  # pylint: disable=g-import-not-at-top
  with jax.enable_x64(True):
    kernels = toy_kernels(6, eps=1e-3, parameterization=form)
    for name in ("uniform", "semdlm_plus_uniform_A"):
      kernel = kernels[name]
      fn = lambda lg, x, z, tt: elbo.nelbo_integrand(kernel, lg, x, z, tt).sum()
      grad_fn = jax.jit(jax.grad(fn))
      values = jax.jit(jax.vmap(fn, in_axes=(0, None, None, None)))
      for t in (0.5, 1.0):
        key = jax.random.key(int(t * 1e4))
        x = jax.random.randint(key, (3, 8), 0, 6)
        tt = jnp.full((3,), t, jnp.float64)
        z = kernel.sample_forward(jax.random.fold_in(key, 1), x, tt).at[:, :2].set(x[:, :2])
        logits = 4.0 * jax.random.normal(jax.random.fold_in(key, 2), (3, 8, 6), jnp.float64)
        grad = np.asarray(grad_fn(logits, x, z, tt))
        h = 1e-6
        steps = h * jnp.eye(logits.size, dtype=jnp.float64).reshape((-1,) + logits.shape)
        fd = np.asarray((values(logits + steps, x, z, tt) - values(logits - steps, x, z, tt))
                        / (2 * h))
        np.testing.assert_allclose(grad, fd.reshape(grad.shape), rtol=1e-6, atol=1e-8,
                                   err_msg=f"{name} t={t}")
