"""Will a config fit a chip? Its train step (and sampler) compiled ahead of time for a
device topology, with XLA's own accounting of memory and FLOPs. The TPU compiler runs on
any host (libtpu, `pip install -e '.[tpu]'`); `python -m dlm_jax.aot` is the command.

HBM per chip = arguments + temporaries + outputs - donated aliases (the compiled
program's memory analysis); FLOPs per chip-step = its cost analysis. The inputs are
shapes only: random tokens are never made, a neighbour table of the config's shape is
built from random embeddings (its size, not its content, sets the cost).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import jax
import jax.numpy as jnp

from dlm_jax import configuration, experiment, objectives, parallel
from dlm_jax.data import tokenizer as tokenizers
from dlm_jax.errors import UserError
from dlm_jax.kernels import family
from dlm_jax.samplers import reverse

GIB = 2.0**30
# HBM per chip by `device_kind` (public TPU and GPU specifications).
CHIP_HBM_GIB = {"TPU v4": 32.0, "TPU v5 lite": 16.0, "TPU v5": 95.0, "TPU v5p": 95.0,
                "TPU v6 lite": 32.0, "TPU v6e": 32.0, "NVIDIA H100 80GB HBM3": 80.0,
                "NVIDIA H200": 141.0, "NVIDIA A100-SXM4-80GB": 80.0}
RECOMPUTE_TOLERANCE = 1.02   # FLOPs per sequence above this x the reference: recompute


def topology_devices(name: str):
  """The devices of a TPU topology (compile-only), or this host's for `local`."""
  if name == "local":
    return jax.devices()
  # Compile-only: no TPU is opened, so libtpu's one-process-per-host lock (which makes a
  # second check, or a test run beside one, fail) does not apply.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  try:
    from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
    return topologies.get_topology_desc(platform="tpu", topology_name=name).devices
  except Exception as e:  # pylint: disable=broad-except
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise UserError(f"cannot describe TPU topology {name!r} ({reason}); it needs the TPU "
                    "compiler (`pip install -e '.[tpu]'`) and a name like v5e:2x2, v4:2x2x1, "
                    "v5p:2x2x1 or v6e:2x2") from None


def chip_hbm_gib(device, override: float | None = None) -> float | None:
  """HBM of one device in GiB: the override, the known chip's, the runtime's limit, or None
  (a CPU: host memory)."""
  if override:
    return override
  if device.device_kind in CHIP_HBM_GIB:
    return CHIP_HBM_GIB[device.device_kind]
  try:
    limit = (device.memory_stats() or {}).get("bytes_limit")
  except Exception:  # pylint: disable=broad-except
    limit = None
  return limit / GIB if limit else None


@dataclasses.dataclass
class Target:
  """A config on a set of devices."""
  config: Any
  topology: str
  devices: list
  vocab_size: int
  hbm_gib: float | None
  objective: Any

  @classmethod
  def make(cls, config, topology: str, vocab_size: int | None = None,
           hbm_gib: float | None = None) -> "Target":
    configuration.validate_config(config)
    devices = list(topology_devices(topology))
    vocab = vocab_size or tokenizers.nominal_vocab_size(config.data)
    objective = objectives.make_objective(
        config, lambda: family.abstract_process(config.kernel, vocab))
    return cls(config, topology, devices, vocab, chip_hbm_gib(devices[0], hbm_gib), objective)

  def describe(self) -> str:
    c = self.config
    kind = "{kernel} ({structure})".format(**self.objective.describe())
    return (f"{self.topology}: {len(self.devices)} x {self.devices[0].device_kind}, "
            f"HBM {self.hbm_gib} GiB per chip | model {c.model.size}, L = {c.data.seq_len}, "
            f"V = {self.vocab_size}, {kind}, dtype {c.model.dtype}, remat {c.model.remat}, "
            f"logits_chunk {c.model.logits_chunk}, mesh data={c.mesh.data} fsdp={c.mesh.fsdp}")

  def experiment(self, per_chip_batch: int) -> experiment.Experiment:
    cfg = self.config.copy_and_resolve_references()
    cfg.train.batch_size = cfg.eval.batch_size = per_chip_batch * len(self.devices)
    cfg.optim.grad_accum_steps = 1
    mesh = parallel.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, self.devices)
    vocab = tokenizers.VocabularyOnly(self.vocab_size)
    return experiment.assemble(cfg, "", mesh, vocab, self.objective)


