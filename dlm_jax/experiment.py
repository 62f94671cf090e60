"""Config -> the objects every command needs, validated before any compile; every jit of
the training and evaluation steps is built here."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import Mesh

from dlm_jax import assets, configuration, objectives, parallel, steps, workdirs
from dlm_jax.checkpoint import Checkpointer
from dlm_jax.data import sources
from dlm_jax.data.rows import token_rows
from dlm_jax.data.tokenizer import get_tokenizer
from dlm_jax.errors import UserError
from dlm_jax.kernels import family
from dlm_jax.models import Transformer, model_config


@dataclasses.dataclass
class Experiment:
  config: Any
  workdir: str
  mesh: Mesh
  tokenizer: Any                       # a dlm_jax.data.tokenizer tokenizer
  source: Any                          # a dlm_jax.data.sources Source
  objective: Any                       # objectives.Diffusion | objectives.Autoregressive
  model: Transformer
  tx: Any
  state_sharding: Any
  abstract_state: Any

  @property
  def process(self):
    """The diffusion process (None for the autoregressive baseline)."""
    return self.objective.process

  @property
  def param_sharding(self):
    return self.state_sharding.params

  def init_state(self, key):
    """Fresh train state from `key` (a run's rng.streams(seed)["init"]), created directly in
    its shardings."""
    init = lambda k: nn.meta.unbox(steps.init_state(k, self.model, self.tx,
                                                    self.config.data.seq_len))
    return jax.jit(init, out_shardings=self.state_sharding)(key)

  def meta(self) -> dict:
    """What a checkpoint must agree with to be resumed or restored by this experiment."""
    return {"tokenizer": self.tokenizer.fingerprint(), "vocab_size": self.tokenizer.vocab_size,
            "model": _architecture(dataclasses.asdict(self.model.cfg)),
            **self.objective.describe()}

  def process_arrays(self) -> dict | None:
    """What a checkpoint stores of the diffusion process (None for the AR baseline)."""
    return None if self.process is None else family.process_arrays(self.process)

  def check_compatible(self, saved: dict, step: int) -> None:
    mine = self.meta()
    if saved.get("kernel") in family.KERNELS and "parameterization" not in saved:
      saved = {**saved, "parameterization": "mixture"}   # what every run before the choice trained
    if "model" in saved:      # fields added since the checkpoint have their defaults there
      defaults = {f.name: f.default for f in dataclasses.fields(self.model.cfg)
                  if f.default is not dataclasses.MISSING}
      saved = {**saved, "model": _architecture({**defaults, **saved["model"]})}
    diff = [k for k in mine if k in saved and saved[k] != mine[k]]
    if diff:
      detail = "; ".join(f"{k}: checkpoint {saved[k]!r} vs config {mine[k]!r}" for k in diff)
      how = ("use a fresh workdir or the run's own config" if diff != ["parameterization"] else
             f"pass --config.kernel.parameterization={saved['parameterization']} to resume it "
             "(a run never switches its objective), or use a fresh workdir")
      raise UserError(f"the checkpoint at step {step} in {self.workdir!r} does not match this "
                      f"config ({detail}); {how}")

  # ---------------------------------------------------------------- jitted steps
  @property
  def batch_sharding(self):
    return parallel.batch_sharding(self.mesh)

  @property
  def replicated(self):
    return parallel.replicated(self.mesh)

  def _jit(self, fn, in_shardings, out_shardings, donate_argnums=(), **kwargs):
    """jit of fn(*args, objective=..., model=..., **kwargs) called as f(*args): the objective
    (its process's tables) enters as the first, replicated argument, never as a constant."""
    jitted = jax.jit(lambda objective, *args: fn(*args, objective=objective, model=self.model,
                                                 **kwargs),
                     in_shardings=(self.replicated, *in_shardings), out_shardings=out_shardings,
                     donate_argnums=tuple(i + 1 for i in donate_argnums))
    return parallel.BoundFirst(jitted, self.objective)

  def jit_train_step(self):
    """The jitted train step: state and batch sharded over the mesh, state donated."""
    cfg = self.config
    return self._jit(steps.train_step, (self.state_sharding, self.batch_sharding, self.replicated),
                     (self.state_sharding, self.replicated), donate_argnums=(0,), tx=self.tx,
                     t_min=cfg.train.t_min, ema_decay=cfg.optim.ema_decay,
                     grad_accum_steps=cfg.optim.grad_accum_steps, pad_id=self.tokenizer.pad_id)

  def jit_eval_step(self, quantity: str = "headline"):
    return self._jit(steps.eval_step, (self.param_sharding, self.batch_sharding, self.replicated),
                     self.replicated, pad_id=self.tokenizer.pad_id, quantity=quantity)

  def jit_gradient_noise(self):
    return self._jit(steps.gradient_noise,
                     (self.param_sharding, self.batch_sharding, self.replicated), self.replicated,
                     t_min=self.config.train.t_min, pad_id=self.tokenizer.pad_id)

  def jit_loss_at_times(self):
    loss_at_times = lambda *args, objective, **kwargs: objective.loss_at_times(*args, **kwargs)
    return self._jit(loss_at_times, (self.param_sharding, self.batch_sharding, self.replicated,
                                     self.replicated), self.replicated,
                     pad_id=self.tokenizer.pad_id)

  def rows(self, split: str, build: bool = True):
    """Token rows of `split` (data/rows.py: token_rows); None when `build` is False and they
    would have to be tokenized first."""
    return token_rows(self.config.data, split, self.tokenizer, self.workdir, build)


def _architecture(model_fields: dict) -> dict:
  """The model fields that define the function it computes (not how memory is traded)."""
  return {k: v for k, v in model_fields.items() if k != "remat"}


def build(config, workdir: str, devices=None, restoring: bool = False,
          validated: bool = False, saved_process: dict | None = None) -> Experiment:
  """Validates the config (unless the caller just did: `validated`), loads/trains the
  tokenizer and derives shardings; compiles nothing.

  `saved_process`: the process's arrays from the run's checkpoint (Checkpointer.
  restore_process_arrays): the process is that one, nothing is read from the corpus.
  `restoring`: the run exists already; a missing tokenizer is an error, never trained, and a
  run saved before checkpoints held the process gets it from its table file and cached
  unigram (assets.rebuild_process), never rebuilt."""
  if not validated:
    configuration.validate_config(config)
  if restoring:
    workdirs.check_readable(workdir)   # a reader never needs to write into the workdir
  else:
    workdirs.ensure(workdir)
  mesh = parallel.make_mesh(config.mesh.data, config.mesh.fsdp, devices)
  tokenizer = get_tokenizer(config.data, workdir, jax.process_index(), may_train=not restoring)

  def make_process():
    if saved_process is not None:
      return family.process_from_arrays(config.kernel, tokenizer.vocab_size, saved_process)
    if restoring:
      return assets.rebuild_process(config, tokenizer, workdir)
    return assets.build_process(config, tokenizer, workdir)

  return assemble(config, workdir, mesh, tokenizer,
                  objectives.make_objective(config, make_process))


def assemble(config, workdir: str, mesh: Mesh, tokenizer, objective) -> Experiment:
  """The model, optimizer and shardings of a validated config for `objective`."""
  model = Transformer(model_config(config.model, objective.input_vocab_size(tokenizer.vocab_size),
                                   tokenizer.vocab_size))
  configuration.check_fits_mesh(config, mesh, jax.process_count(), model.cfg.d_model)
  tx = steps.make_optimizer(config.optim, config.train.num_steps)
  abstract = jax.eval_shape(
      lambda k: steps.init_state(k, model, tx, config.data.seq_len), jax.random.key(0))
  state_sharding = parallel.logical_shardings(abstract, mesh)
  abstract_state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                nn.meta.unbox(abstract), state_sharding)
  return Experiment(config=config, workdir=workdir, mesh=mesh, tokenizer=tokenizer,
                    source=sources.build(config.data), objective=objective, model=model, tx=tx,
                    state_sharding=state_sharding, abstract_state=abstract_state)


def restore(workdir: str, step: int | None = None, use_ema: bool = True, devices=None):
  """Rebuilds the experiment saved in `workdir` and restores its (EMA) parameters, after
  checking the tokenizer, model, kernel and neighbour table against the checkpoint's.

  A reader: it never falls back, moves or deletes anything (whatever the run's
  `train.restore_fallback`); `step` is served or refused. Without `step` it reads the newest
  checkpoint, and if a running `train` deletes that step meanwhile, the newest one then.
  Returns (experiment, params, step). Raises UserError when there is no checkpoint.
  """
  ckpt = Checkpointer(workdir, create=False)
  try:
    for attempt in range(3):
      try:
        return _restore_once(ckpt, workdir, step, use_ema, devices)
      except (UserError, FileNotFoundError, ValueError) as e:
        newest = max(ckpt.all_steps() or [0])
        if step is not None or attempt == 2 or ckpt.still_has(newest):
          if isinstance(e, UserError):
            raise
          raise UserError(f"could not read the checkpoint in {workdir!r}: "
                          f"{(str(e).splitlines() or [''])[0][:200]}") from None
        print(f"note: checkpoint step {newest} was deleted while reading it (a running train "
              "keeps only the newest); reading the newest one now", flush=True)
    raise AssertionError("unreachable")
  finally:
    ckpt.close()


def _restore_once(ckpt, workdir: str, step, use_ema: bool, devices):
  ckpt.manager.reload()
  available = ckpt.all_steps()
  if not available:
    raise UserError(f"no checkpoint in {workdir!r}: train first with `python -m dlm_jax.train`")
  if step is None:
    step = max(available)
  elif step not in available:
    raise UserError(f"no checkpoint for step {step} in {workdir!r}; available: {sorted(available)}")
  hint = "pass --step with an earlier one"
  step = ckpt.readable_step(step, hint=hint)
  config = ckpt.restore_config(step)
  n = len(jax.devices() if devices is None else devices)
  config.mesh.data = -1
  if n % config.mesh.fsdp:
    config.mesh.fsdp = 1
  exp = build(config, workdir, devices, restoring=True,
              saved_process=ckpt.restore_process_arrays(step))
  exp.check_compatible(ckpt.restore_json(step, "meta"), step)
  state, step = ckpt.restore(step, exp.abstract_state, hint=hint)
  return exp, (state.ema_params if use_ema else state.params), step
