"""DiT-style transformer: bidirectional denoiser, or causal LM with `causal=True`.

Token embedding -> N pre-norm blocks (RoPE attention, GELU MLP), each modulated
by adaLN-zero from a time embedding -> adaLN output layer -> logits over the V
real tokens (the mask id, when there is one, is an input only: SUBS never
predicts it). Parameters are fp32; activations run in `dtype` (bf16 by
default); layer norms and the returned logits are fp32.

Two variants (`model.variant`, docs/design.md §7):
- "dlm" (default): parameter-free LayerNorms (eps 1e-6; adaLN supplies scale and shift),
  biases on every dense layer, time embedding of 1000 t.
- "mdlm": exactly the DiT of MDLM / Duo (arXiv 2406.07524, 2506.10892): LayerNorms with a
  learned weight and no bias (eps 1e-5), no bias on qkv / attn_out, and the time embedding
  reads the noise level sigma(t) = -log alpha(t) (the caller passes it: dlm_jax/denoiser.py),
  so their checkpoints load unchanged (dlm_jax/mdlm_checkpoint.py).

`features_only=True` stops before the output head and returns the final hidden states
(B, T, d_model); the `logits` method applies the head to any slice of them, so a loss can
evaluate the (B, T, V) logits one chunk of positions at a time (`dlm_jax/elbo.py`). The network
knows nothing of diffusion kernels: `dlm_jax/denoiser.py` turns diffusion times into its time
input.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dlm_jax.errors import UserError
from dlm_jax.numerics import NEG_LOGIT

# What a block keeps for the backward pass. "dots": the outputs of matmuls against
# weights (no batch dimension), so attention scores and elementwise work are recomputed;
# "full": only the block's input.
REMAT_POLICIES = {
    "none": None,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "full": jax.checkpoint_policies.nothing_saveable,
}

VARIANTS = ("dlm", "mdlm")

SIZES = {  # num_layers, d_model, num_heads
    "tiny": (4, 128, 4),
    "small": (12, 768, 12),
    "medium": (24, 1024, 16),
}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  vocab_in: int
  vocab_out: int
  num_layers: int
  d_model: int
  num_heads: int
  mlp_ratio: int = 4
  cond_dim: int = 128
  dropout: float = 0.0
  causal: bool = False
  time_conditioning: bool = False
  dtype: str = "bfloat16"
  remat: str = "none"          # none | dots | full (REMAT_POLICIES)
  variant: str = "dlm"         # dlm | mdlm (VARIANTS)
  clean_flag: bool = False     # a learned vector marks positions that hold clean prompt tokens

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads


def model_config(cfg, vocab_in: int, vocab_out: int) -> TransformerConfig:
  """Resolves `config.model` (a size preset plus optional explicit overrides)."""
  if cfg.size not in SIZES:
    raise UserError(f"unknown model.size {cfg.size!r}; expected one of {sorted(SIZES)}")
  layers, width, heads = SIZES[cfg.size]
  mc = TransformerConfig(
      vocab_in=vocab_in, vocab_out=vocab_out,
      num_layers=cfg.num_layers or layers, d_model=cfg.d_model or width,
      num_heads=cfg.num_heads or heads, mlp_ratio=cfg.mlp_ratio, cond_dim=cfg.cond_dim,
      dropout=cfg.dropout, causal=cfg.causal, time_conditioning=cfg.time_conditioning,
      dtype=cfg.dtype, remat=cfg.remat, variant=cfg.variant, clean_flag=cfg.clean_flag)
  if mc.d_model % mc.num_heads or mc.head_dim % 2:
    raise UserError(f"model.d_model={mc.d_model} must split into {mc.num_heads} heads of even size")
  if mc.remat not in REMAT_POLICIES:
    raise UserError(f"model.remat must be one of {list(REMAT_POLICIES)}, got {mc.remat!r}")
  if mc.variant not in VARIANTS:
    raise UserError(f"model.variant must be one of {list(VARIANTS)}, got {mc.variant!r}")
  if mc.dtype not in ("bfloat16", "float32", "float16"):
    raise UserError(f"model.dtype must be bfloat16, float16 or float32, got {mc.dtype!r}")
  return mc


class Dense(nn.Module):
  """y = x W + b over the trailing `n_in` axes of x, with fp32 params and logical axis names.

  The parameters have DenseGeneral's shapes (kernel: in_axes + features, bias: features);
  the product is computed as one 2-D matmul (N, in) x (in, out), the form every backend
  runs fastest in both directions (XLA:CPU runs the weight gradient of a dot with several
  contracting axes ~1.5x slower)."""
  features: tuple
  logical: tuple
  n_in: int = 1
  zero: bool = False
  use_bias: bool = True
  dtype: Any = jnp.bfloat16

  @nn.compact
  def __call__(self, x):
    init = nn.initializers.zeros_init() if self.zero else nn.initializers.normal(0.02)
    in_shape = x.shape[-self.n_in:]
    kernel = self.param("kernel", nn.with_logical_partitioning(init, self.logical),
                        in_shape + self.features, jnp.float32)
    bias = self.param("bias", nn.with_logical_partitioning(
        nn.initializers.zeros_init(), self.logical[-len(self.features):]), self.features,
        jnp.float32) if self.use_bias else None
    return _matmul(x, kernel, bias, self.n_in, self.dtype)


def _matmul(x, kernel, bias, n_in: int, dtype):
  """x (..., *in) @ kernel (*in, *out) [+ bias (*out)] as a 2-D matmul in `dtype`."""
  size_in, out_shape = math.prod(kernel.shape[:n_in]), kernel.shape[n_in:]
  x2 = x.reshape(-1, size_in).astype(dtype)
  y = x2 @ kernel.reshape(size_in, -1).astype(dtype)
  if bias is not None:
    y = y + bias.reshape(-1).astype(dtype)
  return y.reshape(x.shape[:x.ndim - n_in] + out_shape)


def _dense(features, name, logical, zero=False, axis=-1, dtype=jnp.bfloat16, use_bias=True):
  """A `Dense` named `name` (kernel axes: `logical`; `axis`: the contracted input axes)."""
  return Dense(features=(features,) if isinstance(features, int) else tuple(features),
               logical=logical, n_in=1 if isinstance(axis, int) else len(axis), zero=zero,
               use_bias=use_bias, dtype=dtype, name=name)


def layer_norm(x, eps: float = 1e-6):
  """Parameter-free LayerNorm in fp32 (adaLN, or the caller, supplies scale and shift)."""
  x32 = x.astype(jnp.float32)
  mean = x32.mean(-1, keepdims=True)
  var = jnp.square(x32 - mean).mean(-1, keepdims=True)
  return (x32 - mean) * jax.lax.rsqrt(var + eps)


class Norm(nn.Module):
  """The variant's LayerNorm before adaLN: parameter-free (dlm), or MDLM's, with a learned
  weight, no bias and eps 1e-5 (mdlm)."""
  variant: str

  @nn.compact
  def __call__(self, x):
    if self.variant == "dlm":
      return layer_norm(x)
    weight = self.param("weight", nn.with_logical_partitioning(nn.initializers.ones_init(),
                                                               ("embed",)),
                        (x.shape[-1],), jnp.float32)
    return layer_norm(x, 1e-5) * weight


def _rope(x, positions):
  """Rotary position embedding on (B, T, N, H) with rotate-half pairing."""
  half = x.shape[-1] // 2
  freqs = 1.0 / (10_000 ** (jnp.arange(half, dtype=jnp.float32) / half))
  angles = positions[:, None].astype(jnp.float32) * freqs[None, :]  # (T, half)
  sin, cos = jnp.sin(angles)[None, :, None, :], jnp.cos(angles)[None, :, None, :]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)


def timestep_embedding(t, dim: int, max_period: float = 10_000.0, scale: float = 1000.0):
  """Sinusoidal features of scale * t (DiT: t in [0, 1] times 1000; MDLM: sigma, scale 1)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = scale * t[:, None].astype(jnp.float32) * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], -1)


