"""Shared helpers of the absl entry points: running a command, the sampler flags that
`sample`, `evaluate` and `analysis.tune_sampler` share, config-override checks. This is the
only library module that defines flags (inside functions the commands call)."""

from __future__ import annotations

import sys

from absl import flags, logging

from dlm_jax import distributed, rng
from dlm_jax.errors import UserError
from dlm_jax.samplers import reverse, unmasking


def quiet_logging():
  """Orbax and grain log every save at INFO; keep stdout for our output unless asked."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def run(program: str, fn, *args, **kwargs):
  """Starts the multi-controller runtime when asked (--coordinator_address or --distributed),
  then calls fn; a UserError (or a non-finite training step's FloatingPointError, which names
the step and the last good checkpoint) becomes one line on stderr and exit status 1."""
  quiet_logging()
  try:
    distributed.initialize_from_flags()
    return fn(*args, **kwargs)
  except (UserError, FloatingPointError) as e:   # the latter: a non-finite training step
    sys.exit(f"{program}: error: {e}")


def define_sampler_flags(steps: bool = True):
  if steps:
    flags.DEFINE_integer("steps", 128, "Reverse steps T (per block with --block_size).")
  flags.DEFINE_integer("length", None, "Sequence length (default: data.seq_len).")
  flags.DEFINE_string("prompt", None, "Text prefix.")
  flags.DEFINE_string("suffix", None, "Text fixed at the end of the sequence (infilling).")
  flags.DEFINE_float("temperature", 1.0, "Softmax temperature.")
  flags.DEFINE_float("top_p", 1.0, "Nucleus sampling of the denoiser (1: off).")
  flags.DEFINE_float("eta", 0.0, "SemDLM+ global transition probability per position and step.")
  flags.DEFINE_enum("eta_schedule", "constant", list(reverse.ETA_SCHEDULES),
                    "eta_t = eta (constant) or eta * t (linear).")
  flags.DEFINE_float("rho", 0.0, "SemDLM+ semantic-frequency penalty.")
  flags.DEFINE_enum("unmasking", "ancestral", list(unmasking.LAWS),
                    "Unmasking law (masking kernel): sizes, and random or confidence order.")
  flags.DEFINE_float("threshold", 0.9, "--unmasking=threshold: reveal every position whose "
                     "drawn token has at least this probability (at least one per step).")
  flags.DEFINE_enum("corrector", "none", list(reverse.CORRECTORS),
                    "psi: predictor-corrector steps that keep the marginals (Duo's "
                    "Psi-samplers; ReMDM's remasking for masking): per position and step, w.p. "
                    "c_t re-noise the drawn x to q_s(.|x) in place of the posterior draw.")
  flags.DEFINE_enum("corrector_mode", "constant", list(reverse.CORRECTOR_MODES),
                    "c_t = --corrector_eta (constant); remdm: a clean token is re-noised w.p. "
                    "--corrector_eta (c_t = eta / (1 - alpha_s)); remdm_capped: that eta "
                    "capped at (1 - alpha_s) / alpha_t.")
  flags.DEFINE_float("corrector_eta", 0.1, "The corrector's strength (see --corrector_mode).")
  flags.DEFINE_float("corrector_t_min", 0.0, "The corrector acts for t in (t_min, t_max].")
  flags.DEFINE_float("corrector_t_max", 1.0, "The corrector acts for t in (t_min, t_max].")
  flags.DEFINE_integer("block_size", 0, "Semi-autoregressive block length (0: off).")
  flags.DEFINE_bool("no_cache", False, "Call the network at every step.")
  flags.DEFINE_bool("float64", False, "Sample in float64.")
  flags.DEFINE_integer("batch_size", 16, "Samples generated per jitted call.")
  flags.DEFINE_integer("seed", 0, "Random seed: sampling; in evaluate every mode (without it the "
                       "NELBO modes use 1234, the Monte Carlo draws of earlier reports).")


SAMPLER_FLAGS = ("steps", "length", "prompt", "suffix", "temperature", "top_p", "eta",
                 "eta_schedule", "rho", "unmasking", "threshold", "corrector", "corrector_mode",
                 "corrector_eta", "corrector_t_min", "corrector_t_max", "block_size",
                 "no_cache", "float64", "batch_size", "seed")


def flag_values(f, names) -> dict:
  """{name: value} of the flags in `names` that this command defines: what an output file's
  name hashes and its JSON lists."""
  return {name: f[name].value for name in names if name in f}


def sampler_options(f, steps=None, program: str = "dlm_jax.sample") -> reverse.SamplerOptions:
  """SamplerOptions from the flags of `define_sampler_flags`; values no process can run, or
  a seed out of range, are one line on stderr (exit 1) before any work."""
  opts = reverse.SamplerOptions(
      steps=steps or f.steps, temperature=f.temperature, top_p=f.top_p, eta=f.eta,
      eta_schedule=f.eta_schedule, rho=f.rho, unmasking=f.unmasking, threshold=f.threshold,
      block_size=f.block_size, cache=not f.no_cache, float64=f.float64,
      corrector=f.corrector, corrector_mode=f.corrector_mode, corrector_eta=f.corrector_eta,
      corrector_t_min=f.corrector_t_min, corrector_t_max=f.corrector_t_max)
  run(program, reverse.check_values, opts)
  run(program, rng.check_seed, f.seed, "--seed")
  if f.length is not None and f.length < 1:
    sys.exit(f"{program}: error: --length must be >= 1 (omit it for the trained seq_len), "
             f"got {f.length}")
  return opts


def unknown_override(argv) -> str | None:
  """The first `--config.a.b=v` override naming a key that the config schema does not define."""
  from dlm_jax import config_schema  # pylint: disable=g-import-not-at-top
  schema = config_schema.get_config()
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    path = arg[len("--config."):].split("=", 1)[0]
    node = schema
    for part in path.split("."):
      if not hasattr(node, "keys") or part not in node:
        return path
      node = node[part]
  return None


HELP_FLAGS = ("--help", "-help", "-h", "-?", "--helpshort")


def command_help(program: str) -> str:
  """The command's own docstring and flags: those its module defines and those it takes from
  dlm_jax (the sampler flags, --coordinator_address, ...); absl's, grain's and orbax's are
  in --helpfull."""
  main_module = sys.argv[0]
  by_module = flags.FLAGS.flags_by_module_dict()
  for module, module_flags in by_module.items():
    if module.startswith("dlm_jax."):
      for flag in module_flags:
        flags.FLAGS.register_key_flag_for_module(main_module, flag)
  doc = (sys.modules["__main__"].__doc__ or "").strip("\n")
  own = flags.FLAGS.main_module_help()
  own = own.split("\n", 1)[1] if own.startswith(main_module) else own   # drop the path line
  return (f"{doc}\n\nflags of {program} (every flag, absl's included: --helpfull):\n{own}\n")


def run_app(program: str, main, define_flags):
  """absl's app.run, with `--help` listing the command's own flags (exit 0) and a one-line
  error, with a suggestion, for an override of an unknown config key."""
  from absl import app  # pylint: disable=g-import-not-at-top
  define_flags()
  args = sys.argv[1:]
  if any(arg in HELP_FLAGS for arg in args):
    print(command_help(program))
    sys.exit(0)
  if "--helpfull" in args:
    print(flags.FLAGS.get_help())
    sys.exit(0)
  bad = unknown_override(args)
  if bad is not None:
    from dlm_jax import configuration  # pylint: disable=g-import-not-at-top
    sys.exit(f"{program}: error: unknown config key {bad!r} in --config.{bad}=..."
             f"{configuration.did_you_mean(bad)} (keys are defined in dlm_jax/config_schema.py)")
  app.run(main)


def step_counts(values, program: str) -> list:
  """--steps=16,64,256 as ints, each in [1, MAX_STEPS]; anything else is one line, exit 1."""
  try:
    counts = [int(v) for v in values]
  except ValueError:
    sys.exit(f"{program}: error: --steps must be comma-separated integers, got "
             f"{','.join(values)!r}")
  if not counts or not all(1 <= c <= reverse.MAX_STEPS for c in counts):
    sys.exit(f"{program}: error: --steps must list step counts in [1, {reverse.MAX_STEPS}], "
             f"got {','.join(values)!r}")
  return counts
