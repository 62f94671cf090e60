"""The MDLM ancestral sampler: exact one-step law, caching, conditioning."""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax.kernels import interpolating
from dlm_jax.models.transformer import Transformer, TransformerConfig
from dlm_jax.samplers import masking
from tests.conftest import kernel_config


def _kernel(V, eps=0.0):
  return interpolating.make_kernel(kernel_config("masking", eps=eps), V)


def test_one_step_matches_exact_posterior():
  """q(z_s | z_t = m, x ~ x_hat): reveal w.p. (a_s - a_t)/(1 - a_t), token ~ x_hat."""
  V, n = 4, 200_000
  kernel = _kernel(V)
  logits = jnp.log(jnp.array([0.1, 0.2, 0.3, 0.4]))
  z = jnp.full((1, n), kernel.mask_id)
  t, s = 0.8, 0.5
  z_s = masking.reverse_step(kernel, jax.random.key(0), z, jnp.broadcast_to(logits, (1, n, V)),
                             t, s)
  freq = np.bincount(np.asarray(z_s).ravel(), minlength=V + 1) / n
  reveal = (kernel.alpha(s) - kernel.alpha(t)) / (1 - kernel.alpha(t))
  exact = np.append(reveal * np.array([0.1, 0.2, 0.3, 0.4]), 1 - reveal)
  # Each frequency has std <= sqrt(0.25 / n) = 0.0011; 5 sigma.
  np.testing.assert_allclose(freq, exact, atol=0.0056)
  revealed = z.at[0, :3].set(jnp.array([0, 1, 2]))
  kept = masking.reverse_step(kernel, jax.random.key(1), revealed, jnp.zeros((1, n, V)), t, s)
  np.testing.assert_array_equal(kept[0, :3], [0, 1, 2])   # SUBS: revealed tokens stay


class _Oracle(nn.Module):
  """Exact conditional p(x_i | revealed positions) of a toy joint over L = 2 (as logits)."""
  joint: np.ndarray
  cfg: TransformerConfig

  def __call__(self, z, t=None):
    p = jnp.asarray(self.joint)
    V = p.shape[0]
    def one(row):
      post = p * jnp.where(row[0] < V, jnp.arange(V) == row[0], True)[:, None]
      post = post * jnp.where(row[1] < V, jnp.arange(V) == row[1], True)[None, :]
      post = post / post.sum()
      return jnp.log(jnp.stack([post.sum(1), post.sum(0)]) + 1e-30)
    return jax.vmap(one)(z)


def test_sampler_with_oracle_recovers_target_as_steps_grow():
  V = 3
  joint = np.random.default_rng(0).dirichlet(np.ones(V * V)).reshape(V, V)
  cfg = TransformerConfig(vocab_in=V + 1, vocab_out=V, num_layers=0, d_model=2, num_heads=1)
  model, kernel = _Oracle(joint, cfg), _kernel(V)
  n = 40_000
  fixed = jnp.zeros((n, 2), jnp.int32)
  free = jnp.zeros((n, 2), bool)
  tv = {}
  for steps in (1, 4, 64):
    out, _ = masking.sample({}, jax.random.key(steps), fixed, free, model=model, kernel=kernel,
                            steps=steps)
    counts = np.zeros((V, V))
    np.add.at(counts, (np.asarray(out[:, 0]), np.asarray(out[:, 1])), 1)
    tv[steps] = 0.5 * np.abs(counts / n - joint).sum()
  # One step draws the positions independently from the marginals: a real TV gap.
  indep = np.outer(joint.sum(1), joint.sum(0))
  assert abs(tv[1] - 0.5 * np.abs(indep - joint).sum()) < 0.02
  assert tv[64] < tv[4] < tv[1]
  assert tv[64] < 0.02                          # sampling noise with n = 40k: ~0.006


def _tiny_model(V):
  cfg = TransformerConfig(vocab_in=V + 1, vocab_out=V, num_layers=1, d_model=16, num_heads=2,
                          dtype="float32")
  model = Transformer(cfg)
  params = nn.meta.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))["params"]
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(p.size), p.shape),
                        params)
  return model, params


def test_cache_is_exact_and_saves_calls():
  V = 20
  model, params = _tiny_model(V)
  kernel = _kernel(V, eps=1e-3)
  fixed = jnp.zeros((4, 8), jnp.int32).at[:, :2].set(jnp.array([5, 6]))
  fixed_mask = jnp.zeros((4, 8), bool).at[:, :2].set(True)
  a, nfe_a = masking.sample(params, jax.random.key(3), fixed, fixed_mask, model=model,
                            kernel=kernel, steps=64, use_cache=True)
  b, nfe_b = masking.sample(params, jax.random.key(3), fixed, fixed_mask, model=model,
                            kernel=kernel, steps=64, use_cache=False)
  np.testing.assert_array_equal(a, b)
  assert int(nfe_b) == 64 and int(nfe_a) < 64
  assert (np.asarray(a[:, :2]) == [5, 6]).all()          # prefix kept
  assert (np.asarray(a) < V).all()                        # nothing left masked


def test_infill_keeps_fixed_positions():
  V = 20
  model, params = _tiny_model(V)
  fixed = jnp.zeros((2, 8), jnp.int32).at[:, 3].set(7).at[:, 7].set(9)
  mask = jnp.zeros((2, 8), bool).at[:, 3].set(True).at[:, 7].set(True)
  out, _ = masking.sample(params, jax.random.key(0), fixed, mask, model=model,
                          kernel=_kernel(V), steps=8)
  assert (np.asarray(out[:, 3]) == 7).all() and (np.asarray(out[:, 7]) == 9).all()