class Block(nn.Module):
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x, cond, deterministic: bool):
    cfg, dt = self.cfg, jnp.dtype(self.cfg.dtype)
    mod = _dense((6, cfg.d_model), "adaln", ("cond", None, "embed"), zero=True, dtype=dt)(
        nn.silu(cond))[:, None]  # (B, 1, 6, D)
    shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = [mod[:, :, i] for i in range(6)]

    bias = cfg.variant == "dlm"
    h = (Norm(cfg.variant, name="norm1")(x) * (1 + scale_a) + shift_a).astype(dt)
    qkv = _dense((3, cfg.num_heads, cfg.head_dim), "qkv", ("embed", None, "heads", "head_dim"),
                 dtype=dt, use_bias=bias)(h)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    positions = jnp.arange(x.shape[1])
    q, k = _rope(q, positions), _rope(k, positions)
    attn = jax.nn.dot_product_attention(q, k, v, is_causal=cfg.causal)
    out = _dense(cfg.d_model, "attn_out", ("heads", "head_dim", "embed"), axis=(-2, -1),
                 dtype=dt, use_bias=bias)(attn)
    out = nn.Dropout(cfg.dropout)(out, deterministic=deterministic)
    x = x + (gate_a * out).astype(x.dtype)

    h = (Norm(cfg.variant, name="norm2")(x) * (1 + scale_m) + shift_m).astype(dt)
    h = _dense(cfg.mlp_ratio * cfg.d_model, "mlp_in", ("embed", "mlp"), dtype=dt)(h)
    h = nn.gelu(h, approximate=True)
    h = _dense(cfg.d_model, "mlp_out", ("mlp", "embed"), dtype=dt)(h)
    h = nn.Dropout(cfg.dropout)(h, deterministic=deterministic)
    return x + (gate_m * h).astype(x.dtype)


