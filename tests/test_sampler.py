"""Reverse samplers: one-step laws against dense references, convergence with an oracle
denoiser, SemDLM+ controls, unmasking laws, conditioning, caching, blocks, float64."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from dlm_jax.errors import UserError
from dlm_jax.kernels import family, reference
from dlm_jax.models.transformer import Transformer, TransformerConfig
from dlm_jax.samplers import reverse, unmasking
from tests.conftest import kernel_config, toy_kernels

V = 6
KERNELS = toy_kernels(V, eps=1e-2)
T_STEP, S_STEP = 0.7, 0.4


# ------------------------------------------------------------------ dense references
def dense_transition(kernel, x, s, t):
  """(n, n) P[y, z] = q(z_t = z | z_s = y, x) over all states, from definitions only.

  Markov kernels: expm of the integrated generator (the components commute: N is a
  doubly-stochastic partition matrix, the mask absorbs). Top-k: docs/design.md §5's
  alpha_{t|s} delta + (q_t - alpha_{t|s} q_s)(. | x)."""
  n = kernel.input_vocab_size
  if not kernel.exact_nelbo:
    a_ts = float(kernel.alpha(t) / kernel.alpha(s))
    q_t = np.asarray(reference.marginal(kernel, x, t), np.float64)
    q_s = np.asarray(reference.marginal(kernel, x, s), np.float64)
    return a_ts * np.eye(n) + (q_t - a_ts * q_s)[None, :]
  def jump(matrix_real, to_mask=False):
    m = np.zeros((n, n))
    if to_mask:
      m[:, n - 1] = 1.0
    else:
      m[:V, :V] = matrix_real
      if n > V:
        m[V, V] = 1.0
    return m - np.eye(n)
  gen = np.zeros((n, n))
  for sched, matrix, to_mask in ((kernel.sem, np.asarray(reference.neighbours(kernel)), False),
                                 (kernel.glob, np.full((V, V), 1.0 / V), False),
                                 (kernel.mask, None, True)):
    if sched is not None:
      gen += float(np.log(sched.alpha(s) / sched.alpha(t))) * jump(matrix, to_mask)
  return scipy.linalg.expm(gen)


def dense_step(kernel, probs, z, s, t, eta=0.0, probs_unrestricted=None):
  """p(z_s | z_t = z) = sum_x x_hat_C(z)(x) q(z_s | z_t, x) (+ eta's re-noising); under the
  mean form p(z_s | z_t) ∝ q(z_t | z_s) q_s(z_s | x_hat) = sum_x x_hat(x) q_t(z | x) q(z_s | z_t,
  x) up to normalisation."""
  q_t = np.asarray(reference.marginal(kernel, jnp.arange(V), t), np.float64)      # (V, n)
  q_s = np.asarray(reference.marginal(kernel, jnp.arange(V), s), np.float64)
  cand = q_t[:, z] > 0
  x_hat = np.where(cand, probs * (q_t[:, z] if kernel.mean_form else 1.0), 0.0)
  x_hat /= x_hat.sum()
  out = np.zeros(kernel.input_vocab_size)
  for x in range(V):
    if x_hat[x] > 0:
      post = dense_transition(kernel, x, s, t)[:, z] * q_s[x]
      out += x_hat[x] * post / post.sum()
  if eta:
    glob = probs if probs_unrestricted is None else probs_unrestricted
    out = (1 - eta) * out + eta * (glob[:, None] * q_s).sum(0)
  return out


def _states(kernel):
  return list(range(kernel.input_vocab_size))


def _check_histogram(samples, exact, n):
  """Each frequency is a mean of n Bernoullis: std = sqrt(p (1 - p) / n); allow 5 sigma
  (the chance that any of the ~50 cells of a test exceeds it is below 1e-4)."""
  exact = np.clip(exact, 0.0, 1.0)
  freq = np.bincount(samples, minlength=len(exact)) / n
  tol = 5 * np.sqrt(exact * (1 - exact) / n) + 1e-4
  assert np.all(np.abs(freq - exact) <= tol), (freq, exact)


def test_dense_transition_is_consistent_with_marginals():
  """q_s(.|x) P_{s->t} = q_t(.|x) for every kernel: the references are right."""
  for name, kernel in KERNELS.items():
    for x in range(V):
      q_s = np.asarray(reference.marginal(kernel, x, S_STEP), np.float64)
      q_t = np.asarray(reference.marginal(kernel, x, T_STEP), np.float64)
      np.testing.assert_allclose(q_s @ dense_transition(kernel, x, S_STEP, T_STEP), q_t,
                                 atol=1e-6, err_msg=name)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_one_step_matches_dense_posterior(name):
  kernel = KERNELS[name]
  n = 60_000
  states = _states(kernel)
  probs = np.random.default_rng(1).dirichlet(np.ones(V))
  z = jnp.broadcast_to(jnp.asarray(states), (n, len(states)))
  logits = jnp.broadcast_to(jnp.log(jnp.asarray(probs, jnp.float32)), (n, len(states), V))
  out = jax.jit(lambda key, z, logits: reverse.reverse_step(
      kernel, reverse.SamplerOptions(), key, z, logits, T_STEP, S_STEP))(
          jax.random.key(7), z, logits)
  out = np.asarray(out)
  for j, state in enumerate(states):
    _check_histogram(out[:, j], dense_step(kernel, probs, state, S_STEP, T_STEP), n)


@pytest.mark.parametrize("form", ["mean", "mixture"])
def test_the_sampler_runs_the_chain_the_loss_scores(form):
  """For every process and both forms, the sampler's one-step law over a small step h
  (dense_step, which test_one_step_matches_dense_posterior ties to the production sampler)
  jumps z -> y at the rate R^(z -> y) the NELBO integrand scores (reference.model_rates, which
  test_elbo ties to each process's own integrand): P(y) / h -> R^(y). Under the mean form the
  top-k integrand once scored another chain, up to 55x apart (math3 B2)."""
  kernels = toy_kernels(V, eps=1e-2, parameterization=form)
  probs = np.random.default_rng(4).dirichlet(np.ones(V))
  t, h = 0.6, 1e-6
  with jax.enable_x64(True):
    for name, kernel in kernels.items():
      for z in _states(kernel):
        step = dense_step(kernel, probs, z, t - h, t)
        rates = np.asarray(reference.model_rates(kernel, jnp.asarray(probs), z, t))
        jumps = np.where(np.arange(len(step)) == z, 0.0, step) / h
        np.testing.assert_allclose(jumps, rates, rtol=2e-3, atol=1e-6 * rates.max(),
                                   err_msg=f"{name} z={z}")


@pytest.mark.parametrize("name", ["semdlm_plus_uniform_A", "semdlm_plus_mask_B"])
def test_semdlm_plus_controls_one_step(name):
  """eta: with prob eta re-noise an unrestricted draw to level s; rho: x_hat(x) exp(-rho f(x)),
  f(x) = [x = z] + N_x(z) for a one-token sequence z (L = 1)."""
  kernel = KERNELS[name]
  n, eta, rho = 60_000, 0.3, 2.0
  probs = np.random.default_rng(2).dirichlet(np.ones(V))
  dense_n = np.asarray(reference.neighbours(kernel), np.float64)
  opts = reverse.SamplerOptions(eta=eta, rho=rho)
  for state in _states(kernel):
    z = jnp.full((n, 1), state)
    logits = jnp.broadcast_to(jnp.log(jnp.asarray(probs, jnp.float32)), (n, 1, V))
    out = jax.jit(lambda key, z, logits: reverse.reverse_step(
        kernel, opts, key, z, logits, T_STEP, S_STEP))(jax.random.key(state), z, logits)
    f = (np.arange(V) == state) + dense_n[:, state] if state < V else np.zeros(V)
    penalised = probs * np.exp(-rho * f)
    penalised /= penalised.sum()
    exact = dense_step(kernel, penalised, state, S_STEP, T_STEP, eta=eta)
    _check_histogram(np.asarray(out)[:, 0], exact, n)


def test_frequency_penalty_counts_tokens_and_neighbours():
  kernel = KERNELS["semdlm_B"]
  z = jnp.array([[0, 0, 3, kernel.mask_id if kernel.has_mask_token else 1]])
  f = np.asarray(kernel.frequency_penalty(z))[0]
  counts = np.bincount(np.asarray(z[0]), minlength=V)[:V]
  expected = (counts + np.asarray(reference.neighbours(kernel)) @ counts) / 4
  np.testing.assert_allclose(f, expected, rtol=1e-6)


def test_top_p_keeps_the_nucleus():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  draws = np.asarray(jax.vmap(lambda k: reverse.draw_tokens(k, logits, True, top_p=0.7))(
      jax.random.split(jax.random.key(0), 4000)))
  assert set(np.unique(draws)) == {0, 1}
  assert abs((draws == 0).mean() - 0.625) < 0.03


# ------------------------------------------------------------------ whole loops with an oracle
def _exact_denoiser(joint, kernel, z, t, clean=None):
  """Log p(x_i | z_t) of a toy joint over L = joint.ndim positions, for each row of z (B, L):
  the evidence of position j is q_t(z_j | x_j), or a point mass at z_j where `clean` flags it.
  The mean form leaves position i's own evidence out (its sampler tilts by it, _Oracle)."""
  vocab, length = joint.shape[0], joint.ndim
  lik = reference.marginal(kernel, jnp.arange(vocab), t[:, None])             # (B, V, n)
  evidence = jnp.take_along_axis(lik, z[:, None, :], axis=2)                  # (B, V, L)
  if clean is not None:
    point = jax.nn.one_hot(z, vocab, axis=1, dtype=evidence.dtype)
    evidence = jnp.where(clean[:, None, :], point, evidence)
  letters = "abcdefgh"[:length]
  marginals = []
  for i in range(length):
    others = [evidence[:, :, j] for j in range(length) if j != i]
    spec = (letters + "," + ",".join(f"n{letters[j]}" for j in range(length) if j != i)
            + f"->n{letters[i]}")
    m = jnp.einsum(spec, jnp.asarray(joint, evidence.dtype), *others)
    if not kernel.mean_form:
      m = m * evidence[:, :, i]
    marginals.append(m / m.sum(-1, keepdims=True))
  return jnp.log(jnp.stack(marginals, axis=1) + 1e-30)


class _Oracle(nn.Module):
  """The exact denoiser of a toy joint over L = 2 under `kernel` (as logits): the posterior
  p(x_i | z_t) for the mixture form; for the mean form p(x_i | z_t without position i), whose
  tilt by q_t(z_i | x_i) (the mean-form sampler's) is that posterior."""
  joint: np.ndarray
  kernel: object
  cfg: TransformerConfig

  def __call__(self, z, t=None):
    return _exact_denoiser(self.joint, self.kernel, z, t)


def _oracle_tv(kernel, joint, steps, n=30_000, **options):
  Vt = joint.shape[0]
  cfg = TransformerConfig(vocab_in=kernel.input_vocab_size, vocab_out=Vt, num_layers=0,
                          d_model=2, num_heads=1, time_conditioning=True)
  opts = reverse.SamplerOptions(steps=steps, cache=False, **options)
  out, _ = reverse.jit_sample(_Oracle(joint, kernel, cfg), kernel, opts)(
      {}, jax.random.key(steps), jnp.zeros((n, 2), jnp.int32), jnp.zeros((n, 2), bool))
  out = np.asarray(out)
  assert (out < Vt).all()
  counts = np.zeros((Vt, Vt))
  np.add.at(counts, (out[:, 0], out[:, 1]), 1)
  return 0.5 * np.abs(counts / n - joint).sum()


def _coupled_joint(Vt):
  """A strongly dependent pair: x_2 = x_1 with prob 0.9 (independent-sampling gap ~0.6)."""
  marg = np.random.default_rng(0).dirichlet(np.ones(Vt) * 3)
  return marg[:, None] * (0.9 * np.eye(Vt) + 0.1 / Vt)


@pytest.mark.parametrize("name", ["semdlm_plus_uniform_A", "semdlm_plus_mask_B"])
def test_oracle_sampler_converges_as_steps_grow(name):
  kernel, joint = KERNELS[name], _coupled_joint(V)
  tv = {T: _oracle_tv(kernel, joint, T) for T in (1, 4, 32)}
  # Noise: TV of an n = 30k empirical law over 36 cells is about 0.02; the gaps are larger.
  assert tv[32] < tv[4] - 0.03 and tv[4] < tv[1] - 0.03, tv
  assert tv[32] < 0.08, tv


class _ConditionalOracle(nn.Module):
  """The exact posterior of each x_i of a toy joint over L = 3, given z_t where a position is
  noisy and x_i = z_i where `clean` flags it (a model with `clean_flag`); without the flag
  every position is read as noisy, which is what a network without it learns."""
  joint: np.ndarray
  kernel: object
  cfg: TransformerConfig

  def __call__(self, z, t=None, clean=None):
    return _exact_denoiser(self.joint, self.kernel, z, t, clean)


def _chain_joint():
  """x_0 -> x_1 -> x_2, each copying its left neighbour with prob ~0.85."""
  rng = np.random.default_rng(0)
  copy = 0.85 * np.eye(V) + 0.15 * rng.dirichlet(np.ones(V), size=V)
  return rng.dirichlet(np.ones(V) * 3)[:, None, None] * copy[:, :, None] * copy[None, :, :]


def _prefix_conditioned(kernel, joint, steps, clean_flag, prompt, n=10_000):
  """(n, 3) samples with x_0 clamped to `prompt` (n,)."""
  cfg = TransformerConfig(vocab_in=kernel.input_vocab_size, vocab_out=V, num_layers=0,
                          d_model=2, num_heads=1, time_conditioning=True, clean_flag=clean_flag)
  fixed = jnp.zeros((n, 3), jnp.int32).at[:, 0].set(jnp.asarray(prompt))
  clamp = jnp.zeros((n, 3), bool).at[:, 0].set(True)
  out, _ = reverse.jit_sample(_ConditionalOracle(joint, kernel, cfg), kernel,
                              reverse.SamplerOptions(steps=steps, cache=False))(
      {}, jax.random.key(steps), fixed, clamp)
  out = np.asarray(out)
  assert (out[:, 0] == prompt).all() and (out < V).all()
  return out


def _law(samples, cells):
  counts = np.zeros(cells)
  np.add.at(counts, tuple(samples.T), 1)
  return counts / len(samples)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_conditioning_is_exact_with_the_clean_flag(name):
  """Prefix conditioning against the exact conditional of a 3-token chain. With the clean flag
  the sampler converges to p(x_1, x_2 | x_0) as steps grow, for every kernel whose own
  reverse process does (all but pure SemDLM, whose prior forgets the cluster: there the
  conditioned law equals the kernel's unconditional sampler on p(. | x_0), so conditioning
  adds no error of its own). Without the flag, a kernel that corrupts tokens into tokens
  reads the prompt as noise: biased, and more steps do not help."""
  kernel, joint, n = KERNELS[name], _chain_joint(), 10_000
  prompt = np.random.default_rng(1).choice(V, size=n, p=joint.sum((1, 2)))
  tv = lambda out: 0.5 * np.abs(_law(out, (V, V, V)) - joint).sum()
  if name in ("semdlm_A", "semdlm_B"):
    a = 0
    ours = _prefix_conditioned(kernel, joint, 32, True, np.full(n, a))[:, 1:]
    given_a = joint[a] / joint[a].sum()
    cfg = TransformerConfig(vocab_in=kernel.input_vocab_size, vocab_out=V, num_layers=0,
                            d_model=2, num_heads=1, time_conditioning=True)
    own, _ = reverse.jit_sample(_Oracle(given_a, kernel, cfg), kernel,
                                reverse.SamplerOptions(steps=32, cache=False))(
        {}, jax.random.key(9), jnp.zeros((n, 2), jnp.int32), jnp.zeros((n, 2), bool))
    gap = 0.5 * np.abs(_law(ours, (V, V)) - _law(np.asarray(own), (V, V))).sum()
    assert gap < 0.03, gap    # two samples of one law at n = 10k: 0.011 +- 0.003
    return
  # The TV of n = 10k exact draws over these 216 cells: 0.025 +- 0.003 (99.9%: 0.033).
  flagged = {T: tv(_prefix_conditioned(kernel, joint, T, True, prompt)) for T in (1, 32)}
  assert flagged[32] < 0.045 and flagged[32] < flagged[1] - 0.1, flagged
  unflagged = tv(_prefix_conditioned(kernel, joint, 32, False, prompt))
  if kernel.absorbing and name == "masking":
    assert abs(unflagged - flagged[32]) < 0.02, (unflagged, flagged)   # the mask is a flag
  else:
    assert unflagged > flagged[32] + 0.1, (unflagged, flagged)


@pytest.mark.parametrize("law", ["ancestral", "fixed", "random"])
def test_unmasking_laws_converge_with_oracle(law):
  kernel, joint = KERNELS["masking"], _coupled_joint(V)
  tv = {T: _oracle_tv(kernel, joint, T, unmasking=law) for T in (1, 2, 16)}
  assert tv[16] < tv[1] - 0.1, tv
  if law == "fixed":
    # Two steps reveal exactly one position each: the oracle makes that exact.
    assert tv[2] < 0.03, tv


def test_unmasking_plans():
  kernel = KERNELS["masking"]
  times = jnp.linspace(1.0, 0.0, 9)
  masked = jnp.zeros((500, 32), bool).at[:, 4:].set(True)
  fixed = unmasking.plan("fixed", jax.random.key(0), kernel, times, masked)
  sizes = np.diff(np.asarray(fixed.revealed), prepend=0, axis=1)
  assert (np.asarray(fixed.revealed)[:, -1] == 28).all()
  assert sizes.min() >= 3 and sizes.max() <= 4            # log-linear: equal sizes 28 / 8
  rand = unmasking.plan("random", jax.random.key(1), kernel, times, masked)
  rsizes = np.diff(np.asarray(rand.revealed), prepend=0, axis=1)
  assert (np.asarray(rand.revealed)[:, -1] == 28).all() and (rsizes >= 0).all()
  assert rsizes.std() > 1.0                                # really random sizes
  assert abs(rsizes.mean(0) - 3.5).max() < 0.5             # same mean profile as fixed
  # Exactly uniform over compositions: 2 positions into 3 steps has 6, each 1/6.
  cum = np.asarray(unmasking.random_composition(jax.random.key(2), jnp.full((60_000,), 2), 3, 4))
  parts = np.diff(cum, prepend=0, axis=1)
  _, counts = np.unique(parts, axis=0, return_counts=True)
  assert len(counts) == 6 and np.abs(counts / 60_000 - 1 / 6).max() < 5 * np.sqrt(5 / 36 / 60_000)
  ranks = np.asarray(fixed.rank)
  assert (np.sort(ranks[:, 4:], 1) == np.arange(28)).all() and (ranks[:, :4] >= 28).all()


def test_confidence_scores_and_ordered_reveals():
  logits = jnp.log(jnp.array([[[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.5, 0.5, 0.0]]]))
  x = jnp.array([[0, 1, 1]])
  conf = np.asarray(unmasking.confidence_scores("confidence", logits, x))
  np.testing.assert_allclose(conf, [[0.7, 0.35, 0.5]], rtol=1e-6)
  margin = np.asarray(unmasking.confidence_scores("margin", logits, x))
  np.testing.assert_allclose(margin, [[0.5, 0.05, 0.0]], atol=1e-6)
  neg_h = np.asarray(unmasking.confidence_scores("entropy", logits, x))
  p = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.5, 0.5, 0.0]])
  np.testing.assert_allclose(neg_h[0], [np.sum(r[r > 0] * np.log(r[r > 0])) for r in p], rtol=1e-5)
  # The k most confident masked positions; unmasked positions are never chosen.
  masked = jnp.array([[True, True, False, True]])
  c = jnp.array([[0.2, 0.9, 0.99, 0.5]])
  pick = lambda n: np.asarray(unmasking.most_confident(c, masked, jnp.array([n])))[0].tolist()
  assert pick(1) == [False, True, False, False] and pick(2) == [False, True, False, True]
  assert pick(0) == [False] * 4 and pick(5) == [True, True, False, True]
  # Sizes of the ordered laws are the fixed law's: target 3 revealed of 4, 1 already done.
  got = unmasking.ordered_reveal("confidence", c, masked, jnp.array([3]), jnp.array([4]), 0.9,
                                 False)
  assert np.asarray(got)[0].tolist() == [False, True, False, True]
  # Threshold: every masked position at or above it, at least the best one, all at the end.
  rule = lambda tau, last=False: np.asarray(unmasking.ordered_reveal(
      "threshold", c, masked, jnp.array([0]), jnp.array([3]), tau, last))[0].tolist()
  assert rule(0.4) == [False, True, False, True]
  assert rule(0.95) == [False, True, False, False]
  assert rule(0.95, last=True) == [True, True, False, True]


