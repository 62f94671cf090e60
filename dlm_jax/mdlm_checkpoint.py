"""MDLM / Duo / BD3-LM Hugging Face checkpoints <-> dlm_jax workdirs (`python -m dlm_jax.convert`).

A checkpoint directory holds `model.safetensors` (keys prefixed `backbone.`, PyTorch
layouts: Linear weights are (out, in)) and `config.json` (MDLMConfig: vocab_size,
model_length, hidden_dim, cond_dim, n_blocks, n_heads, dropout, time_conditioning). Its
vocabulary is R real tokens plus the mask token at id R = vocab_size - 1. It loads into the
`mdlm` variant of dlm_jax's transformer (models/transformer.py), whose parameters map one
to one, except:

- the output layer's mask row is dropped (SUBS never predicts the mask; MDLM overwrites that
  logit with -inf), and written back as zeros on export;
- when this tokenizer has V > R ids (GPT-2: MDLM has 50257 real ids, dlm_jax adds PAD 50257),
  the extra ids get a zero embedding and an output bias of -1e4: never predicted, as in MDLM;
- a kernel without a mask token (uniform: Duo) drops the embedding's mask row.

All sizes come from the tensors (heads from the rotary buffer or config.json), so any
MDLM-shaped checkpoint imports.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np

from dlm_jax import experiment, numpy_files, rng, safetensors_io
from dlm_jax.checkpoint import Checkpointer, checkpoint_dir as ckpt_dir
from dlm_jax.errors import UserError
from dlm_jax.models import Transformer

NEVER_PREDICTED_BIAS = -1e4   # output bias of ids the checkpoint has no row for
ROTARY_BASE = 10_000.0


@dataclasses.dataclass(frozen=True)
class Architecture:
  """The sizes of an MDLM DiT, read from its tensors."""
  real_tokens: int            # R; the mask token is id R
  d_model: int
  num_heads: int
  num_layers: int
  cond_dim: int
  mlp_ratio: int
  model_length: int
  dropout: float
  time_conditioning: bool


def read(directory: str) -> tuple[dict, dict]:
  """(config.json as a dict, {name without 'backbone.': float32 array})."""
  paths = {n: os.path.join(directory, n) for n in ("config.json", "model.safetensors")}
  missing = [n for n, p in paths.items() if not os.path.exists(p)]
  if missing:
    raise UserError(f"{directory!r} is not an MDLM-style checkpoint directory: no "
                    f"{' or '.join(missing)}")
  hf_config = _read_config(paths["config.json"])
  tensors = {k.removeprefix("backbone."): np.asarray(v, np.float32)
             for k, v in safetensors_io.load(paths["model.safetensors"]).items()}
  if "vocab_embed.embedding" not in tensors:
    raise UserError(f"{paths['model.safetensors']} has no backbone.vocab_embed.embedding: "
                    "not an MDLM/Duo DiT checkpoint")
  _check_names(paths["model.safetensors"], tensors)
  bad = [k for k, v in tensors.items() if not np.isfinite(v).all()]
  if bad:
    raise UserError(f"{paths['model.safetensors']}: tensor {bad[0]!r} holds NaN or Inf; "
                    "refusing to import a broken model")
  return hf_config, tensors


_NUMERIC_FIELDS = ("vocab_size", "mask_index", "model_length", "n_heads", "n_blocks",
                   "hidden_dim", "hidden_size", "cond_dim", "dropout")


def _read_config(path: str) -> dict:
  """config.json as a dict, its fields typed: one-line errors for what is not."""
  try:
    with open(path, encoding="utf-8") as f:
      hf_config = json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise UserError(f"{path} is not JSON ({type(e).__name__}: {str(e)[:100]})") from None
  if not isinstance(hf_config, dict):
    raise UserError(f"{path} holds a JSON {type(hf_config).__name__}, not an object")
  for key in _NUMERIC_FIELDS:
    value = hf_config.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
      raise UserError(f"{path}: {key} must be a number, got {value!r}")
  flag = hf_config.get("time_conditioning", False)
  if not isinstance(flag, bool):
    raise UserError(f"{path}: time_conditioning must be true or false, got {flag!r}")
  return hf_config


def _block_names(i: int) -> list[str]:
  b = f"blocks.{i}"
  return [f"{b}.adaLN_modulation.weight", f"{b}.adaLN_modulation.bias", f"{b}.norm1.weight",
          f"{b}.norm2.weight", f"{b}.attn_qkv.weight", f"{b}.attn_out.weight",
          f"{b}.mlp.0.weight", f"{b}.mlp.0.bias", f"{b}.mlp.2.weight", f"{b}.mlp.2.bias"]


def _check_names(path: str, tensors: dict) -> None:
  """Every tensor of an MDLM DiT present, and nothing else (rotary_emb.inv_freq optional)."""
  blocks = sorted({k.split(".")[1] for k in tensors if k.startswith("blocks.")},
                  key=lambda i: (not i.isdigit(), int(i) if i.isdigit() else 0, i))
  if blocks != [str(i) for i in range(len(blocks))]:
    raise UserError(f"{path}: the blocks are numbered {blocks}, expected 0 .. {len(blocks) - 1}")
  expected = {"vocab_embed.embedding", "sigma_map.mlp.0.weight", "sigma_map.mlp.0.bias",
              "sigma_map.mlp.2.weight", "sigma_map.mlp.2.bias",
              "output_layer.adaLN_modulation.weight", "output_layer.adaLN_modulation.bias",
              "output_layer.norm_final.weight", "output_layer.linear.weight",
              "output_layer.linear.bias"}
  for i in range(len(blocks)):
    expected.update(_block_names(i))
  missing = sorted(expected - set(tensors))
  extra = sorted(set(tensors) - expected - {"rotary_emb.inv_freq"})
  if missing:
    raise UserError(f"{path} lacks backbone.{missing[0]} ({len(missing)} missing): not a "
                    "complete MDLM/Duo DiT checkpoint")
  if extra:
    raise UserError(f"{path} has tensors an MDLM/Duo DiT does not: backbone.{extra[0]}"
                    + (f" and {len(extra) - 1} more" if len(extra) > 1 else ""))


def architecture(hf_config: dict, tensors: dict) -> Architecture:
  rows, d_model = tensors["vocab_embed.embedding"].shape
  vocab_size = hf_config.get("vocab_size", rows)
  mask_index = hf_config.get("mask_index", vocab_size - 1)
  if rows != vocab_size or mask_index != vocab_size - 1:
    raise UserError(f"the checkpoint's embedding has {rows} rows, config.json says vocab_size="
                    f"{vocab_size} and mask_index={mask_index}; dlm_jax imports checkpoints "
                    "whose mask token is the last id")
  num_layers = len({k.split(".")[1] for k in tensors if k.startswith("blocks.")})
  if "rotary_emb.inv_freq" in tensors:
    half = tensors["rotary_emb.inv_freq"].shape[0]
    num_heads = d_model // (2 * half)
    expected = 1.0 / ROTARY_BASE ** (np.arange(0, 2 * half, 2, dtype=np.float32) / (2 * half))
    if not np.allclose(tensors["rotary_emb.inv_freq"], expected, rtol=1e-5):
      raise UserError("the checkpoint's rotary frequencies are not base 10000 over the head dim")
  else:
    num_heads = hf_config.get("n_heads")
  if not num_heads or d_model % num_heads:
    raise UserError(f"cannot tell the number of heads: config.json n_heads={num_heads}")
  if hf_config.get("n_heads", num_heads) != num_heads:
    raise UserError(f"config.json n_heads={hf_config['n_heads']} disagrees with the rotary "
                    f"buffer (head dim {d_model // num_heads})")
  return Architecture(
      real_tokens=rows - 1, d_model=d_model, num_heads=num_heads, num_layers=num_layers,
      cond_dim=tensors["sigma_map.mlp.2.weight"].shape[0],
      mlp_ratio=tensors["blocks.0.mlp.0.weight"].shape[0] // d_model,
      model_length=hf_config.get("model_length", 1024),
      dropout=float(hf_config.get("dropout", 0.1)),
      time_conditioning=hf_config.get("time_conditioning", False))


def _linear(tensors, name, shape=None, bias=True):
  """A PyTorch Linear as our Dense: kernel (in, *out) = weight.T, bias (*out)."""
  w = tensors[f"{name}.weight"].T
  out = {"kernel": w if shape is None else w.reshape(shape)}
  if bias:
    b = tensors[f"{name}.bias"]
    out["bias"] = b if shape is None else b.reshape(shape[1:])
  return out


def to_params(tensors: dict, arch: Architecture, vocab_size: int, has_mask: bool) -> dict:
  """dlm_jax parameters (numpy float32) of the `mdlm` variant for a tokenizer of `vocab_size`
  ids (>= R), from a checkpoint's tensors."""
  R, D, H = arch.real_tokens, arch.d_model, arch.num_heads
  if vocab_size < R:
    raise UserError(f"the checkpoint has {R} real tokens but this config's tokenizer has "
                    f"{vocab_size}; choose the tokenizer it was trained with")
  extra = vocab_size - R
  embedding = tensors["vocab_embed.embedding"]
  rows = [embedding[:R], np.zeros((extra, D), np.float32)] + ([embedding[R:]] if has_mask else [])
  head = tensors["output_layer.linear.weight"][:R].T
  params = {
      "embed": {"embedding": np.concatenate(rows)},
      "time_in": _linear(tensors, "sigma_map.mlp.0"),
      "time_out": _linear(tensors, "sigma_map.mlp.2"),
      "final_adaln": _linear(tensors, "output_layer.adaLN_modulation",
                             (arch.cond_dim, 2, D)),
      "norm_final": {"weight": tensors["output_layer.norm_final.weight"]},
      "head": {"kernel": np.concatenate([head, np.zeros((D, extra), np.float32)], 1),
               "bias": np.concatenate([tensors["output_layer.linear.bias"][:R],
                                       np.full((extra,), NEVER_PREDICTED_BIAS, np.float32)])},
  }
  for i in range(arch.num_layers):
    b = f"blocks.{i}"
    params[f"block_{i}"] = {
        "adaln": _linear(tensors, f"{b}.adaLN_modulation", (arch.cond_dim, 6, D)),
        "norm1": {"weight": tensors[f"{b}.norm1.weight"]},
        "norm2": {"weight": tensors[f"{b}.norm2.weight"]},
        "qkv": _linear(tensors, f"{b}.attn_qkv", (D, 3, H, D // H), bias=False),
        "attn_out": {"kernel": tensors[f"{b}.attn_out.weight"].T.reshape(H, D // H, D)},
        "mlp_in": _linear(tensors, f"{b}.mlp.0"),
        "mlp_out": _linear(tensors, f"{b}.mlp.2"),
    }
  return params


def _torch_linear(dense: dict, name: str) -> dict:
  """Our Dense (kernel (in, *out)) as a PyTorch Linear: weight (out, in), bias (out,)."""
  kernel = np.asarray(dense["kernel"], np.float32)
  out = {f"{name}.weight": np.ascontiguousarray(kernel.reshape(kernel.shape[0], -1).T)}
  if "bias" in dense:
    out[f"{name}.bias"] = np.asarray(dense["bias"], np.float32).reshape(-1)
  return out


def from_params(params, model_cfg, has_mask: bool, model_length: int) -> tuple[dict, dict]:
  """(tensors with 'backbone.' keys, config.json dict) of an `mdlm`-variant model: V real
  tokens and the mask token at id V."""
  params = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
  D, H = model_cfg.d_model, model_cfg.num_heads
  V = model_cfg.vocab_out
  embedding = params["embed"]["embedding"]
  if not has_mask:
    embedding = np.concatenate([embedding, np.zeros((1, D), np.float32)])
  head = params["head"]
  t = {"vocab_embed.embedding": embedding,
       "rotary_emb.inv_freq": (1.0 / ROTARY_BASE ** (np.arange(0, D // H, 2, dtype=np.float32)
                                                     / (D // H))).astype(np.float32),
       "output_layer.linear.weight": np.concatenate([head["kernel"].T, np.zeros((1, D),
                                                                                 np.float32)]),
       "output_layer.linear.bias": np.concatenate([head["bias"], np.zeros((1,), np.float32)]),
       "output_layer.norm_final.weight": params["norm_final"]["weight"]}
  t.update(_torch_linear(params["time_in"], "sigma_map.mlp.0"))
  t.update(_torch_linear(params["time_out"], "sigma_map.mlp.2"))
  t.update(_torch_linear(params["final_adaln"], "output_layer.adaLN_modulation"))
  for i in range(model_cfg.num_layers):
    p, b = params[f"block_{i}"], f"blocks.{i}"
    t.update(_torch_linear(p["adaln"], f"{b}.adaLN_modulation"))
    t[f"{b}.norm1.weight"] = p["norm1"]["weight"]
    t[f"{b}.norm2.weight"] = p["norm2"]["weight"]
    t.update(_torch_linear(p["qkv"], f"{b}.attn_qkv"))
    t[f"{b}.attn_out.weight"] = np.ascontiguousarray(p["attn_out"]["kernel"].reshape(D, D).T)
    t.update(_torch_linear(p["mlp_in"], f"{b}.mlp.0"))
    t.update(_torch_linear(p["mlp_out"], f"{b}.mlp.2"))
  config = {"model_type": "mdlm", "architecture": "MDLM/Duo DIT (exported by dlm_jax)",
            "vocab_size": V + 1, "mask_index": V, "model_length": model_length, "hidden_dim": D, "hidden_size": D,
            "cond_dim": model_cfg.cond_dim, "n_heads": H, "n_blocks": model_cfg.num_layers,
            "dropout": model_cfg.dropout, "time_conditioning": model_cfg.time_conditioning}
  return {f"backbone.{k}": v for k, v in t.items()}, config


# ------------------------------------------------------------------ workdirs
IMPORTABLE_KERNELS = ("masking", "uniform")     # MDLM / Duo
FIELD_TOKENIZERS = ("gpt2", "bert", "ids")


def _model_overrides(config, arch: Architecture, hf_config: dict) -> None:
  m = config.model
  m.variant, m.num_layers, m.d_model, m.num_heads = "mdlm", arch.num_layers, arch.d_model, \
      arch.num_heads
  m.cond_dim, m.mlp_ratio, m.dropout = arch.cond_dim, arch.mlp_ratio, arch.dropout
  if "time_conditioning" in hf_config:
    m.time_conditioning = arch.time_conditioning
  config.data.seq_len = arch.model_length


def field_tokenizer(real_tokens: int) -> str:
  """The tokenizer a checkpoint of R real tokens was trained with: GPT-2 BPE (50257, OWT),
  bert-base-uncased (30522, LM1B), else token ids."""
  return {50257: "gpt2", 30522: "bert"}.get(real_tokens, "ids")


def import_checkpoint(checkpoint_dir: str, workdir: str, config, tokenizer: str = "auto",
                      devices=None) -> dict:
  """Writes the checkpoint's weights as step 0 of a new workdir (params = EMA params = the
  checkpoint's; a fresh optimizer), restorable by evaluate / sample / train. `tokenizer`:
  auto (field_tokenizer) or one of FIELD_TOKENIZERS; it replaces config.data.tokenizer
  (with tokenizer ids, data.vocab_size = R). Returns a summary."""
  if config.kernel.name not in IMPORTABLE_KERNELS:
    raise UserError(f"kernel.name={config.kernel.name!r}: MDLM/Duo checkpoints import as one of "
                    f"{list(IMPORTABLE_KERNELS)}")
  if tokenizer not in ("auto",) + FIELD_TOKENIZERS:
    raise UserError(f"--tokenizer={tokenizer!r}: an imported model needs the tokenizer it was "
                    f"trained with, one of {['auto', *FIELD_TOKENIZERS]}")
  if os.path.isdir(ckpt_dir(workdir)) and os.listdir(ckpt_dir(workdir)):
    raise UserError(f"{workdir!r} already holds checkpoints; import into a new workdir")
  hf_config, tensors = read(checkpoint_dir)
  arch = architecture(hf_config, tensors)
  _model_overrides(config, arch, hf_config)
  config.data.tokenizer = field_tokenizer(arch.real_tokens) if tokenizer == "auto" else tokenizer
  if config.data.tokenizer == "ids":
    config.data.vocab_size = arch.real_tokens
  exp = experiment.build(config, workdir, devices)
  params = to_params(tensors, arch, exp.tokenizer.vocab_size, exp.process.has_mask_token)
  _check_shapes(params, exp.abstract_state.params)
  state = exp.init_state(rng.stream(config.seed, "init"))
  placed = jax.tree.map(lambda a, s: jax.device_put(a, s), params, exp.param_sharding)
  state = state.replace(params=placed, ema_params=placed)
  ckpt = Checkpointer(workdir, keep=config.train.keep_checkpoints)
  ckpt.save(0, state, None, config, {**exp.meta(), "imported_from": os.path.abspath(
      checkpoint_dir)}, exp.process_arrays())
  ckpt.close()
  return {"workdir": os.path.abspath(workdir), "step": 0, "kernel": config.kernel.name,
          "real_tokens_in_checkpoint": arch.real_tokens,
          "tokenizer_vocab_size": exp.tokenizer.vocab_size, **dataclasses.asdict(arch)}


def _check_shapes(params, abstract) -> None:
  want = jax.tree_util.tree_flatten_with_path(abstract)[0]
  got = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  for path, leaf in want:
    if path not in got or tuple(got[path].shape) != tuple(leaf.shape):
      have = got[path].shape if path in got else "nothing"
      raise UserError(f"parameter {jax.tree_util.keystr(path)}: the checkpoint gives {have}, "
                      f"the model needs {tuple(leaf.shape)}")


def export_checkpoint(workdir: str, out_dir: str, step=None, use_ema: bool = True,
                      overwrite: bool = False) -> dict:
  """Writes model.safetensors + config.json of a workdir's `mdlm`-variant model."""
  targets = [os.path.join(out_dir, n) for n in ("model.safetensors", "config.json")]
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise UserError(f"--out {out_dir!r} is a file; give a directory")
  existing = [p for p in targets if os.path.exists(p)]
  if existing and not overwrite:
    raise UserError(f"{existing[0]} exists; choose another --out or pass --overwrite")
  parent = out_dir if os.path.isdir(out_dir) else os.path.dirname(os.path.abspath(out_dir))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.access(parent, os.W_OK | os.X_OK):
    raise UserError(f"cannot write to {out_dir!r}: {parent!r} is not writable")
  exp, params, step = experiment.restore(workdir, step, use_ema)
  if exp.model.cfg.variant != "mdlm":
    raise UserError(f"the model in {workdir!r} is the {exp.model.cfg.variant!r} variant; only "
                    "model.variant='mdlm' has MDLM's layout (train with --config.model.variant=mdlm)")
  if not exp.objective.is_bound:
    raise UserError("an autoregressive workdir has no MDLM form")
  tensors, config = from_params(params, exp.model.cfg, exp.process.has_mask_token,
                                exp.config.data.seq_len)
  config["dlm_jax"] = {"workdir": os.path.abspath(workdir), "step": step,
                       "kernel": exp.process.name, "tokenizer": exp.tokenizer.kind}
  safetensors_io.save(targets[0], tensors, {"format": "pt"})
  try:
    with open(targets[1], "w", encoding="utf-8") as f:
      json.dump(config, f, indent=1)
  except OSError as e:
    raise UserError(f"could not write {targets[1]}: {e.strerror or e}") from None
  return {"out": os.path.abspath(out_dir), "step": step, "tensors": len(tensors)}


def reference_difference(workdir: str, reference: str, step=None) -> float:
  """Max |logits - reference logits| of the workdir's network (float32, time-conditioned on
  the reference's sigma, as the backbone is) on the reference's `tokens`, over the real-token
  columns (the mask column is never a prediction)."""
  ref = numpy_files.load_npz(reference, "reference", ("tokens", "sigma", "logits"))
  numpy_files.numeric(ref, reference, "reference", ("tokens", "sigma", "logits"))
  tokens, sigma, logits = ref["tokens"], ref["sigma"], ref["logits"]
  if (tokens.ndim != 2 or logits.shape[:-1] != tokens.shape or logits.shape[-1] < 2
      or sigma.shape != tokens.shape[:1]):
    raise UserError(f"reference {reference}: expected tokens (B, L), sigma (B,) and logits "
                    f"(B, L, R + 1) with R >= 1; got {tokens.shape}, {sigma.shape}, "
                    f"{logits.shape}")
  exp, params, _ = experiment.restore(workdir, step)
  if exp.model.cfg.variant != "mdlm" or not exp.objective.is_bound:
    raise UserError(f"{workdir!r} does not hold an mdlm-variant diffusion model")
  R = ref["logits"].shape[-1] - 1
  if ref["tokens"].size and not (0 <= ref["tokens"].min() and ref["tokens"].max() <= R):
    raise UserError(f"{reference}: token ids must be in [0, {R}] (the reference logits have "
                    f"{R + 1} columns, the last the mask); found {ref['tokens'].min()} .. "
                    f"{ref['tokens'].max()}")
  tokens = np.where(ref["tokens"] == R, exp.process.mask_id, ref["tokens"]).astype(np.int32)
  model = Transformer(dataclasses.replace(exp.model.cfg, time_conditioning=True,
                                          dtype="float32", dropout=0.0))
  logits = np.asarray(jax.jit(model.apply)({"params": params}, tokens,
                                           np.asarray(ref["sigma"], np.float32)))
  return float(np.abs(logits[..., :R] - ref["logits"][..., :R]).max())
