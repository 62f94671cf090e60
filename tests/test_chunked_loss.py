"""The chunked loss (elbo.over_position_chunks) equals the loss on full logits, values and
gradients, for every kernel and the AR baseline; remat policies change memory, not math."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax import elbo, objectives
from dlm_jax.models.transformer import Transformer, TransformerConfig, head_logits
from tests.conftest import toy_kernels

V, B, L = 12, 3, 16
KERNELS = toy_kernels(V)


@functools.lru_cache(maxsize=None)
def _model_and_params(vocab_in, remat="none"):
  model = Transformer(TransformerConfig(
      vocab_in=vocab_in, vocab_out=V, num_layers=1, d_model=16, num_heads=2, cond_dim=8,
      time_conditioning=True, dtype="float32", remat=remat))
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, L), jnp.int32),
                                             jnp.ones((1,))))["params"]
  rng = np.random.default_rng(0)     # zero-initialised head / adaLN: perturb everything
  return model, jax.tree.map(lambda p: p + 0.3 * rng.standard_normal(p.shape).astype(np.float32),
                             params)


def _assert_same(a, b):
  (va, ga), (vb, gb) = a, b
  np.testing.assert_allclose(float(va), float(vb), rtol=3e-6)
  for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
    scale = float(np.abs(np.asarray(y)).max())       # float32 rounding of the largest entries
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6 * scale)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_chunked_nelbo_equals_full_logits(name):
  """Head + integrand in chunks of 4 positions vs on all logits at once (values and the
  gradients through the head into the features and the head weights)."""
  kernel, rng = KERNELS[name], np.random.default_rng(2)
  x = jnp.asarray(rng.integers(0, V, (B, L)))
  t = jnp.asarray([0.2, 0.6, 0.95], jnp.float32)
  features = jnp.asarray(rng.normal(size=(B, L, 8)), jnp.float32)
  weights = jnp.asarray(2.0 * rng.normal(size=(8, V)), jnp.float32)

  @jax.jit
  def run(w, f):
    z = kernel.sample_forward(jax.random.key(0), x, t)
    head = lambda w: lambda h, columns=None: head_logits(      # the columns a kernel asks for
        {"head": {"kernel": w, "bias": jnp.zeros(V)}}, h, "float32", columns)
    loss = lambda w, f, chunk: elbo.chunked_nelbo_per_token(
        kernel, head(w), f, x, z, t, jax.random.key(1), chunk).sum()
    direct = elbo.nelbo_per_token(kernel, f @ w, x, z, t).sum()
    return direct, [jax.value_and_grad(loss, (0, 1))(w, f, c) for c in (0, 4)]
  direct, (full, chunked) = run(weights, features)
  assert float(full[0]) > 0
  np.testing.assert_allclose(float(full[0]), float(direct), rtol=1e-6)
  _assert_same(full, chunked)


def test_chunked_ar_nll_equals_full_logits():
  rng = np.random.default_rng(3)
  tokens = jnp.asarray(rng.integers(0, V, (B, L)))
  features = jnp.asarray(rng.normal(size=(B, L, 8)), jnp.float32)
  weights = jnp.asarray(rng.normal(size=(8, V)), jnp.float32)
  loss = lambda w, f, c: elbo.chunked_ar_nll(lambda h: h @ w, f, tokens, c).sum()
  full, chunked = jax.jit(lambda w, f: [jax.value_and_grad(loss, (0, 1))(w, f, c)
                                        for c in (0, 8)])(weights, features)
  log_probs = jax.nn.log_softmax(features @ weights)
  nll = -jnp.take_along_axis(log_probs[:, :-1], tokens[:, 1:, None], -1).sum()
  np.testing.assert_allclose(float(full[0]), float(nll), rtol=1e-6)
  _assert_same(full, chunked)


def test_head_logits_equal_the_forward():
  model, params = _model_and_params(V + 1)
  tokens, t = jnp.arange(L)[None] % (V + 1), jnp.array([0.4])
  logits, features = jax.jit(lambda p: (
      model.apply({"params": p}, tokens, t),
      model.apply({"params": p}, tokens, t, features_only=True)))(params)
  np.testing.assert_allclose(np.asarray(head_logits(params, features[:, 4:8], "float32")),
                             np.asarray(logits[:, 4:8]), rtol=1e-6, atol=1e-6)
  # The head as the kernels receive it: the module's own method, through model.apply.
  from dlm_jax import denoiser  # pylint: disable=g-import-not-at-top
  columns = jnp.array([3, -1, 0])
  via_apply = denoiser.head(model, params)(features[:, 4:8], columns)
  np.testing.assert_allclose(np.asarray(via_apply[..., [0, 2]]),
                             np.asarray(logits[:, 4:8][..., [3, 0]]), rtol=1e-6, atol=1e-6)
  assert (np.asarray(via_apply[..., 1]) == -1e30).all()


def test_remat_policies_and_chunks_change_memory_not_math():
  """The objective end to end (model, head, loss): unchunked without remat equals chunked
  under each remat policy."""
  kernel = KERNELS["semdlm_plus_uniform_A"]
  batch = {"tokens": jnp.asarray(np.random.default_rng(1).integers(0, V, (B, L)))}
  runs = [(objectives.Diffusion(kernel, chunk),
           *_model_and_params(kernel.input_vocab_size, remat=policy))
          for policy, chunk in (("none", 0), ("dots", 4), ("full", 8))]

  def loss(objective, model, params):
    nll, count = objective.loss_terms(params, batch, jax.random.key(3), model=model, t_min=0.0,
                                      train=True, pad_id=-1)
    return nll / count
  results = jax.jit(lambda ps: [jax.value_and_grad(functools.partial(loss, o, m))(p)
                                for (o, m, _), p in zip(runs, ps)])([p for *_, p in runs])
  _assert_same(results[0], results[1])
  _assert_same(results[0], results[2])