@pytest.mark.parametrize("law", ["confidence", "margin", "entropy", "threshold"])
def test_ordered_laws_unmask_everything_in_order(law):
  """Confidence-ordered decoding with the exact oracle: every position is revealed, the step
  sizes are the fixed law's (threshold: as many as are sure), and with one position per step
  the most confident goes first."""
  kernel, joint = KERNELS["masking"], _coupled_joint(V)
  cfg = TransformerConfig(vocab_in=kernel.input_vocab_size, vocab_out=V, num_layers=0,
                          d_model=2, num_heads=1, time_conditioning=True)
  for steps in (1, 2, 4):
    opts = reverse.SamplerOptions(steps=steps, unmasking=law, threshold=0.5)
    out, nfe = reverse.jit_sample(_Oracle(joint, kernel, cfg), kernel, opts)(
        {}, jax.random.key(steps), jnp.zeros((256, 2), jnp.int32), jnp.zeros((256, 2), bool))
    out = np.asarray(out)
    assert (out < V).all()
    assert 1 <= int(nfe) <= steps
  # Not exact samplers (which position goes first depends on the drawn tokens), but one
  # position per step captures the pair's coupling that one joint step (T = 1) misses.
  one = _oracle_tv(kernel, joint, 1, unmasking=law)
  two = _oracle_tv(kernel, joint, 2, unmasking=law, threshold=0.99)
  assert two < one - 0.3, (one, two)


