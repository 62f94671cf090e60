"""The psi corrector (samplers/reverse.py): one step against a dense reference for every kernel,
the marginals kept exactly with an exact denoiser, the whole loop's law against an exact
enumeration of the chain, and corrector="none" unchanged."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax.errors import UserError
from dlm_jax.kernels import reference
from dlm_jax.models.transformer import TransformerConfig
from dlm_jax.samplers import reverse
from tests.test_sampler import (KERNELS, S_STEP, T_STEP, V, _check_histogram, _coupled_joint,
                                _exact_denoiser, _Oracle, _states, dense_step,
                                dense_transition)

PSI = reverse.SamplerOptions(corrector="psi", corrector_eta=0.4)


def _marginals(kernel, t):
  """(V, n): q_t(. | x) for every x, float64."""
  return np.asarray(reference.marginal(kernel, jnp.arange(V), t), np.float64)


def dense_psi_step(kernel, probs, z, s, t, share):
  """(1 - c) p(z_s | z_t = z) + c sum_x p(x | z_t = z) q_s(. | x), from dense_step and the
  definitions: p(x | z_t) is x_hat on the candidates, tilted by q_t(z | x) under the mean form."""
  q_t = _marginals(kernel, t)
  posterior = np.where(q_t[:, z] > 0, probs * (q_t[:, z] if kernel.mean_form else 1.0), 0.0)
  posterior /= posterior.sum()
  return (1 - share) * dense_step(kernel, probs, z, s, t) + share * posterior @ _marginals(
      kernel, s)


def _share(kernel, opts, t, s):
  return float(reverse.corrector_share(kernel, opts, jnp.float32(t), jnp.float32(s)))


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_one_psi_step_matches_the_dense_reference(name):
  kernel, n = KERNELS[name], 60_000
  states = _states(kernel)
  probs = np.random.default_rng(3).dirichlet(np.ones(V))
  z = jnp.broadcast_to(jnp.asarray(states), (n, len(states)))
  logits = jnp.broadcast_to(jnp.log(jnp.asarray(probs, jnp.float32)), (n, len(states), V))
  out = np.asarray(jax.jit(lambda key, z, logits: reverse.reverse_step(
      kernel, PSI, key, z, logits, T_STEP, S_STEP))(jax.random.key(11), z, logits))
  share = _share(kernel, PSI, T_STEP, S_STEP)
  assert share == pytest.approx(0.4)
  for j, state in enumerate(states):
    _check_histogram(out[:, j], dense_psi_step(kernel, probs, state, S_STEP, T_STEP, share), n)


def test_corrector_shares_follow_their_modes():
  kernel = KERNELS["uniform"]
  t, s = 0.7, 0.4
  noisy_s = 1 - float(kernel.alpha(s))
  alpha_t = float(kernel.alpha(t))
  remdm = reverse.SamplerOptions(corrector="psi", corrector_mode="remdm", corrector_eta=0.05)
  assert _share(kernel, remdm, t, s) == pytest.approx(0.05 / noisy_s, rel=1e-5)
  capped = reverse.SamplerOptions(corrector="psi", corrector_mode="remdm_capped",
                                  corrector_eta=0.9)
  assert _share(kernel, capped, t, s) == pytest.approx(
      min(1.0, min(0.9, noisy_s / alpha_t) / noisy_s), rel=1e-5)
  windowed = reverse.SamplerOptions(corrector="psi", corrector_t_min=0.5, corrector_t_max=0.8)
  assert _share(kernel, windowed, 0.7, 0.6) == pytest.approx(0.1)
  assert _share(kernel, windowed, 0.9, 0.8) == 0.0 and _share(kernel, windowed, 0.5, 0.4) == 0.0
  assert _share(kernel, remdm, 0.1, 0.0) == 0.0          # nothing to re-noise into at s = 0
  assert reverse.corrector_share(kernel, reverse.SamplerOptions(), 0.7, 0.4) == 0.0


def _step_tensors(kernel, t, s):
  """What one step from t to s needs for every z and x, float64: q_t (V, n), q_s (V, n) and
  post (V, n, n) = q(z_s | z_t = z, x) (dense_transition times q_s, normalised over z_s)."""
  q_t, q_s = _marginals(kernel, t), _marginals(kernel, s)
  post = np.stack([dense_transition(kernel, x, s, t).T * q_s[x] for x in range(V)])
  total = post.sum(-1, keepdims=True)
  return q_t, q_s, np.where(total > 0, post / np.where(total > 0, total, 1.0), 0.0)


def _chain_law(kernel, joint, opts, steps, wrong_above=None):
  """The exact law (n^L,) of the whole sampler loop over L = joint.ndim positions with the
  exact (factorised) denoiser: the prior product, then per step the product over positions of
  each position's one-step law given all of z_t (dense_psi_step's, vectorised over states).
  `wrong_above`: (t0, other joint): for t > t0 the denoiser is exact for the other joint (a
  model that errs at high noise)."""
  n, length = kernel.input_vocab_size, joint.ndim
  states = np.array(list(itertools.product(range(n), repeat=length)))       # (n^L, L)
  prior = np.asarray(kernel.prior_probs(), np.float64)
  law = np.prod(prior[states], -1)
  times = np.linspace(1.0, 0.0, steps + 1)
  for t, s in zip(times[:-1], times[1:]):
    q_t, q_s, post = _step_tensors(kernel, t, s)
    believed = joint if wrong_above is None or t <= wrong_above[0] else wrong_above[1]
    probs = np.exp(np.asarray(_exact_denoiser(believed, kernel, jnp.asarray(states), jnp.full(
        (len(states),), t, jnp.float32)), np.float64))                      # (n^L, L, V)
    share = _share(kernel, opts, t, s)
    step = np.ones((len(states), len(states)))
    for i in range(length):
      z = states[:, i]
      w = probs[:, i] * (q_t[:, z].T if kernel.mean_form else 1.0) * (q_t[:, z].T > 0)
      w /= w.sum(-1, keepdims=True)                                          # p(x | z_t)
      per = ((1 - share) * np.einsum("ax,xan->an", w, post[:, z])
             + share * w @ q_s)                                              # (n^L, n)
      step *= per[:, z]
    law = law @ step
  return law, states


@pytest.mark.parametrize("mode", ["constant", "remdm"])
def test_psi_steps_keep_the_marginals_with_an_exact_denoiser(mode):
  """One position, data law p: from z_t ~ sum_x p(x) q_t(. | x), a psi step with the exact
  posterior lands exactly on sum_x p(x) q_s(. | x), for every kernel and at every step of a
  grid: a corrector that keeps the marginals (exact, float64). With L = 1 the whole loop's
  law is then the data law (up to the prior's own error, none here)."""
  opts = reverse.SamplerOptions(corrector="psi", corrector_mode=mode, corrector_eta=0.3)
  p = np.random.default_rng(5).dirichlet(np.ones(V))
  times = np.linspace(1.0, 0.0, 6)
  with jax.enable_x64(True):
    for name, kernel in KERNELS.items():
      for t, s in zip(times[:-1], times[1:]):
        q_t, q_s, post = _step_tensors(kernel, t, s)
        z = np.arange(kernel.input_vocab_size)
        w = p[:, None] * (q_t if kernel.mean_form else 1.0) * (q_t > 0)          # (V, n)
        w = np.where(w.sum(0) > 0, w / np.where(w.sum(0) > 0, w.sum(0), 1.0), 0.0)
        share = _share(kernel, opts, t, s)
        step = ((1 - share) * np.einsum("xa,xan->an", w, post[:, z])
                + share * w.T @ q_s)                                             # (n, n)
        np.testing.assert_allclose((p @ q_t) @ step, p @ q_s, atol=1e-9,
                                   err_msg=f"{name} t={t}")


def test_psi_converges_as_steps_grow_and_repairs_an_early_error():
  """Exact laws of the whole loop (two coupled positions, no sampling noise). With the exact
  factorised denoiser the corrector converges as steps grow (it adds factorisation error per
  step: at T = 32 its TV is above the ancestral sampler's, 0.044 vs 0.022 for masking). With a
  denoiser that is wrong for t > 0.5 (exact for another joint), masking freezes the tokens it
  revealed early, a kernel that corrupts into real tokens revisits them (its TV is less than
  half of masking's), and a psi corrector on t <= 0.5 repairs masking (0.25 -> 0.14)."""
  joint = _coupled_joint(V)
  wrong = np.random.default_rng(7).dirichlet(np.ones(V * V)).reshape(V, V)

  def tv(name, opts, **kw):
    kernel = KERNELS[name]
    law, _ = _chain_law(kernel, joint, opts, opts.steps, **kw)
    n = kernel.input_vocab_size
    real = law.reshape(n, n)[:V, :V]
    return 0.5 * np.abs(real - joint).sum() + 0.5 * (1 - real.sum())

  psi = lambda T, **kw: reverse.SamplerOptions(**{"steps": T, "corrector": "psi",
                                                  "corrector_eta": 0.5, **kw})
  for name in ("masking", "semdlm_plus_uniform_A"):
    converging = {T: tv(name, psi(T)) for T in (8, 32)}
    assert converging[32] < 0.07 and converging[32] < converging[8] - 0.05, (name, converging)
  early_error = dict(wrong_above=(0.5, wrong))
  plain = {name: tv(name, reverse.SamplerOptions(steps=16), **early_error)
           for name in ("masking", "uniform")}
  assert plain["uniform"] < 0.5 * plain["masking"], plain
  repaired = tv("masking", psi(16, corrector_mode="remdm", corrector_eta=0.3,
                               corrector_t_max=0.5), **early_error)
  assert repaired < plain["masking"] - 0.08, (repaired, plain)


def _sampled_law(kernel, joint, opts, n):
  cfg = TransformerConfig(vocab_in=kernel.input_vocab_size, vocab_out=V, num_layers=0,
                          d_model=2, num_heads=1, time_conditioning=True)
  out, _ = reverse.jit_sample(_Oracle(joint, kernel, cfg), kernel, opts)(
      {}, jax.random.key(opts.steps), jnp.zeros((n, 2), jnp.int32), jnp.zeros((n, 2), bool))
  out = np.asarray(out)
  return np.bincount(out[:, 0] * kernel.input_vocab_size + out[:, 1],
                     minlength=kernel.input_vocab_size ** 2) / n


@pytest.mark.parametrize("name", ["masking", "uniform", "semdlm_plus_uniform_A",
                                  "semdlm_plus_mask_B"])
def test_the_psi_loop_samples_its_exact_chain(name):
  """The production loop (two positions, a strongly coupled joint, the exact denoiser, 4
  steps) against the exact enumeration of its chain: every cell within 5 sigma at 200k draws."""
  kernel, joint, n = KERNELS[name], _coupled_joint(V), 200_000
  opts = reverse.SamplerOptions(steps=4, cache=False, corrector="psi", corrector_eta=0.5)
  exact, _ = _chain_law(kernel, joint, opts, opts.steps)
  _check_histogram_law(_sampled_law(kernel, joint, opts, n), exact, n)


def _check_histogram_law(freq, exact, n):
  tol = 5 * np.sqrt(np.clip(exact, 0, 1) * (1 - np.clip(exact, 0, 1)) / n) + 1e-4
  assert np.all(np.abs(freq - exact) <= tol), np.max(np.abs(freq - exact) - tol)


def test_corrector_none_is_the_ancestral_sampler_bit_for_bit():
  kernel, joint = KERNELS["semdlm_plus_uniform_A"], _coupled_joint(V)
  cfg = TransformerConfig(vocab_in=kernel.input_vocab_size, vocab_out=V, num_layers=0,
                          d_model=2, num_heads=1, time_conditioning=True)
  run = lambda opts: np.asarray(reverse.jit_sample(_Oracle(joint, kernel, cfg), kernel, opts)(
      {}, jax.random.key(3), jnp.zeros((64, 2), jnp.int32), jnp.zeros((64, 2), bool))[0])
  plain = reverse.SamplerOptions(steps=8, cache=False)
  off = reverse.SamplerOptions(steps=8, cache=False, corrector="none", corrector_eta=0.7,
                               corrector_mode="remdm")
  np.testing.assert_array_equal(run(plain), run(off))
  assert not np.array_equal(run(plain), run(reverse.SamplerOptions(
      steps=8, cache=False, corrector="psi", corrector_eta=0.7)))


def test_bad_corrector_options_are_refused():
  masking = KERNELS["masking"]
  for bad in (dict(corrector="remdm"), dict(corrector="psi", corrector_mode="loop"),
              dict(corrector="psi", corrector_eta=1.5), dict(corrector="psi", corrector_eta=-0.1),
              dict(corrector="psi", corrector_t_min=0.6, corrector_t_max=0.5)):
    with pytest.raises(UserError):
      reverse.check_options(reverse.SamplerOptions(**bad), masking, 8)
  with pytest.raises(UserError, match="ancestral"):
    reverse.check_options(reverse.SamplerOptions(corrector="psi", unmasking="confidence"),
                          masking, 8)
