r"""Generate text from a trained model with the exact reverse sampler of its kernel.

  python -m dlm_jax.sample --workdir=/tmp/dlm --num_samples=4 --steps=128 \
      [--length=128] [--prompt="ROMEO."] [--suffix="Exeunt."] [--temperature=1.0] \
      [--top_p=1.0] [--eta=0.0 --eta_schedule=constant|linear] [--rho=0.0] \
      [--unmasking=ancestral|fixed|random|confidence|margin|entropy|threshold] \
      [--threshold=0.9] [--corrector=none|psi --corrector_mode=constant|remdm|remdm_capped \
       --corrector_eta=0.1 --corrector_t_min=0 --corrector_t_max=1] \
      [--block_size=0] [--no_cache] [--float64] [--prompts_file=FILE]

--prompts_file: one sample per line, each line a template: its text is clamped, every
`<mask:K>` leaves K positions to generate (several infill spans), and the row after the
template is generated (e.g. `ROMEO. <mask:12> JULIET. <mask:12> Exeunt.`).
--length above the trained seq_len generates in sliding windows of seq_len moved by half of
it, each clamping what the previous ones generated (generation.windows; exact conditioning
for the masking kernel only).

--eta / --rho are SemDLM+'s global transition and semantic-frequency penalty (any kernel
accepts them); --unmasking other than ancestral and caching apply to the masking kernel;
--corrector=psi (every kernel) mixes into each step a re-noising of the drawn clean tokens
to the forward marginal at the next time (predictor-corrector steps that keep the marginals
for an exact denoiser; one network call per step, as without it; docs/design.md §5);
--corrector=none is the ancestral sampler. --block_size generates semi-autoregressively,
--steps per block. A causal (AR) workdir samples left to right. Prints the samples and
their real-word rate (the share of generated words that occur in the training split) and
writes
<workdir>/samples/step<N>_T<steps>_<hash>.{txt,json} (or --output): <hash> changes with any
option, so no call overwrites another's files (a repeat gets -2, -3, ...); the JSON lists the
options under "command_options". The work is done by `dlm_jax.generation`.
"""

from __future__ import annotations

import os
import sys

from absl import flags
import jax

from dlm_jax import cli, generation, reports
from dlm_jax.errors import UserError


def define_flags():
  flags.DEFINE_string("workdir", None, "Training workdir with checkpoints.")
  flags.DEFINE_integer("num_samples", 4, "Number of samples.")
  flags.DEFINE_string("output", None, "Output stem (default <workdir>/samples/step<N>_T<T>_"
                      "<hash of the options>).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
  flags.DEFINE_string("prompts_file", None, "One template per line, one sample each: text "
                      "clamped, <mask:K> spans generated (replaces --prompt/--suffix).")
  flags.DEFINE_bool("real_words", True, "Report the share of generated words that occur in the "
                    "training split (from its cached rows; skipped when there are none).")
  cli.define_sampler_flags()


def _read_templates(path: str) -> list[str]:
  try:
    with open(path, encoding="utf-8") as fh:
      lines = [line.rstrip("\n") for line in fh if line.strip()]
  except (OSError, UnicodeDecodeError) as e:
    raise UserError(f"cannot read --prompts_file {path}: {e}") from None
  if not lines:
    raise UserError(f"--prompts_file {path} has no non-empty line")
  return lines


def summary_line(info: dict) -> str:
  """The sampling run in one line (the JSON file has every field)."""
  exact = "exact" if info["conditioning_exact"] else "inexact (see the note above)"
  conditioned = info["prompt"] is not None or info["suffix"] is not None or not info[
      "conditioning_exact"]
  return (f"{info['num_samples']} samples of {info['length']} tokens from step {info['step']}, "
          f"{info['sampler']} sampler, {info['network_evaluations']:.0f} network calls per "
          f"sample, {info['seconds_per_batch']:.2f} s per batch of {info['batch_size']}"
          + (" (compilation included: one batch)" if info["timing_includes_compile"] else "")
          + (f", conditioning {exact}" if conditioned else ""))


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.workdir:
    sys.exit("dlm_jax.sample: error: --workdir is required")
  if f.output:
    cli.run("dlm_jax.sample", reports.check_writable, f.output)   # before any work
  templates = (cli.run("dlm_jax.sample", _read_templates, f.prompts_file) if f.prompts_file
               else None)
  texts, tokens, info = cli.run("dlm_jax.sample", generation.generate, f.workdir, f.num_samples,
                                cli.sampler_options(f), f.length, f.prompt, f.suffix, f.seed,
                                f.step, f.batch_size, templates, f.real_words)
  shown = "".join(f"=== sample {i} ===\n{text}\n\n" for i, text in enumerate(texts))
  print(shown + summary_line(info))
  if "real_word_rate" in info:
    print(f"real-word rate {info['real_word_rate']:.3f}: the share of the {info['words']} "
          "generated words that occur in the training split")
  elif f.real_words:
    print("real-word rate: not measured (the training rows are not cached in this workdir; "
          "`train` writes them)")
  if jax.process_index() != 0:          # one writer: the samples are the same on every host
    return
  options = {**cli.flag_values(f, cli.SAMPLER_FLAGS + ("num_samples", "prompts_file")),
             "templates": templates, "step": info["step"]}
  stem = f.output or reports.unique_stem(os.path.join(f.workdir, "samples"),
                                         f"step{info['step']}_T{f.steps}", options)
  os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
  with open(stem + ".txt", "w", encoding="utf-8") as fh:
    fh.write(shown)
  reports.write(stem, {**info, "command_options": options, "samples": texts,
                       "tokens": tokens.tolist()})
  print(f"wrote {stem}.txt and {stem}.json")


if __name__ == "__main__":
  cli.run_app("dlm_jax.sample", main, define_flags)