def _measure(lowered, step: str, target: Target, exp: experiment.Experiment) -> dict:
  hbm_gib = target.hbm_gib
  row = {"step": step, "per_chip_batch": exp.config.train.batch_size // len(target.devices),
         "chip_hbm_gib": hbm_gib}
  try:
    compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-except
    text = str(e)
    if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
      return {**row, "fits": False, "hbm_gib_per_chip": math.nan,
              "tflop_per_chip_step": math.nan, "error": text.strip().splitlines()[0][:300]}
    raise
  mem = compiled.memory_analysis()
  hbm = (mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes
         - mem.alias_size_in_bytes)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return {**row, "fits": hbm_gib is None or hbm / GIB <= hbm_gib, "hbm_gib_per_chip": hbm / GIB,
          "temp_gib_per_chip": mem.temp_size_in_bytes / GIB,
          "argument_gib_per_chip": mem.argument_size_in_bytes / GIB,
          "tflop_per_chip_step": float(cost.get("flops", math.nan)) / 1e12}


def _key(exp: experiment.Experiment):
  return jax.ShapeDtypeStruct((), jax.eval_shape(jax.random.key, 0).dtype,
                              sharding=exp.replicated)


def compile_train_step(target: Target, exp: experiment.Experiment) -> dict:
  """Compiles the jitted, sharded, donating train step of `exp` (`target.experiment(b)`)."""
  batch = {"tokens": jax.ShapeDtypeStruct((exp.config.train.batch_size, exp.config.data.seq_len),
                                          jnp.int32, sharding=exp.batch_sharding)}
  lowered = exp.jit_train_step().lower(exp.abstract_state, batch, _key(exp))
  return _measure(lowered, "train", target, exp)


def compile_sampler(target: Target, exp: experiment.Experiment,
                    opts: reverse.SamplerOptions = reverse.SamplerOptions()) -> dict:
  """Compiles the reverse sampler (the whole loop; its FLOPs count a loop body once)."""
  shape = (exp.config.eval.batch_size, exp.config.data.seq_len)
  fixed = jax.ShapeDtypeStruct(shape, jnp.int32, sharding=exp.batch_sharding)
  mask = jax.ShapeDtypeStruct(shape, jnp.bool_, sharding=exp.batch_sharding)
  sample = exp.objective.sampler(exp.model, opts, exp.config.data.seq_len)
  lowered = sample.lower(exp.abstract_state.params, _key(exp), fixed, mask)
  return _measure(lowered, "sample", target, exp)


def parse_batches(text: str) -> list[int]:
  try:
    batches = [int(b) for b in text.split(",") if b.strip()]
  except ValueError:
    batches = []
  if not batches or min(batches) < 1:
    raise UserError(f"--per_chip_batch must be `auto` or positive integers like 8,16,32; "
                    f"got {text!r}")
  return sorted(set(batches))


def auto_batches(start: int = 1, limit: int = 4096):
  b = max(start, 1)
  while b <= limit:
    yield b
    b *= 2


def sweep(target: Target, batches, stop_when_full: bool, sampler: bool, report) -> list[dict]:
  """Compiles the train step at each batch (stopping at the first that does not fit when
  `stop_when_full`); adds FLOPs per sequence relative to the first batch compiled."""
  rows, first = [], None
  for b in batches:
    exp = target.experiment(b)
    row = compile_train_step(target, exp)
    if row["fits"] and first is None:
      first = row
    row["flops_per_sequence_vs_first"] = (
        row["tflop_per_chip_step"] / b / (first["tflop_per_chip_step"] / first["per_chip_batch"])
        if first and row["fits"] else math.nan)
    row.update(config_summary(target))
    rows.append(row)
    report(row)
    if sampler:
      report({**compile_sampler(target, exp), "flops_per_sequence_vs_first": math.nan,
              **config_summary(target)})
    if stop_when_full and not row["fits"]:
      break
  return rows


def config_summary(target: Target) -> dict:
  c = target.config
  return {"topology": target.topology, "device_kind": target.devices[0].device_kind,
          "chips": len(target.devices), **target.objective.describe(),
          "seq_len": c.data.seq_len, "vocab_size": target.vocab_size, "remat": c.model.remat,
          "logits_chunk": c.model.logits_chunk}


def summarise(rows: list[dict]) -> dict:
  """The largest fitting batch, and the largest without compiler-added recompute."""
  fitting = [r for r in rows if r["fits"]]
  if not fitting:
    raise UserError(f"not even {rows[0]['per_chip_batch']} sequence(s) per chip fit "
                    f"({rows[0].get('error', 'HBM')})")
  lean = [r for r in fitting if r["flops_per_sequence_vs_first"] <= RECOMPUTE_TOLERANCE]
  return {"largest_fitting": fitting[-1]["per_chip_batch"],
          "largest_without_recompute": lean[-1]["per_chip_batch"],
          "reference_batch": fitting[0]["per_chip_batch"]}