# ------------------------------------------------------------------ with a real network
def _tiny_model(vocab_in, vocab_out, time_conditioning=False):
  cfg = TransformerConfig(vocab_in=vocab_in, vocab_out=vocab_out, num_layers=1, d_model=16,
                          num_heads=2, dtype="float32", time_conditioning=time_conditioning)
  model = Transformer(cfg)
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))
  rng = np.random.default_rng(0)       # host-side noise: no compilation per leaf
  return model, jax.tree.map(
      lambda p: p + 0.3 * rng.standard_normal(p.shape).astype(np.float32), params["params"])


def _masking(Vm, eps=1e-3):
  return family.make_process(kernel_config("masking", eps=eps), Vm)


@pytest.mark.parametrize("corrector", [{}, dict(corrector="psi", corrector_mode="remdm",
                                                corrector_eta=0.02, corrector_t_max=0.5)])
def test_cache_is_exact_and_saves_calls(corrector):
  Vm = 20
  model, params = _tiny_model(Vm + 1, Vm)
  kernel = _masking(Vm)
  fixed = jnp.zeros((4, 8), jnp.int32).at[:, :2].set(jnp.array([5, 6]))
  fixed_mask = jnp.zeros((4, 8), bool).at[:, :2].set(True)
  run = lambda cache: reverse.jit_sample(model, kernel, reverse.SamplerOptions(
      64, cache=cache, **corrector))(params, jax.random.key(3), fixed, fixed_mask)
  (a, nfe_a), (b, nfe_b) = run(True), run(False)
  np.testing.assert_array_equal(a, b)
  assert int(nfe_b) == 64 and int(nfe_a) < 64
  assert (np.asarray(a[:, :2]) == [5, 6]).all()          # prefix kept
  assert (np.asarray(a) < Vm).all()                       # nothing left masked


