"""GPT-2 in Flax, loaded from a Hugging Face directory (`config.json` + `model.safetensors`).

The judge of generative perplexity in the MDLM / Duo / SEDD papers is GPT-2 large. This is
that network, numerically the `transformers` GPT2LMHeadModel forward (pre-LayerNorm blocks,
learned positions, fused qkv, tied output embedding), for any size: the sizes are read from
`config.json`. Inference only (no dropout); parameters and activations in float32 unless a
dtype is asked for.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax import safetensors_io
from dlm_jax.errors import UserError
from dlm_jax.models.transformer import layer_norm

_ACTIVATIONS = {
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "relu": jax.nn.relu,
}


@dataclasses.dataclass(frozen=True)
class GPT2Config:
  vocab_size: int
  n_positions: int
  n_embd: int
  n_layer: int
  n_head: int
  n_inner: int
  activation: str = "gelu_new"
  layer_norm_epsilon: float = 1e-5
  scale_attn_weights: bool = True
  scale_attn_by_inverse_layer_idx: bool = False
  eos_token_id: int = 50256
  dtype: str = "float32"

  @classmethod
  def from_hf(cls, hf: dict, dtype: str = "float32") -> "GPT2Config":
    if hf.get("model_type", "gpt2") != "gpt2":
      raise UserError(f"judge config.json has model_type {hf.get('model_type')!r}; only GPT-2 "
                      "checkpoints (model_type 'gpt2') can be loaded as a judge")
    if hf.get("reorder_and_upcast_attn"):
      raise UserError("GPT-2 with reorder_and_upcast_attn=True is not supported")
    act = hf.get("activation_function", "gelu_new")
    if act not in _ACTIVATIONS:
      raise UserError(f"GPT-2 activation_function {act!r} is not supported; "
                      f"expected one of {sorted(_ACTIVATIONS)}")
    required = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")
    bad = [k for k in required if isinstance(hf.get(k), bool) or not isinstance(hf.get(k), int)]
    if bad:
      raise UserError(f"judge config.json lacks an integer {bad[0]!r}: not a GPT-2 config "
                      f"(a GPT-2 config has {', '.join(required)})")
    d = hf["n_embd"]
    return cls(vocab_size=hf["vocab_size"], n_positions=hf["n_positions"], n_embd=d,
               n_layer=hf["n_layer"], n_head=hf["n_head"], n_inner=hf.get("n_inner") or 4 * d,
               activation=act, layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-5),
               scale_attn_weights=hf.get("scale_attn_weights", True),
               scale_attn_by_inverse_layer_idx=hf.get("scale_attn_by_inverse_layer_idx", False),
               eos_token_id=hf.get("eos_token_id", 50256), dtype=dtype)


class _Linear(nn.Module):
  """HF's Conv1D: y = x W + b with W stored (in, out)."""
  features: int
  dtype: str

  @nn.compact
  def __call__(self, x):
    w = self.param("weight", nn.initializers.normal(0.02), (x.shape[-1], self.features))
    b = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    dt = jnp.dtype(self.dtype)
    return x.astype(dt) @ w.astype(dt) + b.astype(dt)


class _LayerNorm(nn.Module):
  eps: float

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    w = self.param("weight", nn.initializers.ones_init(), (d,))
    b = self.param("bias", nn.initializers.zeros_init(), (d,))
    return layer_norm(x, self.eps) * w + b


class _Block(nn.Module):
  cfg: GPT2Config
  layer: int

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    B, T, D = x.shape
    hd = D // cfg.n_head
    qkv = _Linear(3 * D, cfg.dtype, name="c_attn")(_LayerNorm(cfg.layer_norm_epsilon,
                                                               name="ln_1")(x))
    q, k, v = jnp.split(qkv.reshape(B, T, 3, cfg.n_head, hd).astype(jnp.float32), 3, axis=2)
    scale = (1.0 / math.sqrt(hd)) if cfg.scale_attn_weights else 1.0
    if cfg.scale_attn_by_inverse_layer_idx:
      scale /= self.layer + 1
    attn = jax.nn.dot_product_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0], scale=scale,
                                        is_causal=True)
    x = x + _Linear(D, cfg.dtype, name="attn_c_proj")(attn.reshape(B, T, D)).astype(jnp.float32)
    h = _LayerNorm(cfg.layer_norm_epsilon, name="ln_2")(x)
    h = _ACTIVATIONS[cfg.activation](_Linear(cfg.n_inner, cfg.dtype, name="c_fc")(h))
    return x + _Linear(D, cfg.dtype, name="mlp_c_proj")(h).astype(jnp.float32)


