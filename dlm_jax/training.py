"""The training loop: config -> experiment -> jitted steps -> checkpoints and metrics.

Generic over the objective (diffusion NELBO or autoregressive NLL). Resumes from the latest
checkpoint in the workdir. `python -m dlm_jax.train` is its command-line shell.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from dlm_jax import configuration, evaluation, experiment, parallel, quality, rng, steps
from dlm_jax import workdirs
from dlm_jax.checkpoint import Checkpointer
from dlm_jax.data import pipeline
from dlm_jax.data.rows import data_fingerprint, pad_rule
from dlm_jax.errors import UserError
from dlm_jax.metric_writers import MetricWriter


class _StopRequest:
  """Turns SIGTERM / SIGINT into a request the loop honours at the next step boundary."""

  def __init__(self):
    self.signal = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signal is not None:      # a second signal: stop now, without the final checkpoint
      print(f"received a second {signal.Signals(signum).name}: exiting now (the last complete "
            "checkpoint is kept)", flush=True)
      os._exit(128 + signum)
    self.signal = signal.Signals(signum).name
    print(f"received {self.signal}: stopping after this step and saving a checkpoint (send it "
          "again to exit at once)", flush=True)

  def requested(self, process_count: int) -> bool:
    """True on every process as soon as any process got a signal (hosts stop at one step)."""
    local = self.signal is not None
    if process_count == 1:
      return local
    return bool(np.any(multihost_utils.process_allgather(np.asarray(local))))

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _first_nonfinite(fetched, first_step: int):
  for i, m in enumerate(fetched):
    if not bool(m["finite"]):
      bad = ([k for k in ("loss", "grad_norm") if not math.isfinite(float(m[k]))]
             or ["updated parameters"])
      return first_step + i, bad
  return None, None


def check_same_data(config, saved_meta: dict, step: int, fingerprint: str) -> None:
  """A resumed run reads the data it started with: refuse when the training files changed
  (names, sizes, modification times: `fingerprint`, rows.data_fingerprint) since `step` was
  saved, unless the config allows it."""
  saved = saved_meta.get("data")
  if saved is None or saved == fingerprint:
    return
  if config.train.resume_on_changed_data:
    print(f"warning: the training data changed since step {step}; resuming on the new data "
          "(train.resume_on_changed_data=True): the data order differs from the run's start",
          flush=True)
    return
  raise UserError(f"the training data changed since step {step} was saved (files added, "
                  "removed, resized or modified): a resumed run must read the data it started "
                  "with. Restore the files, use a new workdir, or set "
                  "train.resume_on_changed_data=True to go on with the new data")


def check_same_schedule(config, saved: dict, step: int) -> None:
  """A resumed run keeps the learning-rate schedule it started with: a cosine schedule
  depends on train.num_steps, so a resume with another num_steps (which would silently
  recompute the rate of every remaining step) is refused in one line."""
  saved_steps = saved.get("train", {}).get("num_steps", config.train.num_steps)
  if saved_steps == config.train.num_steps or config.optim.lr_schedule == "constant":
    return
  old = float(steps.learning_rate_schedule(config.optim, saved_steps)(step))
  new = float(steps.learning_rate_schedule(config.optim, config.train.num_steps)(step))
  raise UserError(
      f"this run was started with train.num_steps={saved_steps}, which its "
      f"{config.optim.lr_schedule} learning-rate schedule follows; resuming step {step} with "
      f"num_steps={config.train.num_steps} would change the rate there from {old:.3g} to "
      f"{new:.3g}. Resume with --config.train.num_steps={saved_steps}, or train a new workdir "
      "(a constant schedule, optim.lr_schedule=constant, can be extended)")


def _describe_rows(source, data_cfg) -> str:
  described = source.describe()
  if described is not None:
    return described
  return (f"{data_cfg.mode} rows of {data_cfg.seq_len}, convention {data_cfg.convention} | "
          f"{pad_rule(data_cfg.convention)}")


def train_and_evaluate(config, workdir: str, devices=None, stop_after: int | None = None):
  """Runs training; returns (logged metric dicts, final state). `stop_after` ends the loop
  early (after saving), as an interrupted job would. Holds the workdir's train lock."""
  configuration.validate_config(config)
  created = "://" not in workdir and not os.path.exists(workdir)
  try:
    with workdirs.train_lock(workdir):
      return _train(config, workdir, devices, stop_after)
  except BaseException:
    if created and jax.process_index() == 0 and workdirs.remove_if_unused(workdir):
      print(f"the start failed before step 0: removed the workdir {workdir} it had created",
            file=sys.stderr, flush=True)
    raise