@pytest.mark.parametrize("name,options", [
    ("masking", dict(steps=8)),                                     # with the cache
    ("masking", dict(steps=4, unmasking="confidence")),
    ("uniform", dict(steps=4, top_p=0.9)),
    ("semdlm_plus_uniform_A", dict(steps=4, eta=0.3, rho=2.0, temperature=0.8)),
    ("semdlm_plus_mask_B", dict(steps=4, corrector="psi", corrector_eta=0.5)),
])
def test_chunked_logits_give_the_same_samples(name, options):
  """Logits made and drawn a chunk of positions at a time (never B x L x V at once): the
  same samples, token for token, as all positions at once."""
  kernel = KERNELS[name] if name != "masking" else _masking(V)
  model, params = _tiny_model(kernel.input_vocab_size, V, time_conditioning=name != "masking")
  fixed = jnp.zeros((3, 8), jnp.int32).at[:, 0].set(2)
  mask = jnp.zeros((3, 8), bool).at[:, 0].set(True)
  run = lambda chunk: np.asarray(reverse.jit_sample(
      model, kernel, reverse.SamplerOptions(logits_chunk=chunk, **options))(
          params, jax.random.key(4), fixed, mask)[0])
  np.testing.assert_array_equal(run(3), run(0))      # 3 does not divide 8: chunks of 2
  assert reverse.position_chunk(8, 3) == 2 and reverse.position_chunk(8, 8) == 0
  assert reverse.position_chunk(1024, 128) == 128 and reverse.position_chunk(100, 0) == 0


