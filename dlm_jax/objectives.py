"""What a run optimises, samples and reports, chosen once per experiment.

`Diffusion(process)`: the continuous-time NELBO of a diffusion process (an upper bound on
-log p(x)), the exact reverse sampler of that process. `Autoregressive()`: the causal
baseline's next-token NLL (exact), left-to-right sampling. Training, evaluation and
sampling loops are generic over the two; nothing else asks which one a run is.

Both are pytrees: the process's arrays (neighbour table, unigram, prior-KL table) are leaves,
everything else is static, and `experiment.py` passes the objective into every jit as an
argument (replicated), so no table is a constant of a compiled step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dlm_jax import denoiser, elbo, rng
from dlm_jax.data import rows
from dlm_jax.errors import UserError
from dlm_jax.samplers import autoregressive, reverse

# The largest float32 below 1: t = 1 itself is never drawn, since with eps = 0 a component's
# rate -alpha'/alpha diverges there (the integrand is integrable in t but infinite at 1).
T_MAX = float(np.nextafter(np.float32(1.0), np.float32(0.0)))


# The reconstruction time of a truncated NELBO, and MDLM's t_min (its `sampling_eps`).
EVAL_T_MIN = 1e-3
QUANTITIES = ("headline", "nelbo", "truncated", "mdlm")


def times_from_offset(offset, batch_size: int, t_min: float):
  """Low-discrepancy t in (t_min, T_MAX]: rows spaced 1/B apart from one offset in [0, 1)."""
  u = (offset + jnp.arange(batch_size) / batch_size) % 1.0
  return jnp.minimum(t_min + (1.0 - t_min) * (1.0 - u), T_MAX)


def sample_times(key, batch_size: int, t_min: float):
  return times_from_offset(jax.random.uniform(key), batch_size, t_min)


def _weights(tokens, valid, pad_id: int, pad_in_loss: bool):
  """(weights of each position in the NELBO sum, weights in the token count): PAD is never
  counted; it is summed unless `pad_in_loss` is off (data/rows.py: pad_rule)."""
  counted = (tokens != pad_id) * valid[:, None]
  return (jnp.broadcast_to(valid[:, None], tokens.shape) if pad_in_loss else counted), counted


def prompt_spans(key, shape, rate: float):
  """(B, L) bool: the clean prompt positions of training rows. A share `rate` of the rows gets
  one: a prefix of uniform length (half of them), or a prefix and a suffix around a uniform
  free window (the other half, as infilling asks); the other rows have none."""
  batch, length = shape
  k_row, k_cut, k_kind = jax.random.split(key, 3)
  cuts = jnp.sort(jax.random.randint(k_cut, (batch, 2), 0, length + 1), axis=-1)
  prefix_only = jax.random.bernoulli(k_kind, 0.5, (batch,))
  end = jnp.where(prefix_only, length, cuts[:, 1])
  position = jnp.arange(length)[None, :]
  spans = (position < cuts[:, :1]) | (position >= end[:, None])
  return spans & jax.random.bernoulli(k_row, rate, (batch,))[:, None]


class Diffusion(struct.PyTreeNode):
  """A diffusion LM under `process` (kernels/process.py); its number is a bound.
  `logits_chunk`: positions per chunk of logits in the loss (0: all at once; elbo.over_position_chunks); `pad_in_loss`:
  the PAD rule of the data convention; `prompt_rate`: the share of training rows given clean
  prompt spans (`prompt_spans`), which the denoiser sees flagged and the loss leaves out."""
  process: Any
  logits_chunk: int = struct.field(pytree_node=False, default=0)
  pad_in_loss: bool = struct.field(pytree_node=False, default=True)
  prompt_rate: float = struct.field(pytree_node=False, default=0.0)
  is_bound = True
  perplexity_key = "perplexity_bound"

  @property
  def name(self) -> str:
    return self.process.name

  def describe(self) -> dict:
    return self.process.describe()

  def input_vocab_size(self, vocab_size: int) -> int:
    return self.process.input_vocab_size

  def what(self) -> str:
    bound = (self.process.nelbo_label if self.pad_in_loss
             else f"{self.process.nelbo_label} over non-PAD positions (not a bound on the row)")
    over = ("t in (0, 1]" if self.headline == "nelbo" else
            f"t in [{EVAL_T_MIN:g}, 1] plus the reconstruction term -log p(x | z_{EVAL_T_MIN:g}) "
            "(over (0, 1] this kernel's estimate is heavy-tailed: infinite variance, and under "
            "the mixture form an infinite mean)")
    return (f"Monte Carlo estimate (over t and z_t) of the {bound}, "
            f"{self.process.parameterization} parameterisation, {over}; "
            "perplexity_bound = exp(NELBO per token)")

  def loss_terms(self, params, batch, key, *, model, t_min: float, train: bool, pad_id: int):
    """(nll_sum, token_count): the one-sample NELBO summed in nats, and tokens counted.

    With `pad_in_loss` every position contributes to nll_sum (PAD after EOS is part of the
    padded sequence, a deterministic function of the document, so the bound stays a bound on
    the document); only non-PAD tokens are counted, so nll_sum / token_count is per real
    token. Without it (MDLM's rule) PAD positions are left out of the sum as well."""
    tokens = batch["tokens"]
    integrand, summed, counted = self._sampled_integrand(params, batch, key, model=model,
                                                         t_min=t_min, train=train,
                                                         pad_id=pad_id)
    per_token = integrand + self.process.prior_kl(tokens)
    return jnp.sum(per_token * summed), jnp.sum(counted)

  def _sampled_integrand(self, params, batch, key, *, model, t_min: float, train: bool,
                         pad_id: int):
    """(integrand (B, L), sum weights, count weights) at one t ~ U(t_min, 1) and z_t per row."""
    tokens = batch["tokens"]
    valid = batch.get("valid", jnp.ones(tokens.shape[:1], jnp.float32))
    summed, counted = _weights(tokens, valid, pad_id, self.pad_in_loss)
    keys = rng.loss_keys(key)
    t = sample_times(keys["time"], tokens.shape[0], t_min)
    z = self.process.sample_forward(keys["forward"], tokens, t)
    clean = None
    if train and self.prompt_rate > 0:      # the rows' conditional NELBO given their prompts
      clean = prompt_spans(keys["prompt"], tokens.shape, self.prompt_rate)
      z = jnp.where(clean, tokens, z)
      summed, counted = summed * ~clean, counted * ~clean
    features = denoiser.features(model, params, z, denoiser.time_input(model.cfg, self.process, t),
                                 train=train, key=keys["dropout"], clean=clean)
    head = denoiser.head(model, params)
    integrand = elbo.chunked_integrand(self.process, head, features, tokens, z, t, keys["bulk"],
                                       self.logits_chunk)
    return integrand, summed, counted

  @property
  def headline(self) -> str:
    """The quantity reported as the NELBO: over t in (0, 1] for the mask kernel, else over
    [EVAL_T_MIN, 1] plus the reconstruction term (`eval_terms`, Process.reported_bound)."""
    return self.process.reported_bound

  def eval_terms(self, params, batch, key, *, model, pad_id: int, quantity: str = "headline"):
    """(sum, token_count, reconstruction_sum) of one evaluation quantity, per batch:

    - nelbo: the one-sample NELBO over t in (0, 1] plus the prior term (`loss_terms`);
    - truncated: (1 - t0) x the integrand at t ~ U[t0, 1] + -log p(x | z_t0) + the prior term,
      t0 = EVAL_T_MIN: a bound whose expectation is finite for every kernel and form;
    - mdlm: MDLM's reported quantity, the integrand at t ~ U[t0, 1] without the prior term
      (not a bound: it leaves out [0, t0) and KL(q_1 || p_1));
    - headline: `self.headline`.
    reconstruction_sum is the -log p(x | z_t0) part of `truncated` (0 otherwise)."""
    if quantity not in QUANTITIES:
      raise ValueError(f"unknown evaluation quantity {quantity!r}; expected one of {QUANTITIES}")
    quantity = self.headline if quantity == "headline" else quantity
    zero = jnp.zeros(())
    if quantity == "nelbo":
      return (*self.loss_terms(params, batch, key, model=model, t_min=0.0, train=False,
                               pad_id=pad_id), zero)
    tokens = batch["tokens"]
    per_token, summed, counted = self._sampled_integrand(params, batch, key, model=model,
                                                         t_min=EVAL_T_MIN, train=False,
                                                         pad_id=pad_id)
    if quantity == "mdlm":
      return jnp.sum(per_token * summed), jnp.sum(counted), zero
    recon = self.reconstruction_nll(params, tokens, rng.loss_keys(key)["reconstruction"],
                                     model=model)
    per_token = (1.0 - EVAL_T_MIN) * per_token + recon + self.process.prior_kl(tokens)
    return jnp.sum(per_token * summed), jnp.sum(counted), jnp.sum(recon * summed)

  def reconstruction_nll(self, params, tokens, key, *, model):
    """-log p(x | z_t0) per token at t0 = EVAL_T_MIN: the model's last reverse step, x drawn
    from x_hat over the candidates of z (tilted by q_t0(z | x) under the mean form, as the
    sampler draws it). (B, L) nats."""
    process = self.process
    k_z, k_drop = jax.random.split(key)
    t = jnp.full(tokens.shape[:1], EVAL_T_MIN, jnp.float32)
    z = process.sample_forward(k_z, tokens, t)
    features = denoiser.features(model, params, z, denoiser.time_input(model.cfg, process, t),
                                 key=k_drop)
    head = denoiser.head(model, params)

    def nll(h, x, z_c, i):
      del i
      log_p = process.x_log_posterior(head(h), z_c, t)
      return -jnp.take_along_axis(log_p, x[..., None], -1)[..., 0]

    return elbo.over_position_chunks(nll, self.logits_chunk, features, tokens, z)

  def loss_at_times(self, params, batch, key, times, *, model, pad_id: int):
    """The NELBO integrand per token (prior term excluded) at each fixed t of `times`: (n,)."""
    tokens = batch["tokens"]
    counted = (tokens != pad_id).astype(jnp.float32)

    def at(t):
      k_z, k_bulk = jax.random.split(jax.random.fold_in(key, jnp.round(t * 1e6).astype(jnp.int32)))
      t_vec = jnp.full(tokens.shape[:1], t)
      z = self.process.sample_forward(k_z, tokens, t_vec)
      features = denoiser.features(model, params, z,
                                   denoiser.time_input(model.cfg, self.process, t_vec), key=k_bulk)
      head = denoiser.head(model, params)
      per_token = elbo.chunked_integrand(self.process, head, features, tokens, z, t_vec, k_bulk,
                                         self.logits_chunk)
      return jnp.sum(per_token * counted) / jnp.maximum(jnp.sum(counted), 1.0)

    return jax.lax.map(at, times)

  def sampler(self, model, opts: reverse.SamplerOptions, length: int):
    """A jitted fn(params, key, fixed_tokens, fixed_mask) -> (tokens, network calls); the
    logits are drawn in the run's `logits_chunk` unless the options choose another."""
    reverse.check_options(opts, self.process, length)
    if not opts.logits_chunk and self.logits_chunk:
      opts = dataclasses.replace(opts, logits_chunk=self.logits_chunk)
    return reverse.jit_sample(model, self.process, opts)

  def sampler_steps(self, opts: reverse.SamplerOptions, length: int) -> int:
    return opts.steps * (length // (opts.block_size or length))

  def conditions_exactly(self, model, prefixes_only: bool) -> bool:
    """Whether clamped tokens condition the sampler exactly: for the masking kernel (a real
    token is clean there), else only if the denoiser reads which positions are clean."""
    del prefixes_only
    return self.process.absorbing or model.cfg.clean_flag

  def inexact_conditioning_note(self) -> str:
    return (f"kernel {self.name!r} with a model trained without model.clean_flag reads the "
            "clamped tokens as possibly noisy ones, so the samples are not from the exact "
            "conditional (docs/design.md §5); train with model.clean_flag=True and "
            "train.prompt_rate > 0 for exact conditioning")


class Autoregressive(struct.PyTreeNode):
  """The causal baseline; its number is an exact NLL."""
  logits_chunk: int = struct.field(pytree_node=False, default=0)
  pad_in_loss: bool = struct.field(pytree_node=False, default=True)
  process = None
  is_bound = False
  perplexity_key = "perplexity"
  name = "autoregressive"

  def describe(self) -> dict:
    return {"kernel": self.name, "structure": "none", "table": "none"}

  def input_vocab_size(self, vocab_size: int) -> int:
    return vocab_size

  def what(self) -> str:
    return "exact next-token negative log-likelihood per predicted token"

  def loss_terms(self, params, batch, key, *, model, t_min: float, train: bool, pad_id: int):
    del t_min
    tokens = batch["tokens"]
    valid = batch.get("valid", jnp.ones(tokens.shape[:1], jnp.float32))
    k_drop = rng.loss_keys(key)["dropout"]         # the diffusion loss's dropout key
    features = denoiser.features(model, params, tokens, None, train=train, key=k_drop)
    head = denoiser.head(model, params)
    per_token = elbo.chunked_ar_nll(head, features, tokens, self.logits_chunk)
    summed, counted = _weights(tokens[:, 1:], valid, pad_id, self.pad_in_loss)
    return jnp.sum(per_token * summed), jnp.sum(counted)

  headline = "nll"

  def eval_terms(self, params, batch, key, *, model, pad_id: int, quantity: str = "headline"):
    if quantity not in ("headline", "nll"):
      raise UserError(f"the {quantity!r} quantity needs a diffusion model; this run is "
                      "autoregressive")
    return (*self.loss_terms(params, batch, key, model=model, t_min=0.0, train=False,
                             pad_id=pad_id), jnp.zeros(()))

  def loss_at_times(self, *args, **kwargs):
    raise UserError("the per-t loss profile needs a diffusion model; this run is autoregressive")

  def sampler(self, model, opts: reverse.SamplerOptions, length: int):
    del length
    return autoregressive.jit_sample(model, opts.temperature, opts.top_p)

  def sampler_steps(self, opts: reverse.SamplerOptions, length: int) -> int:
    return length - 1

  def conditions_exactly(self, model, prefixes_only: bool) -> bool:
    """Exact for a prompt only: a left-to-right draw never sees the clamped tokens to the
    right of the position it draws (a suffix, template text after a span)."""
    del model
    return prefixes_only

  def inexact_conditioning_note(self) -> str:
    return ("the autoregressive sampler draws left to right and does not see the clamped "
            "tokens to the right of each position it draws (a suffix or template text after "
            "a <mask:K> span), so the samples are not from the exact conditional; only a "
            "prompt conditions it exactly")


def make_objective(config, build_process):
  """The objective of `config`: autoregressive when model.causal, else the diffusion NELBO of
  the process `build_process()` returns (called only then: it may build tables)."""
  chunk, pad = config.model.logits_chunk, rows.pad_in_loss(config.data.convention)
  if config.model.causal and config.model.clean_flag:
    raise UserError("model.clean_flag is for diffusion denoisers; the autoregressive baseline "
                    "conditions on a prefix exactly already")
  return (Autoregressive(chunk, pad_in_loss=pad) if config.model.causal
          else Diffusion(build_process(), logits_chunk=chunk, pad_in_loss=pad,
                         prompt_rate=config.train.prompt_rate))


def require_diffusion(objective, command: str):
  """The process of a diffusion objective, or a one-line error for commands that need one."""
  if objective.process is None:
    raise UserError(f"{command} analyses diffusion models; this workdir is autoregressive")
  return objective.process
