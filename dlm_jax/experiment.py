"""Config -> the objects every entry point needs, validated before any compile."""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import Mesh

from dlm_jax import configuration, parallel, steps
from dlm_jax.data import pipeline

from dlm_jax.errors import UserError
from dlm_jax.kernels import assets
from dlm_jax.models import Transformer, model_config


@dataclasses.dataclass
class Experiment:
  config: Any
  workdir: str
  mesh: Mesh
  tokenizer: Any                       # a dlm_jax.data.tokenizer tokenizer
  kernel: Any
  model: Transformer
  tx: Any
  state_sharding: Any
  abstract_state: Any

  @property
  def param_sharding(self):
    return self.state_sharding.params

  def init_state(self, seed: int):
    """Fresh train state, created directly in its shardings."""
    init = lambda k: nn.meta.unbox(steps.init_state(k, self.model, self.tx,
                                                    self.config.data.seq_len))
    return jax.jit(init, out_shardings=self.state_sharding)(jax.random.key(seed))

  def meta(self) -> dict:
    """What a checkpoint must agree with to be resumed or restored by this experiment."""
    return {"tokenizer": self.tokenizer.fingerprint(), "vocab_size": self.tokenizer.vocab_size,
            "model": dataclasses.asdict(self.model.cfg),
            "kernel": self.kernel.name if self.kernel else "autoregressive",
            "structure": self.kernel.structure if self.kernel else "none"}

  def check_compatible(self, saved: dict, step: int) -> None:
    mine = self.meta()
    diff = [k for k in mine if k in saved and saved[k] != mine[k]]
    if diff:
      detail = "; ".join(f"{k}: checkpoint {saved[k]!r} vs config {mine[k]!r}" for k in diff)
      raise UserError(f"the checkpoint at step {step} in {self.workdir!r} does not match this "
                      f"config ({detail}); use a fresh workdir or the run's own config")

  def jit_train_step(self):
    """The jitted train step: state and batch sharded over the mesh, state donated."""
    return steps.jit_train_step(self.model, self.kernel, self.tx, self.config.train,
                                self.config.optim, self.state_sharding,
                                parallel.batch_sharding(self.mesh), parallel.replicated(self.mesh),
                                self.tokenizer.pad_id)

  def jit_eval_step(self):
    return steps.jit_eval_step(self.model, self.kernel, self.param_sharding,
                               parallel.batch_sharding(self.mesh), parallel.replicated(self.mesh),
                               self.tokenizer.pad_id)

  def jit_gradient_noise(self):
    fn = functools.partial(steps.gradient_noise, model=self.model, kernel=self.kernel,
                           t_min=self.config.train.t_min, pad_id=self.tokenizer.pad_id)
    replicated = parallel.replicated(self.mesh)
    return jax.jit(fn, in_shardings=(self.param_sharding, parallel.batch_sharding(self.mesh),
                                     replicated), out_shardings=replicated)

  def jit_loss_at_times(self):
    fn = functools.partial(steps.loss_at_times, model=self.model, kernel=self.kernel,
                           pad_id=self.tokenizer.pad_id)
    replicated = parallel.replicated(self.mesh)
    return jax.jit(fn, in_shardings=(self.param_sharding, parallel.batch_sharding(self.mesh),
                                     replicated, replicated), out_shardings=replicated)

  def rows(self, split: str):
    return pipeline.token_rows(self.config.data, split, self.tokenizer, self.workdir)


def build(config, workdir: str, devices=None) -> Experiment:
  """Validates the config, loads/trains the tokenizer and derives shardings; compiles nothing."""
  configuration.validate_config(config)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create workdir {workdir!r}: {e.strerror}") from None
  if not os.access(workdir, os.W_OK):
    raise UserError(f"workdir {workdir!r} is not writable")
  mesh = parallel.make_mesh(config.mesh.data, config.mesh.fsdp, devices)
  tokenizer = pipeline.get_tokenizer(config.data, workdir, jax.process_index())
  if config.model.causal:
    kernel = None
    vocab_in = tokenizer.vocab_size
  else:
    kernel = assets.build_kernel(config, tokenizer, workdir)
    vocab_in = kernel.input_vocab_size
  model = Transformer(model_config(config.model, vocab_in, tokenizer.vocab_size))
  configuration.check_fits_mesh(config, mesh, jax.process_count(), model.cfg.d_model)
  tx = steps.make_optimizer(config.optim, config.train.num_steps)
  abstract = jax.eval_shape(
      lambda k: steps.init_state(k, model, tx, config.data.seq_len), jax.random.key(0))
  state_sharding = parallel.logical_shardings(abstract, mesh)
  abstract_state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                nn.meta.unbox(abstract), state_sharding)
  return Experiment(config=config, workdir=workdir, mesh=mesh, tokenizer=tokenizer, kernel=kernel,
                    model=model, tx=tx, state_sharding=state_sharding,
                    abstract_state=abstract_state)


def restore(workdir: str, step: int | None = None, use_ema: bool = True, devices=None):
  """Rebuilds the experiment saved in `workdir` and restores its (EMA) parameters.

  Returns (experiment, params, step). Raises UserError when there is no checkpoint.
  """
  from dlm_jax.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
  ckpt = Checkpointer(workdir, create=False)
  available = ckpt.all_steps()
  if not available:
    raise UserError(f"no checkpoint in {workdir!r}: train first with `python -m dlm_jax.train`")
  if step is None:
    step = max(available)
  elif step not in available:
    raise UserError(f"no checkpoint for step {step} in {workdir!r}; available: {sorted(available)}")
  config = ckpt.restore_config(step)
  n = len(jax.devices() if devices is None else devices)
  config.mesh.data = -1
  if n % config.mesh.fsdp:
    config.mesh.fsdp = 1
  exp = build(config, workdir, devices)
  state, step = ckpt.restore(step, exp.abstract_state, fallback=config.train.restore_fallback)
  ckpt.close()
  return exp, (state.ema_params if use_ema else state.params), step