def test_infill_blocks_and_controls_with_a_network():
  kernel = KERNELS["semdlm_plus_mask_B"]
  model, params = _tiny_model(kernel.input_vocab_size, V, time_conditioning=True)
  fixed = jnp.zeros((2, 8), jnp.int32).at[:, 3].set(2).at[:, 7].set(4)
  mask = jnp.zeros((2, 8), bool).at[:, 3].set(True).at[:, 7].set(True)
  for opts in (reverse.SamplerOptions(8), reverse.SamplerOptions(4, block_size=4, eta=0.2,
                                                                  rho=1.0, float64=True)):
    out, nfe = reverse.jit_sample(model, kernel, opts)(params, jax.random.key(0), fixed, mask)
    out = np.asarray(out)
    assert (out[:, 3] == 2).all() and (out[:, 7] == 4).all()
    assert (out < V).all()
    assert int(nfe) == 8                                   # 8 steps, or 2 blocks x 4 steps


def test_semi_autoregressive_blocks_finish_left_to_right():
  """With blocks, the first block is final before the second starts: stop after block one."""
  Vm = 20
  model, params = _tiny_model(Vm + 1, Vm)
  kernel = _masking(Vm)
  fixed, mask = jnp.zeros((3, 8), jnp.int32), jnp.zeros((3, 8), bool).at[:, 0].set(True)
  opts = reverse.SamplerOptions(4, block_size=4)
  sample = reverse.jit_sample(model, kernel, opts)
  full, _ = sample(params, jax.random.key(5), fixed, mask)
  # Fixing the second block's positions to the mask stops the loop from touching them.
  half, _ = sample(params, jax.random.key(5), fixed.at[:, 4:].set(Vm), mask.at[:, 4:].set(True))
  np.testing.assert_array_equal(np.asarray(half)[:, 4:], Vm)
  assert (np.asarray(full) < Vm).all()


