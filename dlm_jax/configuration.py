"""Config validation: every mistake becomes one UserError line before compiling."""

from __future__ import annotations

import difflib
import importlib.util
import math

from ml_collections import config_dict

from dlm_jax import config_schema as base
from dlm_jax import rng
from dlm_jax.data import detokenizers, readers, rows, sources, tokenizer
from dlm_jax.errors import UserError
from dlm_jax.kernels import family, schedules
from dlm_jax.models.transformer import REMAT_POLICIES, VARIANTS

# Every choice list comes from the registry that implements it.
_CHOICES = {
    "data.source": sources.SOURCES,
    "data.mode": rows.MODES,
    "data.convention": rows.CONVENTIONS,
    "data.detokenizer": detokenizers.NAMES,
    "data.tokenizer": tuple(tokenizer.TOKENIZERS) + tokenizer.SOURCE_TOKENIZERS,
    "data.text_unit": readers.TEXT_UNITS,
    "data.tokenizer_model_type": tokenizer.SENTENCEPIECE_MODEL_TYPES,
    "kernel.name": family.KERNELS,
    "kernel.schedule": tuple(schedules.SCHEDULES),
    "kernel.global_schedule": tuple(schedules.SCHEDULES),
    "kernel.global_kind": family.GLOBAL_KINDS,
    "kernel.parameterization": family.PARAMETERIZATIONS,
    "kernel.neighbors": tuple(family.TABLES),
    "kernel.embedding_source": ("corpus", "checkpoint", "npy"),
    "optim.lr_schedule": ("constant", "cosine"),
    "model.dtype": ("bfloat16", "float16", "float32"),
    "model.remat": tuple(REMAT_POLICIES),
    "model.variant": VARIANTS,
    "eval.split": ("train", "validation"),
    "train.nonfinite": ("stop", "skip"),
}


def _leaf_paths(schema, prefix=""):
  for key in schema.keys():
    if isinstance(schema[key], config_dict.ConfigDict):
      yield from _leaf_paths(schema[key], f"{prefix}{key}.")
    else:
      yield prefix + key


def did_you_mean(path: str, schema=None) -> str:
  """' (did you mean 'optim.learning_rate'?)' for a mistyped or misplaced config key, or ''."""
  paths = list(_leaf_paths(schema if schema is not None else base.get_config()))
  last = path.rsplit(".", 1)[-1]
  same_name = [p for p in paths if p.rsplit(".", 1)[-1] == last]
  close = same_name or difflib.get_close_matches(path, paths, n=3, cutoff=0.75)
  return f" (did you mean {' or '.join(repr(p) for p in close[:3])}?)" if close else ""


def _check_schema(cfg, schema, prefix="", root=None):
  root = schema if root is None else root
  for key in cfg.keys():
    name = f"{prefix}{key}"
    if key not in schema:
      known = ", ".join(sorted(schema.keys()))
      raise UserError(f"unknown config key {name!r}{did_you_mean(name, root)} "
                      f"(known here: {known})")
    value, ref = cfg[key], schema[key]
    if isinstance(ref, config_dict.ConfigDict):
      if not isinstance(value, (config_dict.ConfigDict, dict)):
        raise UserError(f"config key {name!r} must be a group of settings, got {value!r}")
      _check_schema(value, ref, name + ".", root)
      continue
    ref_type = schema.get_type(key) if hasattr(schema, "get_type") else type(ref)
    if value is None or ref_type is type(None):
      continue
    ok = isinstance(value, ref_type) or (ref_type is float and isinstance(value, int))
    if isinstance(value, bool) and ref_type is not bool:
      ok = False
    if not ok:
      raise UserError(f"config key {name!r} must be {ref_type.__name__}, got {value!r}")


def _check_finite(cfg, prefix=""):
  """Every float option is a finite number (NaN passes every `<` test)."""
  for key, value in cfg.items():
    if isinstance(value, config_dict.ConfigDict):
      _check_finite(value, f"{prefix}{key}.")
    elif isinstance(value, float) and not math.isfinite(value):
      raise UserError(f"{prefix}{key} must be a finite number, got {value}")


