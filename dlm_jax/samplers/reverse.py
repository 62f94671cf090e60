"""Reverse-process samplers for every kernel of the family (docs/design.md §5).

One reverse step from t to s < t, per position:
  1. x ~ x_hat, the denoiser's distribution restricted to the candidates
     C(z_t) = {x : q_t(z_t | x) > 0} (after temperature, the semantic-frequency
     penalty and top-p);
  2. z_s ~ q(z_s | z_t, x) ∝ q(z_t | z_s, x) q_s(z_s | x), exactly (the process's
     `posterior_sample`, kernels/).
Drawing x and then z_s samples the model's reverse mixture sum_x x_hat(x) q(z_s | z_t, x)
exactly; nothing is O(V^2), the posterior draw is O(k) per position. Under the mean
parameterisation (the default; design.md §3) the step is p(z_s | z_t) ∝ q(z_t | z_s)
q_s(z_s | x_hat) = sum_x x_hat(x) q_t(z_t | x) q(z_s | z_t, x): the same two stages with x
drawn ∝ x_hat(x) q_t(z_t | x) (`Process.x_posterior`: one O(V) add per position).

SemDLM+ controls: with probability eta_t per position and step (the global transition)
x is drawn from the *unrestricted* full-vocabulary prediction and re-noised to level s,
z_s ~ q_s(. | x), so a position can leave its semantic basin; the semantic-frequency
penalty reweights x_hat(x) ∝ x_hat(x) exp(-rho f(x)) with
f(x) = (count of x in z_t + sum_j w_{x,j} count of N_{x,j} in z_t) / L.

Corrector (`corrector="psi"`; Duo's Psi-samplers, arXiv 2602.21185; for masking it is ReMDM's
remasking, arXiv 2503.00307): with probability c_t per position and step the posterior draw
z_s ~ q(. | z_t, x) is replaced by a re-noising of the same x to the forward marginal,
z_s ~ q_s(. | x). x is a draw of the model's posterior over clean tokens given z_t, so with an
exact denoiser both halves map the marginal q_t to q_s and so does their mixture: the step
keeps the marginals while the re-noising revisits tokens already decided (repair). The same
x serves both halves: one network call per step. c_t (`corrector_share`): `constant` c_t =
corrector_eta; `remdm` c_t = corrector_eta / (1 - alpha_s), so that a clean token is re-noised
with probability corrector_eta (ReMDM's sigma); `remdm_capped` caps that sigma at
(1 - alpha_s) / alpha_t; c_t is 0 outside t in (corrector_t_min, corrector_t_max].

Masking extras: MDLM's cache (no network call when nothing changed and the model is not
time-conditioned), unmasking-size laws (`samplers.unmasking`), semi-autoregressive
blocks. Every loop is one `lax.scan` inside one jit; float64 sampling runs the whole
sampler under `jax.enable_x64` with the network itself still in its own dtype.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from dlm_jax.errors import UserError
from dlm_jax import denoiser, parallel
from dlm_jax.samplers import unmasking

ETA_SCHEDULES = ("constant", "linear")
CORRECTORS = ("none", "psi")
CORRECTOR_MODES = ("constant", "remdm", "remdm_capped")


@dataclasses.dataclass(frozen=True)
class SamplerOptions:
  steps: int = 128                # reverse steps (per block with block_size > 0)
  temperature: float = 1.0
  top_p: float = 1.0              # nucleus sampling of x_hat (1: off)
  eta: float = 0.0                # SemDLM+ global transition probability (scale)
  eta_schedule: str = "constant"  # constant: eta_t = eta; linear: eta_t = eta * t
  rho: float = 0.0                # SemDLM+ semantic-frequency penalty
  unmasking: str = "ancestral"    # masking kernel: ancestral (binomial) | fixed | random
                                  # | confidence | margin | entropy | threshold (unmasking.py)
  threshold: float = 0.9          # unmasking=threshold: reveal where p(drawn token) >= this
  block_size: int = 0             # semi-autoregressive blocks (0: the whole sequence at once)
  cache: bool = True              # masking kernel, time-independent denoiser: skip unchanged steps
  logits_chunk: int = 0           # > 0: logits made and drawn this many positions at a time
                                  # (never B x L x V at once; the same samples as 0)
  float64: bool = False           # sample in float64 (float32 Gumbel noise is truncated)
  corrector: str = "none"         # psi: predictor-corrector steps that keep the marginals
  corrector_mode: str = "constant"  # how the corrector's share c_t follows t (corrector_share)
  corrector_eta: float = 0.1      # constant: c_t; remdm*: the re-noising probability sigma
  corrector_t_min: float = 0.0    # the corrector acts for t in (t_min, t_max]
  corrector_t_max: float = 1.0


MAX_STEPS = 2**31 - 1          # the step counter is an int32 in the jitted loop
MIN_TEMPERATURE = 1e-3         # logits / temperature stay finite in float32 (|logit| < 3e35)


def check_values(opts: SamplerOptions):
  """Raises UserError for option values that no process can run (checked before any work)."""
  for name in ("temperature", "top_p", "eta", "rho", "threshold"):
    if not math.isfinite(getattr(opts, name)):
      raise UserError(f"{name} must be a finite number, got {getattr(opts, name)}")
  if not 1 <= opts.steps <= MAX_STEPS:
    raise UserError(f"steps must be in [1, {MAX_STEPS}], got {opts.steps}")
  if opts.logits_chunk < 0:
    raise UserError(f"logits_chunk must be >= 0, got {opts.logits_chunk}")
  if opts.temperature < MIN_TEMPERATURE:
    raise UserError(f"temperature must be >= {MIN_TEMPERATURE:g} (below, logits / temperature "
                    f"overflow float32), got {opts.temperature}")
  if not 0 < opts.top_p <= 1:
    raise UserError(f"top_p must be in (0, 1], got {opts.top_p}")
  if not 0 <= opts.eta <= 1:
    raise UserError(f"eta must be in [0, 1], got {opts.eta}")
  if opts.eta_schedule not in ETA_SCHEDULES:
    raise UserError(f"eta_schedule must be one of {list(ETA_SCHEDULES)}, got "
                    f"{opts.eta_schedule!r}")
  if opts.rho < 0:
    raise UserError(f"rho must be >= 0, got {opts.rho}")
  if not 0 < opts.threshold <= 1:
    raise UserError(f"threshold must be in (0, 1], got {opts.threshold}")
  if opts.unmasking not in unmasking.LAWS:
    raise UserError(f"unmasking must be one of {list(unmasking.LAWS)}, got {opts.unmasking!r}")
  if opts.block_size < 0:
    raise UserError(f"block_size must be >= 0, got {opts.block_size}")
  for name in ("corrector_eta", "corrector_t_min", "corrector_t_max"):
    if not (math.isfinite(getattr(opts, name)) and 0 <= getattr(opts, name) <= 1):
      raise UserError(f"{name} must be in [0, 1], got {getattr(opts, name)}")
  if opts.corrector not in CORRECTORS:
    raise UserError(f"corrector must be one of {list(CORRECTORS)}, got {opts.corrector!r}")
  if opts.corrector_mode not in CORRECTOR_MODES:
    raise UserError(f"corrector_mode must be one of {list(CORRECTOR_MODES)}, got "
                    f"{opts.corrector_mode!r}")
  if opts.corrector_t_min >= opts.corrector_t_max:
    raise UserError(f"corrector_t_min ({opts.corrector_t_min}) must be below corrector_t_max "
                    f"({opts.corrector_t_max})")


def check_options(opts: SamplerOptions, process, length: int):
  """Raises UserError for options that cannot run with this process and length."""
  check_values(opts)
  if opts.unmasking != "ancestral":
    if not process.absorbing:
      raise UserError(f"unmasking={opts.unmasking!r} needs the masking kernel; this model uses "
                      f"{process.name!r} (use unmasking='ancestral')")
    if opts.eta > 0:
      raise UserError("eta > 0 re-noises revealed tokens; it needs unmasking='ancestral'")
    if opts.corrector != "none":
      raise UserError(f"corrector={opts.corrector!r} re-noises revealed tokens; it needs "
                      "unmasking='ancestral'")
  if opts.block_size < 0 or (opts.block_size and length % opts.block_size):
    raise UserError(f"block_size={opts.block_size} must be 0 or divide the length {length}")


# ---------------------------------------------------------------------------- step pieces
def _top_p(logits, top_p):
  probs = jax.nn.softmax(logits, -1)
  sorted_p = -jnp.sort(-probs, -1)
  keep = jnp.cumsum(sorted_p, -1) - sorted_p < top_p          # smallest set reaching top_p
  threshold = jnp.min(jnp.where(keep, sorted_p, jnp.inf), -1, keepdims=True)
  return jnp.where(probs >= threshold, logits, -jnp.inf)


def draw_tokens(key, logits, allowed, top_p: float = 1.0, gumbel=None, tilt=None):
  """x ~ softmax(logits) restricted to `allowed`, optionally nucleus-truncated, then times
  exp(tilt) (Gumbel-max).

  `gumbel`: noise to reuse. Two draws that share it are each exact; SemDLM+ uses one of the
  two per position (chosen by an independent coin), so sharing it is exact and saves a pass.
  """
  logits = jnp.where(allowed, logits, -jnp.inf)
  if top_p < 1.0:
    logits = _top_p(logits, top_p)
  if tilt is not None:
    logits = logits + tilt.astype(logits.dtype)
  if gumbel is None:
    gumbel = jax.random.gumbel(key, logits.shape, logits.dtype)
  return jnp.argmax(logits + gumbel, axis=-1)


def position_gumbel(key, batch: int, positions, vocab: int, dtype):
  """Gumbel noise (B, P, V) for the given positions, drawn per position: a position gets the
  same noise whichever chunk of positions it is drawn in (chunked == unchunked sampling)."""
  noise = jax.vmap(lambda p: jax.random.gumbel(jax.random.fold_in(key, p), (batch, vocab),
                                               dtype))(positions)
  return jnp.swapaxes(noise, 0, 1)


def draw(process, opts: SamplerOptions, key, z, logits, t, penalty, positions):
  """The per-position half of a step, on any chunk of positions: z (B, P), logits (B, P, V).

  Returns x ~ x_hat restricted to C(z_t); with eta > 0 the unrestricted draw for the global
  transition (the same noise: one of the two is used per position, by an independent coin);
  for the ordered unmasking laws each drawn token's confidence. `penalty`: the frequency
  penalty f (B, V) of the whole sequence, or None."""
  scores = logits / opts.temperature
  if penalty is not None:
    scores = scores - opts.rho * penalty.astype(scores.dtype)[:, None, :]
  gumbel = position_gumbel(key, z.shape[0], positions, scores.shape[-1], scores.dtype)
  # Mean form: p(z_s | z_t) ∝ q(z_t | z_s) q_s(z_s | x_hat) is the posterior step from an x
  # drawn ∝ x_hat(x) q_t(z_t | x) (design.md §5); the mixture form draws x ~ x_hat.
  allowed, tilt = process.x_posterior(z, t)
  x = draw_tokens(None, scores, allowed, opts.top_p, gumbel, tilt)
  x_glob = draw_tokens(None, scores, True, opts.top_p, gumbel) if opts.eta > 0 else None
  confidence = (unmasking.confidence_scores(opts.unmasking, scores, x)
                if opts.unmasking in unmasking.ORDERED_LAWS else None)
  return x, x_glob, confidence


def corrector_share(process, opts: SamplerOptions, t, s):
  """c_t, the probability per position that the step from t to s re-noises x to q_s(. | x)
  in place of the posterior draw (module docstring); 0 without a corrector."""
  if opts.corrector == "none":
    return 0.0
  eta = opts.corrector_eta
  if opts.corrector_mode == "constant":
    share = jnp.asarray(eta, jnp.result_type(t))
  else:
    alpha_t, alpha_s = process.alpha(t), process.alpha(s)
    noisy_s = 1.0 - alpha_s
    sigma = eta
    if opts.corrector_mode == "remdm_capped":
      sigma = jnp.where(alpha_t > 0, jnp.minimum(eta, noisy_s / jnp.where(alpha_t > 0, alpha_t,
                                                                           1.0)), eta)
    share = jnp.where(noisy_s > 0, jnp.minimum(sigma / jnp.where(noisy_s > 0, noisy_s, 1.0),
                                               1.0), 0.0)
  return jnp.where((t > opts.corrector_t_min) & (t <= opts.corrector_t_max), share, 0.0)


def transition(process, opts: SamplerOptions, key, z, drawn, t, s, reveal=None):
  """The other half: z_t -> z_s (B, L) given the draws of `draw` for every position."""
  x, x_glob, confidence = drawn
  k_post, k_eta, k_fwd = jax.random.split(key, 3)
  if reveal is None:
    z_next = process.posterior_sample(k_post, z, x, t, s)
  else:
    if callable(reveal):
      reveal = reveal(x, confidence)
    z_next = jnp.where((z == process.mask_id) & reveal, x, z)
  if opts.corrector != "none":     # keys of their own: corrector="none" draws as before
    k_coin, k_renoise = jax.random.split(jax.random.fold_in(key, 1))
    renoised = process.sample_forward(k_renoise, x, jnp.full((z.shape[0],), s))
    share = corrector_share(process, opts, t, s)
    z_next = jnp.where(jax.random.uniform(k_coin, z.shape) < share, renoised, z_next)
  if opts.eta > 0:
    eta_t = opts.eta * (t if opts.eta_schedule == "linear" else 1.0)
    renoised = process.sample_forward(k_fwd, x_glob, jnp.full((z.shape[0],), s))
    z_next = jnp.where(jax.random.uniform(k_eta, z.shape) < eta_t, renoised, z_next)
  return z_next


def reverse_step(process, opts: SamplerOptions, key, z, logits, t, s, reveal=None):
  """One step z_t -> z_s of the model's reverse process for scalar times s < t.

  logits: (B, L, V) denoiser output (any float dtype; the draws run in logits.dtype).
  reveal: for the masking unmasking laws, the (B, L) positions to reveal by the end of this
  step, or a function (x, confidence) -> those positions (the ordered laws choose by the
  drawn tokens' confidence); None: the exact ancestral posterior.
  """
  k_draw, k_rest = jax.random.split(key)
  penalty = process.frequency_penalty(z) if opts.rho > 0 else None
  drawn = draw(process, opts, k_draw, z, logits, t, penalty, jnp.arange(z.shape[1]))
  return transition(process, opts, k_rest, z, drawn, t, s, reveal)


# ---------------------------------------------------------------------------- the loop
def sample(params, key, fixed_tokens, fixed_mask, *, model, process, opts: SamplerOptions):
  """Generates (B, L) tokens. Positions where `fixed_mask` is True keep `fixed_tokens`
  (prefix prompts, infilling). Returns (tokens, network evaluations per sequence).

  A model with `clean_flag` is told which positions are fixed, so its x_hat is the
  conditional posterior given clean tokens there: exact conditioning for every process. A
  model without it reads a fixed token as a possibly-noisy z_t, which is exact only for the
  masking kernel (a real token is clean there); docs/design.md §5."""
  batch, length = fixed_tokens.shape
  ftype = jnp.float64 if opts.float64 else jnp.float32
  block = opts.block_size or length
  times = jnp.linspace(1.0, 0.0, opts.steps + 1, dtype=ftype)
  cache = opts.cache and process.cacheable and not model.cfg.time_conditioning
  position = jnp.arange(length)
  clean = fixed_mask if model.cfg.clean_flag else None
  chunk = position_chunk(length, opts.logits_chunk)
  head = denoiser.head(model, params)

  def network(z, t):
    """The denoiser's output on z_t: logits (B, L, V), or with chunks the final hidden states
    (B, L, d), from which each chunk's logits are made when it is drawn."""
    z, t = z.astype(jnp.int32), jnp.full((batch,), t, jnp.float32)
    if chunk:
      return denoiser.features(model, params, z, denoiser.time_input(model.cfg, process, t),
                               clean=clean)
    return denoiser.logits(model, params, process, z, t, clean).astype(ftype)

  def step(key, z, out, t, s, reveal):
    if not chunk:
      return reverse_step(process, opts, key, z, out, t, s, reveal)
    k_draw, k_rest = jax.random.split(key)
    penalty = process.frequency_penalty(z) if opts.rho > 0 else None

    def one_chunk(c):           # never more than (B, chunk, V) logits at once
      part = lambda a: jax.lax.dynamic_slice_in_dim(a, c * chunk, chunk, 1)
      logits = head(part(out)).astype(ftype)
      return draw(process, opts, k_draw, part(z), logits, t, penalty,
                  c * chunk + jnp.arange(chunk))
    drawn = jax.lax.map(one_chunk, jnp.arange(length // chunk))
    drawn = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1).reshape(batch, length), drawn)
    return transition(process, opts, k_rest, z, drawn, t, s, reveal)

  def run_block(carry, b):
    z, nfe, key = carry
    key, k_plan, k_steps = jax.random.split(key, 3)
    active = (position // block == b)[None, :] & ~fixed_mask
    plan = None
    to_reveal = active & (z == process.mask_id)
    if opts.unmasking != "ancestral":
      plan = unmasking.plan(opts.unmasking, k_plan, process, times, to_reveal)

    def reveal_at(z, i):
      if plan is None:
        return None
      if opts.unmasking not in unmasking.ORDERED_LAWS:
        return plan.reveal(i)
      masked = active & (z == process.mask_id)
      return lambda x, confidence: unmasking.ordered_reveal(
          opts.unmasking, confidence, masked, plan.revealed[:, i], to_reveal.sum(-1),
          opts.threshold, i == opts.steps - 1)

    def body(carry, i):
      z, out, stale, nfe = carry
      t, s = times[i], times[i + 1]
      if cache:                  # the carried output is reused while nothing changed
        out = jax.lax.cond(stale, lambda: network(z, t), lambda: out)
        nfe = nfe + stale.astype(jnp.int32)
      else:
        out, nfe = network(z, t), nfe + 1
      z_next = step(jax.random.fold_in(k_steps, i), z, out, t, s, reveal_at(z, i))
      z_next = jnp.where(active, z_next, z)
      return (z_next, out if cache else None, jnp.any(z_next != z), nfe), None

    out0 = (jax.eval_shape(network, z, times[0]) if cache else None)
    out0 = None if out0 is None else jnp.zeros(out0.shape, out0.dtype)
    (z, _, _, nfe), _ = jax.lax.scan(body, (z, out0, jnp.array(True), nfe),
                                     jnp.arange(opts.steps))
    return (z, nfe, key), None

  k_prior, key = jax.random.split(key)
  z = jnp.where(fixed_mask, fixed_tokens, process.sample_prior(k_prior, (batch, length)))
  (z, nfe, _), _ = jax.lax.scan(run_block, (z, jnp.array(0), key), jnp.arange(length // block))
  return z, nfe


def position_chunk(length: int, chunk: int) -> int:
  """Positions per chunk of logits when sampling: the largest divisor of `length` that is at
  most `chunk`; 0 (all at once) when `chunk` is 0 or covers the length."""
  if chunk <= 0 or chunk >= length:
    return 0
  return max(d for d in range(1, chunk + 1) if length % d == 0)


def jit_sample(model, process, opts: SamplerOptions):
  """A jitted `sample(params, key, fixed_tokens, fixed_mask)`; the process enters the jit as
  an argument (its tables are not constants of the executable); float64 runs under x64."""
  fn = jax.jit(lambda process, *args: sample(*args, model=model, process=process, opts=opts))
  x64 = (lambda: jax.enable_x64(True)) if opts.float64 else None
  return parallel.BoundFirst(fn, process, x64)