def test_float64_sampling_runs_in_float64():
  kernel = KERNELS["semdlm_A"]
  logits = jnp.zeros((2, 3, V))
  with jax.enable_x64(True):
    scores = jnp.asarray(logits, jnp.float64)
    out = jax.jit(lambda k, z: reverse.reverse_step(
        kernel, reverse.SamplerOptions(float64=True), k, z, scores, 0.5, 0.25))(
            jax.random.key(0), jnp.zeros((2, 3), jnp.int32))
    assert out.shape == (2, 3)


def test_bad_options_are_refused():
  kernel = KERNELS["uniform"]
  with pytest.raises(Exception, match="needs the masking kernel"):
    reverse.check_options(reverse.SamplerOptions(unmasking="fixed"), kernel, 8)
  with pytest.raises(Exception, match="divide the length"):
    reverse.check_options(reverse.SamplerOptions(block_size=3), kernel, 8)
  with pytest.raises(Exception, match="top_p"):
    reverse.check_options(reverse.SamplerOptions(top_p=0.0), kernel, 8)
  for bad in (dict(temperature=float("nan")), dict(rho=float("inf")), dict(rho=float("nan")),
              dict(eta=float("nan")), dict(top_p=float("nan"))):
    with pytest.raises(Exception, match="must be a finite number"):
      reverse.check_options(reverse.SamplerOptions(**bad), kernel, 8)