class Transformer(nn.Module):
  """Maps tokens (B, T) and times t (B,) to fp32 logits (B, T, vocab_out), or to the final
  hidden states (B, T, d_model) with `features_only=True`.

  With `cfg.clean_flag`, `clean` (B, T) marks positions that hold clean tokens (a prompt):
  a learned vector is added to their embedding, so a kernel that corrupts tokens into other
  tokens can tell a given prompt token from a possibly-noisy one (None: no position is)."""
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, tokens, t=None, deterministic: bool = True, features_only: bool = False,
               clean=None):
    cfg, dt = self.cfg, jnp.dtype(self.cfg.dtype)
    if t is None or not cfg.time_conditioning:
      t = jnp.zeros((tokens.shape[0],), jnp.float32)
    embed = nn.Embed(cfg.vocab_in, cfg.d_model, dtype=dt, param_dtype=jnp.float32, name="embed",
                     embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                                 ("vocab", "embed")))
    x = embed(tokens)
    if cfg.clean_flag:
      flag = self.param("clean_embed", nn.with_logical_partitioning(
          nn.initializers.normal(0.02), ("embed",)), (cfg.d_model,), jnp.float32)
      if clean is not None:
        x = x + jnp.where(clean[..., None], flag.astype(dt), jnp.zeros((), dt))
    cond = _dense(cfg.cond_dim, "time_in", ("time", "cond"), dtype=jnp.float32)(
        timestep_embedding(t, 256, scale=1000.0 if cfg.variant == "dlm" else 1.0))
    cond = _dense(cfg.cond_dim, "time_out", ("cond", "cond_out"), dtype=jnp.float32)(nn.silu(cond))

    policy = REMAT_POLICIES[cfg.remat]
    block = Block if policy is None else nn.remat(Block, static_argnums=(3,), policy=policy)
    for i in range(cfg.num_layers):
      x = block(cfg, name=f"block_{i}")(x, cond, deterministic)

    mod = _dense((2, cfg.d_model), "final_adaln", ("cond", None, "embed"), zero=True,
                 dtype=dt)(nn.silu(cond))[:, None]
    h = (Norm(cfg.variant, name="norm_final")(x) * (1 + mod[:, :, 1]) + mod[:, :, 0]).astype(dt)
    head = _dense(cfg.vocab_out, "head", ("embed", "vocab"), zero=True, dtype=dt)
    if features_only:
      if self.is_initializing():
        head(h[:, :1])
      return h
    return head(h).astype(jnp.float32)

  def logits(self, features, columns=None):
    """The output head on final hidden states (..., d_model) (`features_only=True`): fp32
    logits, what the full forward returns at those positions (`head_logits`)."""
    return head_logits(self.variables["params"], features, self.cfg.dtype, columns)


def head_logits(params, features, dtype, columns=None):
  """The output head of `Transformer` on hidden states (..., d_model): fp32 logits, equal to
  what the full forward returns at those positions. `columns` (n,): emit the logits of these
  ids in this order instead (-1: a padding column, logit NEG_LOGIT), permuting the head's weight
  columns, not the (..., V) logits."""
  head = params["head"]
  kernel, bias = head["kernel"], head["bias"]
  if columns is not None:
    ids = jnp.where(columns >= 0, columns, 0)
    kernel, bias = jnp.take(kernel, ids, axis=1), jnp.take(bias, ids)
  logits = _matmul(features, kernel, bias, 1, jnp.dtype(dtype)).astype(jnp.float32)
  return logits if columns is None else jnp.where(columns >= 0, logits, NEG_LOGIT)