class GPT2(nn.Module):
  """tokens (B, T) -> float32 logits (B, T, vocab_size); T <= n_positions."""
  cfg: GPT2Config

  @nn.compact
  def __call__(self, tokens):
    cfg = self.cfg
    wte = self.param("wte", nn.initializers.normal(0.02), (cfg.vocab_size, cfg.n_embd))
    wpe = self.param("wpe", nn.initializers.normal(0.01), (cfg.n_positions, cfg.n_embd))
    x = wte[tokens] + wpe[jnp.arange(tokens.shape[1])][None]
    for i in range(cfg.n_layer):
      x = _Block(cfg, i, name=f"h_{i}")(x)
    x = _LayerNorm(cfg.layer_norm_epsilon, name="ln_f")(x)
    dt = jnp.dtype(cfg.dtype)
    return (x.astype(dt) @ wte.T.astype(dt)).astype(jnp.float32)


# Hugging Face name (after "transformer.h.<i>.") -> (our module, parameter).
_BLOCK_KEYS = {
    "ln_1.weight": ("ln_1", "weight"), "ln_1.bias": ("ln_1", "bias"),
    "attn.c_attn.weight": ("c_attn", "weight"), "attn.c_attn.bias": ("c_attn", "bias"),
    "attn.c_proj.weight": ("attn_c_proj", "weight"), "attn.c_proj.bias": ("attn_c_proj", "bias"),
    "ln_2.weight": ("ln_2", "weight"), "ln_2.bias": ("ln_2", "bias"),
    "mlp.c_fc.weight": ("c_fc", "weight"), "mlp.c_fc.bias": ("c_fc", "bias"),
    "mlp.c_proj.weight": ("mlp_c_proj", "weight"), "mlp.c_proj.bias": ("mlp_c_proj", "bias"),
}


def params_from_hf(tensors: dict, cfg: GPT2Config) -> dict:
  """Our parameter tree from the safetensors dict of a GPT2LMHeadModel or GPT2Model."""
  tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()}
  missing = [k for k in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias")
             if k not in tensors]
  if missing:
    raise UserError(f"not a GPT-2 checkpoint: no {', '.join(missing)} in model.safetensors")
  params = {"wte": tensors["wte.weight"], "wpe": tensors["wpe.weight"],
            "ln_f": {"weight": tensors["ln_f.weight"], "bias": tensors["ln_f.bias"]}}
  for i in range(cfg.n_layer):
    block = {}
    for hf_name, (module, name) in _BLOCK_KEYS.items():
      key = f"h.{i}.{hf_name}"
      if key not in tensors:
        raise UserError(f"GPT-2 checkpoint has no {key!r} (config.json says n_layer={cfg.n_layer})")
      block.setdefault(module, {})[name] = tensors[key]
    params[f"h_{i}"] = block
  expected = jax.eval_shape(lambda: GPT2(cfg).init(jax.random.key(0),
                                                   jnp.zeros((1, 1), jnp.int32)))["params"]
  for path, want in jax.tree_util.tree_leaves_with_path(expected):
    got = params
    for p in path:
      got = got[p.key]
    if tuple(got.shape) != tuple(want.shape):
      raise UserError(f"GPT-2 parameter {jax.tree_util.keystr(path)} has shape {got.shape}; "
                      f"config.json implies {want.shape}")
  return jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float32)), params)


def load(directory: str, dtype: str = "float32"):
  """(GPT2 module, params) from a Hugging Face GPT-2 directory."""
  config_path = os.path.join(directory, "config.json")
  if not os.path.exists(config_path):
    raise UserError(f"no config.json in {directory!r}: expected a Hugging Face GPT-2 directory "
                    "(config.json + model.safetensors)")
  try:
    with open(config_path, encoding="utf-8") as f:
      hf = json.load(f)
  except ValueError as e:
    raise UserError(f"{config_path} is not JSON ({str(e)[:100]})") from None
  if not isinstance(hf, dict):
    raise UserError(f"{config_path} holds a JSON {type(hf).__name__}, not a GPT-2 config")
  cfg = GPT2Config.from_hf(hf, dtype)
  model = GPT2(cfg)
  return model, params_from_hf(safetensors_io.load(os.path.join(directory, "model.safetensors")),
                               cfg)