class _Metrics:
  """The run's logged metrics: one writer (process 0 writes) and the history returned."""

  def __init__(self, writer):
    self.writer, self.history = writer, []

  def log(self, step: int, values: dict, prefix: str, echo: bool = True):
    self.writer.write(step, values, prefix=prefix, echo=echo)
    self.history.append({"step": step, **{f"{prefix}{k}": v for k, v in values.items()}})


class _TrainLog:
  """Buffers the per-step metrics on device; `flush` fetches them, enforces the non-finite
  policy and logs their means with the step rate: to the files at every flush, to stdout at
  most every logging.print_every_seconds (and the last)."""

  def __init__(self, cfg, metrics: _Metrics, ckpt, start: int):
    self.cfg, self.metrics, self.ckpt = cfg, metrics, ckpt
    self.lr_fn = steps.learning_rate_schedule(cfg.optim, cfg.train.num_steps)
    self.tokens_per_step = cfg.train.batch_size * cfg.data.seq_len
    self.pending, self.skipped = [], 0
    self.last_time, self.last_step = time.time(), start
    self.last_print = None

  def add(self, step_metrics):
    self.pending.append(step_metrics)

  def flush(self, done: int, last: bool = False):
    if not self.pending:
      return
    cfg = self.cfg
    fetched = jax.device_get(self.pending)
    first = done - len(self.pending) + 1
    self.pending = []
    bad_step, bad = _first_nonfinite(fetched, first)
    if bad_step is not None:
      if cfg.train.nonfinite == "stop":
        latest = self.ckpt.latest_step()
        saved = (f"last good checkpoint: step {latest} in {self.ckpt.directory}" if latest
                 is not None else "no checkpoint was saved yet")
        raise FloatingPointError(
            f"non-finite {', '.join(bad) or 'value'} at step {bad_step} (update not applied); "
            f"{saved}; set train.nonfinite=skip to skip such updates")
      self.skipped += sum(not bool(m["finite"]) for m in fetched)
    good = [m for m in fetched if bool(m["finite"])] or fetched
    now = time.time()
    rate = (done - self.last_step) / max(now - self.last_time, 1e-9)
    scalars = {k: float(np.mean([m[k] for m in good])) for k in good[0]
               if k not in ("tokens", "finite")}
    scalars.update(lr=float(self.lr_fn(done)), steps_per_sec=rate,
                   tokens_per_sec=rate * self.tokens_per_step, skipped_updates=self.skipped,
                   eta_hours=(cfg.train.num_steps - done) / max(rate, 1e-9) / 3600)
    echo = (last or self.last_print is None
            or now - self.last_print >= cfg.logging.print_every_seconds)
    self.metrics.log(done, scalars, "train/", echo=echo)
    self.last_time, self.last_step = now, done
    if echo:
      self.last_print = now


class _Validation:
  """Periodic validation of the EMA parameters (NELBO, optional per-t profile) and the
  learning summary at the end."""

  def __init__(self, exp, val_rows, keys, metrics: _Metrics):
    cfg = exp.config
    self.exp, self.rows, self.keys, self.metrics = exp, val_rows, keys, metrics
    self.eval_fn = exp.jit_eval_step()
    self.profile_fn = (exp.jit_loss_at_times()
                       if exp.objective.is_bound and cfg.train.loss_profile_batches > 0 else None)
    self.last_nats = None

  def run(self, step: int, ema_params):
    exp, cfg = self.exp, self.exp.config
    result = evaluation.nelbo(exp, self.eval_fn, ema_params, self.rows, cfg.eval.batch_size,
                              cfg.train.eval_batches, self.keys["validation"])
    nats = self.last_nats = result["nats_per_token"]
    values = {"nelbo_nats_per_token": nats, "nelbo_bits_per_token": nats / math.log(2),
              exp.objective.perplexity_key: quality.perplexity(nats), "tokens": result["tokens"]}
    if self.profile_fn is not None:
      values.update(evaluation.loss_profile(exp, self.profile_fn, ema_params, self.rows,
                                            cfg.eval.batch_size, cfg.train.loss_profile_batches,
                                            self.keys["loss_profile"]))
    self.metrics.log(step, values, "val/")

  def summarize(self, step: int, ema_params):
    exp, cfg = self.exp, self.exp.config
    summary = evaluation.learning_summary(exp, ema_params, self.rows, self.last_nats,
                                          cfg.eval.batch_size, cfg.train.eval_batches,
                                          self.keys["summary"])
    self.metrics.log(step, summary, "final/")
    if jax.process_index() == 0:
      line = evaluation.summary_line(summary, exp.objective.is_bound)
      print(f"step {step} (EMA weights): {line}", flush=True)