def test_sliding_windows_cover_the_length_and_stitch_on_generated_context():
  from dlm_jax.generation import windows
  assert windows(128, 64, 32) == [(0, 0), (32, 32), (64, 32)]
  assert windows(100, 64, 32) == [(0, 0), (32, 32), (36, 60)]     # the last aligned to the end
  assert windows(65, 64, 64) == [(0, 0), (1, 63)]
  for length, window, stride in [(128, 64, 32), (300, 64, 16), (70, 64, 64), (129, 32, 7)]:
    plan = windows(length, window, stride)
    produced = window
    for start, context in plan[1:]:
      assert context == produced - start > 0 and start + window <= length
      assert start + window - produced <= stride            # at most `stride` new tokens
      produced = start + window
    assert produced == length
  with pytest.raises(UserError):
    windows(128, 64, 0)


def test_templates_clamp_text_and_leave_spans_free():
  from dlm_jax.data import planted
  from dlm_jax.data.tokenizer import IdsTokenizer
  from dlm_jax.generation import template_conditioning
  fixed, mask = template_conditioning(IdsTokenizer(16), ["5 6 <mask:2> 7", "9", "<mask:3> 4"], 8,
                                      start=[2])
  assert fixed[0].tolist() == [2, 5, 6, 0, 0, 7, 0, 0]
  assert mask[0].tolist() == [True, True, True, False, False, True, False, False]
  assert mask[1].tolist() == [True, True] + [False] * 6 and fixed[1, 1] == 9
  assert mask[2].tolist() == [True, False, False, False, True, False, False, False]
  with pytest.raises(UserError, match="prompt 1"):
    template_conditioning(IdsTokenizer(16), ["1 <mask:9>"], 8)
  # A huge span is refused before anything is allocated; malformed spans are not text.
  for bad in ("1 <mask:1000000000000> 2", "1 <mask:-3> 2", "1 <mask:5 2"):
    with pytest.raises(UserError, match="prompt 1"):
      template_conditioning(IdsTokenizer(16), [bad], 8)
  # Without a start (rows that start anywhere; the planted language): position 0.
  tok = planted.PlantedTokenizer(planted.language())
  fixed, mask = template_conditioning(tok, ["the <mask:1> of"], 4)
  assert mask[0].tolist() == [True, False, True, False]
  assert tok.decode(fixed[0][mask[0]]) == "the of"
