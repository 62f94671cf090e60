"""The denoiser network as the diffusion code calls it: one place that turns a diffusion time
into the network's time input and goes through `model.apply`.

- `features`: final hidden states (B, L, d) on z_t, for losses and samplers that make logits
  one chunk of positions at a time;
- `head`: the network's output head as a function h -> logits (`Transformer.logits`), with an
  optional column order a kernel structure asks for (only the structure knows it);
- `logits`: the full forward, fp32 (B, L, V).

The network itself (`models/`) knows nothing of kernels."""

from __future__ import annotations

import jax.numpy as jnp

from dlm_jax.models.transformer import Transformer


def time_input(model_cfg, kernel, t):
  """What the network's time embedding reads for diffusion times t: t itself (dlm), or the
  noise level sigma(t) = -log alpha(t) of `kernel` (mdlm, as MDLM / Duo condition)."""
  return kernel.noise_level(t) if model_cfg.variant == "mdlm" else t


def features(model, params, z, time, *, train: bool = False, key=None, clean=None):
  """Final hidden states (B, L, d) of the network on tokens z (B, L) with time input `time`
  (B,) (`time_input`; None for a network without time conditioning); `key`: dropout;
  `clean` (B, L): positions that hold clean prompt tokens (read by models with `clean_flag`)."""
  extra = {} if clean is None else {"clean": clean}
  rngs = {} if key is None else {"dropout": key}
  return model.apply({"params": params}, z, time, deterministic=not train, rngs=rngs,
                     features_only=True, **extra)


def head(model, params):
  """h (..., d) [, columns] -> fp32 logits through the network's head (`Transformer.logits`)."""
  return lambda h, columns=None: model.apply({"params": params}, h, columns,
                                             method=Transformer.logits)


def logits(model, params, kernel, z, t, clean=None):
  """fp32 logits (B, L, V) of the denoiser on z_t at diffusion times t (B,)."""
  extra = {} if clean is None else {"clean": clean}
  return model.apply({"params": params}, z, time_input(model.cfg, kernel,
                                                       jnp.asarray(t, jnp.float32)), **extra)
