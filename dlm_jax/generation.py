"""Sampling from a restored run: conditioning (prompt, suffix, per-sample prefixes), batches
through the objective's jitted sampler (the exact reverse sampler of a diffusion kernel, or
left to right for the AR baseline), timings. `python -m dlm_jax.sample` is its shell."""

from __future__ import annotations

import os
import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from dlm_jax import experiment, quality, rng
from dlm_jax.data.rows import sample_prefix
from dlm_jax.errors import UserError
from dlm_jax.samplers import reverse



_NOTES_SHOWN = set()


def _note_once(text: str) -> None:
  """A note on stderr once per command (tune_sampler and evaluate sample many times)."""
  if text not in _NOTES_SHOWN:
    _NOTES_SHOWN.add(text)
    print(f"note: {text}", file=sys.stderr)


def conditioning(tokenizer, num: int, length: int, prompt=None, suffix=None, start=()):
  """(fixed tokens, fixed mask): `start` (rows.sample_prefix) + prompt at the start, suffix at
  the end."""
  prefix = list(start) + (tokenizer.encode([prompt])[0] if prompt else [])
  tail = tokenizer.encode([suffix])[0] if suffix else []
  if len(prefix) + len(tail) >= length:
    raise UserError(f"prompt + suffix are {len(prefix) + len(tail)} tokens, not shorter than "
                    f"the length {length}")
  fixed = np.zeros((num, length), np.int32)
  mask = np.zeros((num, length), bool)
  if prefix:
    fixed[:, : len(prefix)], mask[:, : len(prefix)] = prefix, True
  if tail:
    fixed[:, length - len(tail):], mask[:, length - len(tail):] = tail, True
  return fixed, mask


_MASK_SPAN = re.compile(r"<mask:(\d+)>")


def template_conditioning(tokenizer, templates, length: int, start=()):
  """(fixed tokens, fixed mask), (N, length), one row per template: `start`
  (rows.sample_prefix), then the template's text clamped and each `<mask:K>` span left as K
  free positions; the row after the template is free (a continuation). Text pieces are
  tokenized one by one."""
  first = list(start)
  fixed = np.zeros((len(templates), length), np.int32)
  mask = np.zeros((len(templates), length), bool)
  for row, line in enumerate(templates):
    ids, pos = list(first), 0
    keep = [True] * len(ids)
    pieces = [(m.start(), m.end(), m.group(1)) for m in _MASK_SPAN.finditer(line)]
    for start, end, free in pieces:
      if len(free.lstrip("0")) > len(str(length)) or int(free) > length:   # before allocating
        raise UserError(f"prompt {row + 1}: <mask:{free}> asks for more positions than the "
                        f"length {length}")
    pieces = [(start, end, int(free)) for start, end, free in pieces]
    for start, end, free in pieces + [(len(line), len(line), 0)]:
      text = line[pos:start].strip()
      if "<mask:" in text:
        raise UserError(f"prompt {row + 1}: {text[text.index('<mask:'):][:20]!r} is not a span: "
                        "write <mask:K> with K a whole number of positions (K >= 0)")
      encoded = tokenizer.encode([text])[0] if text else []
      ids += encoded + [0] * free
      keep += [True] * len(encoded) + [False] * free
      pos = end
    if len(ids) > length:
      raise UserError(f"prompt {row + 1} ({line[:40]!r}) needs {len(ids)} tokens with its "
                      f"spans, more than the length {length}")
    fixed[row, :len(ids)], mask[row, :len(ids)] = ids, keep
  return fixed, mask


def windows(length: int, window: int, stride: int) -> list[tuple[int, int]]:
  """Sliding semi-autoregressive windows for generating `length` > `window` tokens with a
  model of length `window`: (start, context) per window, where the window covers
  [start, start + window) and its first `context` tokens are already generated (clamped as a
  prompt). The first window has no context; each later one moves by `stride` new tokens, and
  the last is aligned to the end (its context is whatever is already there)."""
  if not 0 < stride <= window:
    raise UserError(f"the window stride must be in [1, {window}], got {stride}")
  plan, produced, start = [(0, 0)], window, 0
  while produced < length:
    start = min(start + stride, length - window)
    plan.append((start, produced - start))
    produced = start + window
  return plan


