"""Train state, optimizer and the pure train / eval step functions.

Everything here is a pure function of (state, batch, key), generic over the objective
(`objectives.py`); `experiment.py` jits them with explicit shardings over the mesh.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
  step: jax.Array
  params: Any
  ema_params: Any
  opt_state: Any


def learning_rate_schedule(optim_cfg, num_steps: int):
  warmup = optax.linear_schedule(0.0, optim_cfg.learning_rate, max(optim_cfg.warmup_steps, 1))
  if optim_cfg.lr_schedule == "cosine":
    after = optax.cosine_decay_schedule(optim_cfg.learning_rate,
                                        max(num_steps - optim_cfg.warmup_steps, 1))
  else:
    after = optax.constant_schedule(optim_cfg.learning_rate)
  return optax.join_schedules([warmup, after], [optim_cfg.warmup_steps])


def make_optimizer(optim_cfg, num_steps: int) -> optax.GradientTransformation:
  """AdamW with global-norm clipping; weight decay on matrices only."""
  return optax.chain(
      optax.clip_by_global_norm(optim_cfg.grad_clip) if optim_cfg.grad_clip > 0
      else optax.identity(),
      optax.adamw(learning_rate_schedule(optim_cfg, num_steps), b1=optim_cfg.b1, b2=optim_cfg.b2,
                  weight_decay=optim_cfg.weight_decay,
                  mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)),
  )


def init_state(key, model: nn.Module, tx, seq_len: int) -> TrainState:
  """Initial state with logical-axis boxes kept (for deriving shardings)."""
  tokens = jnp.zeros((1, seq_len), jnp.int32)
  params = model.init(key, tokens, jnp.ones((1,)))["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=params,
                    opt_state=tx.init(params))


def train_step(state: TrainState, batch, key, *, objective, model, tx, t_min: float,
               ema_decay: float, grad_accum_steps: int, pad_id: int):
  key = jax.random.fold_in(key, state.step)

  def grads_of(microbatch, k):
    (nll_sum, count), grads = jax.value_and_grad(
        lambda p: objective.loss_terms(p, microbatch, k, model=model, t_min=t_min, train=True,
                                       pad_id=pad_id), has_aux=True)(state.params)
    return nll_sum, count, grads

  if grad_accum_steps == 1:
    nll_sum, count, grads = grads_of(batch, key)
  else:
    micro = jax.tree.map(lambda x: x.reshape(grad_accum_steps, -1, *x.shape[1:]), batch)

    def body(acc, inputs):
      mb, i = inputs
      out = grads_of(mb, jax.random.fold_in(key, i))
      return jax.tree.map(jnp.add, acc, out), None

    zeros = (jnp.zeros(()), jnp.zeros(()), jax.tree.map(jnp.zeros_like, state.params))
    (nll_sum, count, grads), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(grad_accum_steps)))

  count = jnp.maximum(count, 1.0)
  grads = jax.tree.map(lambda g: g / count, grads)
  loss, grad_norm = nll_sum / count, optax.tree.norm(grads)

  def update(state):
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state.ema_params,
                       params)
    # A finite gradient can still make the parameters non-finite (a huge learning rate).
    params_finite = jnp.isfinite(optax.tree.norm(params))
    new = state.replace(params=params, ema_params=ema, opt_state=opt_state)
    return jax.lax.cond(params_finite, lambda: new, lambda: state), params_finite

  # A non-finite loss, gradient or updated parameter never reaches the state: the update is
  # skipped (the step counter still advances, so the data order is unchanged) and the loop
  # decides to stop. A cond, not a select over old and new states of the whole step.
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  new_state, params_finite = jax.lax.cond(
      finite, update, lambda state: (state, jnp.zeros((), bool)), state)
  metrics = {"loss": loss, "bits_per_token": loss / jnp.log(2.0), "grad_norm": grad_norm,
             "tokens": count, "finite": finite & params_finite}
  return new_state.replace(step=state.step + 1), metrics


def gradient_noise(params, batch, key, *, objective, model, t_min: float, pad_id: int):
  """Gradient-noise estimates from two half-batch gradients (McCandlish et al. 2018, App. A).

  With g_a, g_b the per-token mean gradients of the two halves (b = B/2 sequences each) and
  g = (g_a + g_b) / 2: |G|^2 ~ (2 |g|^2 - mean(|g_a|^2, |g_b|^2)) and
  tr(Sigma) ~ b (mean(|g_a|^2, |g_b|^2) - |g|^2) * 2 (per sequence), unbiased but noisy;
  grad_noise_scale = tr(Sigma) / |G|^2 is the critical-batch estimate B_simple, in sequences.
  """
  half = batch["tokens"].shape[0] // 2

  def grad(part, k):
    def loss(p):
      nll, count = objective.loss_terms(p, part, k, model=model, t_min=t_min, train=True,
                                        pad_id=pad_id)
      return nll / jnp.maximum(count, 1.0)
    return jax.grad(loss)(params)

  g_a = grad(jax.tree.map(lambda x: x[:half], batch), jax.random.fold_in(key, 0))
  g_b = grad(jax.tree.map(lambda x: x[half: 2 * half], batch), jax.random.fold_in(key, 1))
  sq = lambda tree: sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))
  small = 0.5 * (sq(g_a) + sq(g_b))
  big = sq(jax.tree.map(lambda a, b: 0.5 * (a + b), g_a, g_b))
  signal = 2.0 * big - small                          # (B |g_B|^2 - b |g_b|^2) / (B - b)
  trace = (small - big) * 2.0 * half                  # (|g_b|^2 - |g_B|^2) / (1/b - 1/B)
  return {"grad_signal_sq": signal, "grad_noise_trace": trace,
          "grad_noise_scale": trace / signal}


def eval_step(params, batch, key, *, objective, model, pad_id: int, quantity: str = "headline"):
  """One evaluation quantity summed over the batch (`objective.eval_terms`: the NELBO, its
  truncated form with the reconstruction term, MDLM's quantity, or the AR NLL):
  (sum, token_count, reconstruction_sum)."""
  return objective.eval_terms(params, batch, key, model=model, pad_id=pad_id, quantity=quantity)