def command_line_overrides() -> frozenset:
  """The config keys given on this command's line (`--config.a.b=v`), when it has a config
  flag; empty otherwise (a config built in Python)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if "config" not in flags.FLAGS or not flags.FLAGS.is_parsed():
    return frozenset()
  return frozenset(getattr(flags.FLAGS["config"], "override_values", None) or ())


def flat_source_keys():
  """(flat name, group, key) of every old flat source setting: ("hf_name", "hf", "name")."""
  return [(f"{name}_{key}", name, key) for name, defaults in base.SOURCE_DEFAULTS.items()
          for key in defaults]


def move_flat_source_keys(cfg, warn: bool = True, schema=None, overrides=None) -> None:
  """Moves a source setting given under its old flat name (data.hf_name) to its group
  (data.hf.name), with a warning; the flat names go in a later release. A flat name on the
  command line replaces the config file's grouped value (the old command lines keep their
  meaning); a flat and a grouped value that disagree otherwise are an error. `schema`: the
  config schema, when the caller has it built; `overrides`: the keys set on the command line
  (default: this command's)."""
  schema = (schema or base.get_config()).data
  overrides = command_line_overrides() if overrides is None else overrides
  for flat_key, name, key in flat_source_keys():
    flat, value = f"data.{flat_key}", cfg.data[flat_key]
    if value is None:
      continue
    grouped = cfg.data[name][key]
    flat_wins = f"data.{name}.{key}" not in overrides and (
        grouped == schema[name][key] or flat in overrides)
    if grouped != value and not flat_wins:
      raise UserError(f"{flat}={value!r} and data.{name}.{key}={grouped!r} disagree: "
                      f"set data.{name}.{key} only ({flat} is its old name)")
    cfg.data[name][key] = value
    cfg.data[flat_key] = None
    if warn:
      replaced = f" (it replaces the config file's {grouped!r})" if grouped != value else ""
      print(f"warning: {flat} is now data.{name}.{key}{replaced}; the old name goes in a "
            "later release", flush=True)


def _ignored_source_settings(cfg, schema):
  """(key, value) of each config.data setting that the selected source does not read."""
  selected = cfg.data.source
  reads = sources.REGISTRY[selected].reads
  for key in sources.SHARED_KEYS:
    if key not in reads and cfg.data[key] != schema[key]:
      yield key, cfg.data[key]
  for name in base.SOURCE_DEFAULTS:
    if name != selected:
      for key, default in schema[name].items():
        if cfg.data[name][key] != default:
          yield f"{name}.{key}", cfg.data[name][key]


def _reset(cfg, schema, key: str) -> None:
  group, _, name = key.rpartition(".")
  (cfg.data[group] if group else cfg.data)[name] = (schema[group] if group else schema)[name]


def check_source_settings(cfg, schema=None, overrides=None) -> None:
  """Refuses settings that the selected source would ignore: another source's group
  (data.hf.* under data.source='quickstart'), or a shared key it does not read
  (data.train_pattern under 'quickstart' or 'hf'). When the command line selects another
  source than the config file's, the file's settings of its own source are dropped (with a
  note); the command line's own are refused like any other."""
  schema = (schema or base.get_config()).data
  overrides = command_line_overrides() if overrides is None else overrides
  selected = cfg.data.source
  if "data.source" in overrides:
    dropped = [key for key, _ in _ignored_source_settings(cfg, schema)
               if f"data.{key}" not in overrides]
    for key in dropped:
      _reset(cfg, schema, key)
    if dropped:
      print(f"note: data.source={selected!r} from the command line: the config file's "
            f"{', '.join('data.' + k for k in dropped)} (settings of another source) do not "
            "apply", flush=True)
  for key, value in _ignored_source_settings(cfg, schema):
    if "." in key:
      name = key.split(".")[0]
      raise UserError(f"data.{key}={value!r} is ignored by data.source={selected!r}: select "
                      f"it (--config.data.source={name}) or drop data.{key}")
    users = " or ".join(f"--config.data.source={n}" for n, cls in sources.REGISTRY.items()
                        if key in cls.reads)
    raise UserError(f"data.{key}={value!r} is ignored by data.source={selected!r}: select a "
                    f"source that reads it ({users}) or drop data.{key}")


def validate_config(cfg) -> None:
  """Checks keys, types and values of a full config against the schema (old flat source
  keys are moved to their groups first)."""
  schema = base.get_config()
  _check_schema(cfg, schema)
  move_flat_source_keys(cfg, schema=schema)
  for path, choices in _CHOICES.items():
    group, key = path.split(".")
    if cfg[group][key] not in choices:
      raise UserError(f"{path}={cfg[group][key]!r} is not one of {list(choices)}")
  check_source_settings(cfg, schema)
  _check_finite(cfg)
  d, t, o, k = cfg.data, cfg.train, cfg.optim, cfg.kernel
  for name in ("b1", "b2"):
    if not 0.0 <= o[name] < 1.0:
      raise UserError(f"optim.{name} must be in [0, 1), got {o[name]}")
  if o.weight_decay < 0 or o.grad_clip < 0:
    raise UserError(f"optim.weight_decay and optim.grad_clip must be >= 0, got "
                    f"{o.weight_decay} and {o.grad_clip}")
  if not 0.0 <= cfg.model.dropout < 1.0:
    raise UserError(f"model.dropout must be in [0, 1), got {cfg.model.dropout}")
  if k.tau <= 0:
    raise UserError(f"kernel.tau must be > 0, got {k.tau}")
  if k.k < 1 or (k.name.startswith("semdlm") and d.tokenizer == "sentencepiece"
                 and k.k >= d.vocab_size):
    raise UserError(f"kernel.k={k.k} must be in [1, vocab_size={d.vocab_size})")
  for name in ("eps", "global_eps"):
    if not 0.0 <= k[name] < 1.0:
      raise UserError(f"kernel.{name} = alpha(1) must be in [0, 1), got {k[name]}")
  for name in ("power", "global_power"):
    if k[name] <= 0:
      raise UserError(f"kernel.{name} must be > 0 (alpha must decrease in t), got {k[name]}")
  embeddings_from = k.embedding_source
  if k.name.startswith("semdlm") and embeddings_from != "corpus" and not k.embedding_path:
    raise UserError(f"kernel.embedding_source={k.embedding_source!r} needs kernel.embedding_path")
  if k.bulk_samples < 0:
    raise UserError(f"kernel.bulk_samples must be >= 0, got {k.bulk_samples}")
  if d.seq_len < 2:
    raise UserError(f"data.seq_len must be >= 2, got {d.seq_len}")
  chunk = cfg.model.logits_chunk
  if chunk < 0 or (0 < chunk < d.seq_len and d.seq_len % chunk):
    raise UserError(f"model.logits_chunk={chunk} must be 0 (off) or divide data.seq_len="
                    f"{d.seq_len}")
  source = sources.build(d)
  source.check()
  owner = next((cls for cls in sources.REGISTRY.values() if cls.tokenizer_name == d.tokenizer),
               None)
  if owner is not None and owner.name != d.source:
    raise UserError(f"data.tokenizer={d.tokenizer!r} is the vocabulary of {owner.title}: it "
                    f"needs data.source={owner.name!r}, got {d.source!r}")
  own_vocab = source.vocab_size()
  if own_vocab is not None and d.vocab_size not in (own_vocab, schema.data.vocab_size):
    raise UserError(f"data.vocab_size={d.vocab_size} does not apply to {source.title} "
                    f"(data.source={d.source!r}): its vocabulary is its own (V = {own_vocab}, set "
                    f"by data.{d.source}.*); leave data.vocab_size at its default")
  if not 0.0 < d.validation_fraction < 1.0:
    raise UserError(f"data.validation_fraction must be in (0, 1), got {d.validation_fraction}")
  if d.validation_documents < 0:
    raise UserError(f"data.validation_documents must be >= 0, got {d.validation_documents}")
  if d.convention == "md4" and d.validation_pattern:
    raise UserError("data.convention='md4' holds out 2% of the rows of the training documents; "
                    "unset data.validation_pattern (or choose another convention)")
  rows.Layout.of(d).check()
  rng.check_seed(cfg.seed)
  for name in ("batch_size", "num_steps", "log_every", "eval_every", "checkpoint_every",
               "keep_checkpoints"):
    if t[name] < 1:
      raise UserError(f"train.{name} must be >= 1, got {t[name]}")
  if not 0.0 <= t.t_min < 1.0:
    raise UserError(f"train.t_min must be in [0, 1), got {t.t_min}")
  if o.grad_accum_steps < 1 or t.batch_size % o.grad_accum_steps:
    raise UserError(f"optim.grad_accum_steps={o.grad_accum_steps} must divide "
                    f"train.batch_size={t.batch_size}")
  if not 0.0 <= o.ema_decay < 1.0:
    raise UserError(f"optim.ema_decay must be in [0, 1), got {o.ema_decay}")
  if o.learning_rate <= 0:
    raise UserError(f"optim.learning_rate must be > 0, got {o.learning_rate}")
  if cfg.eval.batch_size < 1:
    raise UserError(f"eval.batch_size must be >= 1, got {cfg.eval.batch_size}")
  if not 0.0 <= t.prompt_rate <= 1.0:
    raise UserError(f"train.prompt_rate must be in [0, 1], got {t.prompt_rate}")
  _check_wandb(cfg.logging.wandb)
  if not math.isfinite(cfg.logging.print_every_seconds) or cfg.logging.print_every_seconds < 0:
    raise UserError(f"logging.print_every_seconds must be a finite number >= 0 (0: print every "
                    f"train.log_every steps), got {cfg.logging.print_every_seconds}")
  if cfg.kernel.cooc_max_tokens < 0:
    raise UserError(f"kernel.cooc_max_tokens must be >= 0 (0: every training token), got "
                    f"{cfg.kernel.cooc_max_tokens}")
  if (t.prompt_rate > 0) != cfg.model.clean_flag:
    raise UserError("model.clean_flag and train.prompt_rate > 0 go together (the flag is learned "
                    f"from rows with random clean prompt spans); got clean_flag="
                    f"{cfg.model.clean_flag}, prompt_rate={t.prompt_rate}")


WANDB_MODES = ("online", "offline")


def _check_wandb(w) -> None:
  if w.mode not in WANDB_MODES:
    raise UserError(f"logging.wandb.mode must be one of {list(WANDB_MODES)}, got {w.mode!r}")
  if w.project and importlib.util.find_spec("wandb") is None:
    raise UserError(f"logging.wandb.project={w.project!r} needs the wandb package: pip "
                    "install -e '.[wandb]' (or leave logging.wandb.project empty)")


def check_fits_mesh(cfg, mesh, process_count: int, d_model: int) -> None:
  n = mesh.devices.size
  per_step = cfg.train.batch_size // cfg.optim.grad_accum_steps
  for what, b in (("train.batch_size / optim.grad_accum_steps", per_step),
                  ("eval.batch_size", cfg.eval.batch_size)):
    if b % n or b % process_count:
      raise UserError(f"{what} = {b} must be divisible by the {n} devices of the mesh")
  if d_model % mesh.shape["fsdp"]:
    raise UserError(f"model d_model={d_model} must be divisible by mesh.fsdp={mesh.shape['fsdp']}")


def from_saved(saved: dict):
  """A config saved by a checkpoint, on top of today's defaults: keys added to the schema
  since the run was saved take their defaults (they did not exist then, so the defaults
  describe what the run did); keys that no longer exist are an error."""
  cfg = base.get_config()

  def merge(node, values, prefix=""):
    for key, value in values.items():
      if key not in node:
        raise UserError(f"the saved config has key {prefix + key!r}, unknown to this version of "
                        "dlm_jax")
      if isinstance(node[key], config_dict.ConfigDict):
        merge(node[key], value, prefix + key + ".")
      elif prefix + key == "model.remat" and isinstance(value, bool):   # before it had policies
        node[key] = "full" if value else "none"
      else:
        with node.ignore_type():
          node[key] = value
  data = dict(saved.get("data", {}))
  for flat_key, name, _ in flat_source_keys():   # runs saved with the groups kept a flat copy
    if name in data:
      data.pop(flat_key, None)
  merge(cfg, {**saved, "data": data} if "data" in saved else saved)
  move_flat_source_keys(cfg, warn=False, overrides=frozenset())   # runs saved before them
  schema = base.get_config().data
  for key, _ in list(_ignored_source_settings(cfg, schema)):   # what the run ignored
    _reset(cfg, schema, key)
  if "kernel" in saved and "parameterization" not in saved["kernel"]:
    cfg.kernel.parameterization = "mixture"    # what every run before the choice trained
  return cfg