def _progress_bar(total: int, what: str):
  """A tqdm bar on stderr (batches, rate, time left) where stderr is a terminal or
  DLM_PROGRESS is set; `what` empty: none."""
  shown = bool(what) and (sys.stderr.isatty() or bool(os.environ.get("DLM_PROGRESS")))
  return tqdm.tqdm(total=total, desc=what, unit="batch", file=sys.stderr, disable=not shown,
                   dynamic_ncols=True)


def _prefixes_only(mask) -> bool:
  """Whether every row's clamped positions are a prefix of it (what a left-to-right sampler
  conditions on exactly)."""
  mask = np.asarray(mask, bool)
  return bool(np.all(mask[:, 1:] <= mask[:, :-1])) if mask.shape[1] > 1 else True


def generated_texts(tokenizer, tokens, free) -> list:
  """The text of each run of generated (not clamped) positions of each row: what the
  real-word rate counts (never a prompt, suffix or template text)."""
  texts = []
  for row, keep in zip(np.asarray(tokens), np.asarray(free, bool)):
    edges = np.flatnonzero(np.diff(np.concatenate([[0], keep.astype(np.int8), [0]])))
    texts += [tokenizer.decode(row[a:b]) for a, b in zip(edges[::2], edges[1::2])]
  return texts


def generate_with(exp, params, num_samples: int, opts: reverse.SamplerOptions, length=None,
                  prompt=None, suffix=None, seed: int = 0, batch_size: int = 16,
                  progress: str | None = None, rows=None):
  """Samples from a restored experiment. Returns (token array (N, L), info dict, generated
  mask (N, L): the positions the sampler drew, i.e. not clamped by the conditioning).

  rows: optional (fixed tokens, fixed mask), each (N, P) with P <= length, the conditioning
  of each sample (`template_conditioning`; prefixes of real rows), instead of the text
  `prompt` / `suffix`."""
  if num_samples < 1 or batch_size < 1:
    raise UserError("num_samples and batch_size must be >= 1")
  length = exp.config.data.seq_len if length is None else length
  if length < 1:
    raise UserError(f"length must be >= 1 (omit it for the trained seq_len), got {length}")
  window = exp.config.data.seq_len
  if length > window and (suffix or rows is not None or opts.block_size):
    raise UserError(f"length {length} > the trained seq_len {window} generates in sliding "
                    "windows, which take a text --prompt only (no suffix, prompt rows or "
                    "block_size)")
  batch_size = min(batch_size, num_samples)
  fixed, mask = conditioning(exp.tokenizer, batch_size, min(length, window), prompt, suffix,
                             sample_prefix(exp.tokenizer, exp.config.data))
  if rows is not None and (len(rows[0]) < num_samples or np.shape(rows[0])[1] > length):
    raise UserError(f"need {num_samples} conditioning rows of at most {length} tokens, got "
                    f"{np.shape(rows[0])}")
  fn = exp.objective.sampler(exp.model, opts, min(length, window))
  plan = windows(length, window, max(window // 2, 1)) if length > window else [(0, 0)]
  clamped = mask.any() or rows is not None or len(plan) > 1
  masks = mask if rows is None else np.asarray(rows[1])
  exact = not clamped or exp.objective.conditions_exactly(exp.model, _prefixes_only(masks))
  if not exact:
    _note_once(exp.objective.inexact_conditioning_note())
  sampler = (f"reverse/{exp.objective.name}" if exp.objective.is_bound
             else exp.objective.name)
  if exp.objective.is_bound and opts.corrector != "none":
    sampler += f" + {opts.corrector} corrector ({opts.corrector_mode}, eta {opts.corrector_eta:g})"
  generated, frees, nfes, seconds = [], [], [], []
  n_batches = -(-num_samples // batch_size)
  bar = _progress_bar(n_batches, progress)
  for b in range(n_batches):
    if rows is not None:
      part = slice(b * batch_size, (b + 1) * batch_size)
      tokens_part, mask_part = np.asarray(rows[0])[part], np.asarray(rows[1])[part]
      fixed[:], mask[:] = 0, False
      fixed[: len(tokens_part), : tokens_part.shape[1]] = tokens_part
      mask[: len(tokens_part), : tokens_part.shape[1]] = mask_part
    start = time.time()
    out, nfe = np.zeros((batch_size, max(length, window)), np.int32), 0
    for w, (begin, context) in enumerate(plan):
      w_fixed, w_mask = (fixed, mask) if w == 0 else (np.zeros_like(fixed), np.zeros_like(mask))
      if context:             # the already generated part of a later window: a prompt
        w_fixed[:, :context], w_mask[:, :context] = out[:, begin:begin + context], True
      key = jax.random.fold_in(rng.key(seed), b)    # window 0: the seeds of old
      key = jax.random.fold_in(key, w) if w else key
      tokens = fn(params, key, jnp.asarray(w_fixed), jnp.asarray(w_mask))
      tokens, calls = np.asarray(jax.device_get(tokens[0])), tokens[1]
      out[:, begin:begin + tokens.shape[1]] = tokens
      nfe += int(calls)
    generated.append(out[:, :length])
    free = np.ones((batch_size, length), bool)
    free[:, : mask.shape[1]] = ~mask
    frees.append(free)
    nfes.append(nfe)
    seconds.append(time.time() - start)
    bar.update(1)
  bar.close()
  tokens = np.concatenate(generated)[:num_samples]
  free = np.concatenate(frees)[:num_samples]
  steady = seconds[1:] or seconds                # the first call includes compilation
  per_batch = float(np.mean(steady))
  total_steps = exp.objective.sampler_steps(opts, min(length, window)) * len(plan)
  info = {"sampler": sampler, "options": opts.__dict__, "length": length,
          "num_samples": num_samples, "batch_size": batch_size, "prompt": prompt,
          "windows": [{"start": s, "context": c} for s, c in plan],
          "suffix": suffix, "conditioning_exact": bool(exact),
          "network_evaluations": float(np.mean(nfes)),
          "seconds_first_call_with_compile": seconds[0],
          "seconds_per_batch": per_batch, "timing_includes_compile": len(seconds) == 1,
          "steps_per_sec": total_steps / per_batch,
          "tokens_per_sec": batch_size * length / per_batch}
  return tokens, info, free


def generate(workdir: str, num_samples: int, opts: reverse.SamplerOptions, length=None,
             prompt=None, suffix=None, seed: int = 0, step=None, batch_size: int = 16,
             templates=None, real_words: bool = True):
  """Restores `workdir` and samples. Returns (texts, tokens, info). `templates`: one per
  sample (template_conditioning), instead of `prompt` / `suffix`. `real_words`: info gets the
  real-word rate of the generated positions only (quality.real_word_rate; never the prompt,
  suffix or template text) against the training split's words."""
  exp, params, ckpt_step = experiment.restore(workdir, step)
  rows, start = None, sample_prefix(exp.tokenizer, exp.config.data)
  if templates is not None:
    if prompt or suffix:
      raise UserError("a prompts file replaces --prompt and --suffix; give one or the other")
    rows = template_conditioning(exp.tokenizer, templates, length or exp.config.data.seq_len,
                                 start)
    num_samples = len(templates)
  tokens, info, free = generate_with(exp, params, num_samples, opts, length, prompt, suffix,
                                     seed, batch_size, progress="sampling", rows=rows)
  info["step"] = ckpt_step
  if real_words:      # from cached training rows only: never tokenizes a corpus here
    vocabulary = quality.training_vocabulary(exp.rows("train", build=False),
                                             exp.tokenizer.decode)
    info.update(quality.real_word_rate(generated_texts(exp.tokenizer, tokens, free),
                                       vocabulary))
  return [exp.tokenizer.decode(row) for row in tokens], tokens, info