def _train(config, workdir: str, devices, stop_after):
  ckpt = Checkpointer(workdir, keep=config.train.keep_checkpoints)
  latest = ckpt.latest_step()
  fingerprint = data_fingerprint(config.data)
  saved_process = None
  if latest is not None:           # before anything is tokenized or compiled
    latest = ckpt.readable_step(latest, config.train.restore_fallback)
    saved_meta = ckpt.restore_json(latest, "meta")
    check_same_data(config, saved_meta, latest, fingerprint)
    check_same_schedule(config, ckpt.restore_json(latest, "config"), latest)
    saved_process = ckpt.restore_process_arrays(latest)     # a resumed run keeps its process
  exp = experiment.build(config, workdir, devices, validated=True, saved_process=saved_process)
  cfg = config
  keys = rng.streams(cfg.seed)
  process_index, process_count = jax.process_index(), jax.process_count()
  data_iter = pipeline.train_iterator(exp.rows("train"), cfg.train.batch_size, cfg.seed,
                                      process_index, process_count, cfg.data.worker_count)
  meta = {**exp.meta(), "data": fingerprint}
  process_arrays = exp.process_arrays()
  if latest is None:
    state, start = exp.init_state(keys["init"]), 0
  else:
    exp.check_compatible(saved_meta, latest)
    state, start = ckpt.restore(latest, exp.abstract_state, data_iter,
                                fallback=cfg.train.restore_fallback)
  metrics = _Metrics(MetricWriter(workdir, enabled=process_index == 0, resume_step=start,
                                  wandb_cfg=cfg.logging.wandb, run_config=cfg.to_dict()))
  if process_index == 0:
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    print(f"model: {num_params / 1e6:.2f}M parameters | kernel: {meta['kernel']} "
          f"({meta['structure']}) | mesh: {dict(exp.mesh.shape)} | start step: {start}", flush=True)
    print(f"data: {_describe_rows(exp.source, cfg.data)}", flush=True)

  train_fn = exp.jit_train_step()
  noise_fn = exp.jit_gradient_noise() if cfg.train.grad_noise_every > 0 else None
  validation = _Validation(exp, exp.rows("validation"), keys, metrics)
  log = _TrainLog(cfg, metrics, ckpt, start)
  end = cfg.train.num_steps if stop_after is None else min(cfg.train.num_steps, stop_after)

  with _StopRequest() as stop:
    if start == 0:
      validation.run(0, state.ema_params)
    for step in range(start, end):
      batch = parallel.global_batch(next(data_iter), exp.mesh)
      if noise_fn is not None and step % cfg.train.grad_noise_every == 0:
        noise = jax.device_get(noise_fn(state.params, batch,
                                        jax.random.fold_in(keys["gradient_noise"], step)))
        metrics.log(step, {k: float(v) for k, v in noise.items()}, "train/")
      state, step_metrics = train_fn(state, batch, keys["train"])
      log.add(step_metrics)
      done = step + 1
      interrupted = stop.requested(process_count)
      if done % cfg.train.log_every == 0 or done == end or interrupted:
        log.flush(done, last=done == end or interrupted)
      if done % cfg.train.eval_every == 0 or done == cfg.train.num_steps:
        validation.run(done, state.ema_params)
      if done == cfg.train.num_steps:
        validation.summarize(done, state.ema_params)
      if done % cfg.train.checkpoint_every == 0 or done == end or interrupted:
        log.flush(done, last=done == end or interrupted)  # never save past an unchecked
                                                          # non-finite step
        ckpt.save(done, state, data_iter, cfg, meta, process_arrays)
      if interrupted:
        if process_index == 0:
          print(f"received {stop.signal or 'a stop signal on another host'} at step {done}: "
                f"saved checkpoint {done} in {ckpt.directory}; rerun the same command to resume",
                flush=True)
        break
  ckpt.close()
  metrics.writer.close()
  return metrics.history, state
