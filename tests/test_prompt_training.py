"""Training for exact conditioning: random prompt spans, the conditional loss that leaves them
out, and the clean flag the denoiser reads (docs/design.md §5)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax import objectives
from dlm_jax.models.transformer import Transformer, TransformerConfig
from tests.conftest import toy_kernels

V, L = 12, 16


def _model(clean_flag):
  model = Transformer(TransformerConfig(vocab_in=V, vocab_out=V, num_layers=1, d_model=16,
                                        num_heads=2, cond_dim=8, time_conditioning=True,
                                        dtype="float32", clean_flag=clean_flag))
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, L), jnp.int32),
                                             jnp.ones((1,))))["params"]
  rng = np.random.default_rng(0)      # zero-initialised head / adaLN: perturb everything
  return model, jax.tree.map(lambda p: p + 0.3 * rng.standard_normal(p.shape).astype(np.float32),
                             params)


def test_prompt_spans_are_a_prefix_or_a_prefix_and_a_suffix():
  n = 20_000
  spans = np.asarray(objectives.prompt_spans(jax.random.key(0), (n, L), 0.5))
  assert not np.asarray(objectives.prompt_spans(jax.random.key(0), (n, L), 0.0)).any()
  # The free positions of every row are one contiguous window.
  free = ~spans
  starts = np.diff(free.astype(int), prepend=0, axis=1) == 1
  assert (starts.sum(1) <= 1).all()
  with_prompt = spans.any(1)
  # A selected row has no span only when both cuts miss (prefix 0 and the window to the end).
  assert 0.40 < with_prompt.mean() < 0.50
  prefix_only = with_prompt & ~spans[:, -1]
  assert abs(prefix_only.sum() / with_prompt.sum() - 0.5) < 0.05
  assert spans[:, 0].mean() > 0.3 and spans[:, -1].mean() > 0.15


def test_the_conditional_loss_leaves_the_prompt_out_and_trains_the_flag():
  kernel = toy_kernels(V)["uniform"]
  model, params = _model(clean_flag=True)
  tokens = jnp.asarray(np.random.default_rng(1).integers(0, V, (64, L)))
  key = jax.random.key(3)
  objective = objectives.Diffusion(kernel, prompt_rate=1.0)

  @functools.partial(jax.jit, static_argnums=1)
  def loss(p, train):
    nll, count = objective.loss_terms(p, {"tokens": tokens}, key, model=model, t_min=0.0,
                                      train=train, pad_id=-1)
    return nll / count, count
  (_, count), grads = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)(
      params, True)
  spans = np.asarray(objectives.prompt_spans(jax.random.fold_in(key, 4), tokens.shape, 1.0))
  assert int(count) == (~spans).sum() < tokens.size
  assert float(jnp.abs(grads["clean_embed"]).max()) > 0
  # Evaluation is the unconditional NELBO: every token counted, no span drawn.
  assert int(loss(params, False)[1]) == tokens.size
  # Without prompts the objective is the one of before, to the bit.
  terms = lambda o: jax.jit(lambda p: o.loss_terms(p, {"tokens": tokens}, key, model=model,
                                                    t_min=0.0, train=True, pad_id=-1))(params)
  a, b = terms(objectives.Diffusion(kernel)), terms(objectives.Diffusion(kernel, prompt_rate=0.0))
  assert float(a[0]) == float(b[0])


def test_the_flag_is_read_only_by_models_that_have_it():
  tokens = jnp.arange(L)[None] % V
  t = jnp.array([0.5])
  clean = jnp.zeros((1, L), bool).at[0, :4].set(True)
  for enabled in (False, True):
    model, params = _model(clean_flag=enabled)
    forward = jax.jit(lambda c, m=model, p=params: m.apply({"params": p}, tokens, t, clean=c))
    apply = lambda c: np.asarray(forward(c))
    assert ("clean_embed" in params) == enabled
    np.testing.assert_allclose(apply(None), apply(jnp.zeros((1, L), bool)), rtol=1e-5, atol=1e-6)
    assert (np.abs(apply(clean) - apply(None)).max() > 1e-4) == enabled
