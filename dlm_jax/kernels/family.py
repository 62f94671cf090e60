"""The family's registry: `make_process` picks the one member a run trains, once.

| kernel       | components                         | table      | member (module)          |
|--------------|------------------------------------|------------|--------------------------|
| masking      | mask                               | -          | Masking (masking)        |
| uniform      | glob                               | -          | Uniform (uniform)        |
| semdlm       | sem                                | partition  | SemDLM (semdlm)          |
| semdlm_plus  | sem + mask                         | partition  | SemDLMPlusMask           |
| semdlm_plus  | sem + glob (uniform)               | partition  | SemDLMPlusUniform        |
| semdlm,      | sem [+ glob or mask]               | topk       | Topk (topk)              |
| semdlm_plus  |                                    |            |                          |

Everything else in the code base calls the process's methods and reads its capabilities
(process.py); nothing outside kernels/ asks which member it is.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax.errors import UserError
from dlm_jax.kernels import schedules
from dlm_jax.kernels.clusters import PartitionTable
from dlm_jax.kernels.masking import Masking
from dlm_jax.kernels.process import Process
from dlm_jax.kernels.semdlm import SemDLM
from dlm_jax.kernels.semdlm_plus_mask import SemDLMPlusMask
from dlm_jax.kernels.semdlm_plus_uniform import SemDLMPlusUniform
from dlm_jax.kernels.topk import Topk, TopkTable
from dlm_jax.kernels.uniform import Uniform

KERNELS = ("masking", "uniform", "semdlm", "semdlm_plus")
PARAMETERIZATIONS = ("mean", "mixture")
SEMANTIC = ("semdlm", "semdlm_plus")
GLOBAL_KINDS = ("uniform", "mask")
TABLES = {"partition": PartitionTable, "topk": TopkTable}

# (kernel.name, global part, table kind) -> the member.
MEMBERS = {
    ("masking", None, "none"): Masking,
    ("uniform", None, "none"): Uniform,
    ("semdlm", None, "partition"): SemDLM,
    ("semdlm_plus", "mask", "partition"): SemDLMPlusMask,
    ("semdlm_plus", "uniform", "partition"): SemDLMPlusUniform,
    ("semdlm", None, "topk"): Topk,
    ("semdlm_plus", "mask", "topk"): Topk,
    ("semdlm_plus", "uniform", "topk"): Topk,
}


def _components(kernel_cfg) -> dict:
  main = schedules.make_schedule(kernel_cfg.schedule, kernel_cfg.eps, kernel_cfg.power,
                                 "kernel.schedule")
  if kernel_cfg.name == "semdlm_plus":
    if kernel_cfg.global_kind not in GLOBAL_KINDS:
      raise UserError(f"kernel.global_kind must be one of {list(GLOBAL_KINDS)}, got "
                      f"{kernel_cfg.global_kind!r}")
    glob = schedules.make_schedule(kernel_cfg.global_schedule, kernel_cfg.global_eps,
                                   kernel_cfg.global_power, "kernel.global_schedule")
    return {"sem": main, "glob" if kernel_cfg.global_kind == "uniform" else "mask": glob}
  return {"masking": {"mask": main}, "uniform": {"glob": main},
          "semdlm": {"sem": main}}[kernel_cfg.name]


def needs_unigram(kernel_cfg) -> bool:
  """Whether p_1 depends on the training unigram in a way that matters: not for masking,
  whose p_1 is the mask up to the eps = alpha(1) of clean tokens (there the real-token part
  is uniform, so building the process needs no corpus; the bound stays a bound)."""
  return kernel_cfg.name != "masking"


def _prior_kl_table(process: Process) -> np.ndarray:
  """KL(q_1(.|x) || p_1) for every x in O(V k) (numpy float64, once per run).

  q_1(.|x) = kappa [A delta_x + B N_x + C / V] + (1 - kappa) delta_m puts kappa C / V on every
  real token outside S_x = {x} + N_x: the KL is a sum over S_x (and the mask) plus that
  constant mass times sum_{y outside S_x} (log(kappa C / V) - log p_1(y)), which comes from
  the sum of log p_1 over all V minus its sum over S_x."""
  V = process.vocab_size
  p1 = np.asarray(process.prior_probs(), np.float64)
  one = jnp.asarray(1.0)
  A, B, C, kappa = [float(c) for c in process.coefficients(one)]
  log_p1 = np.log(np.maximum(p1, 1e-300))
  xs = np.arange(V)
  ids, mass = xs[:, None], np.full((V, 1), kappa * A)
  if process.table is not None and B > 0:
    table_ids = np.asarray(process.table.ids)
    ids = np.concatenate([ids, np.where(table_ids >= 0, table_ids, xs[:, None])], 1)
    mass = np.concatenate([mass, kappa * B * np.where(
        table_ids >= 0, np.asarray(process.table.weights, np.float64), 0.0)], 1)
  # Merge repeated ids of a row (N_x of a partition holds x itself) into their first slot.
  first = np.ones(ids.shape, bool)
  for j in range(1, ids.shape[1]):
    same = ids[:, :j] == ids[:, j:j + 1]
    first[:, j] = ~same.any(1)
    earliest = np.argmax(same, 1)
    rows = np.flatnonzero(same.any(1))
    mass[rows, earliest[rows]] += mass[rows, j]
  uniform = kappa * C / V
  q = np.where(first, mass + uniform, 0.0)
  out = np.sum(np.where(q > 0, q * (np.log(np.where(q > 0, q, 1.0)) - log_p1[ids]), 0.0), 1)
  if uniform > 0:
    outside = V - first.sum(1)
    log_p1_outside = log_p1[:V].sum() - np.sum(np.where(first, log_p1[ids], 0.0), 1)
    out += uniform * (outside * np.log(uniform) - log_p1_outside)
  if process.has_mask_token:
    q_m = float(process.one_minus_kappa(one))
    if q_m > 0:
      out += q_m * (np.log(q_m) - log_p1[process.mask_id])
  return out.astype(np.float32)


def _static_fields(kernel_cfg) -> dict:
  """The process's static fields from `config.kernel`: name, schedules, parameterisation."""
  parameterization = kernel_cfg.get("parameterization", "mean")
  if parameterization not in PARAMETERIZATIONS:
    raise UserError(f"kernel.parameterization must be one of {list(PARAMETERIZATIONS)}, got "
                    f"{parameterization!r}")
  return {"name": kernel_cfg.name, "parameterization": parameterization,
          "bulk_samples": int(kernel_cfg.get("bulk_samples", 0)),
          **(_components(kernel_cfg) if kernel_cfg.name in KERNELS else {})}


def _member(kernel_cfg, table_kind: str):
  name = kernel_cfg.name
  if name not in KERNELS:
    raise UserError(f"unknown kernel {name!r}; expected one of {list(KERNELS)}")
  global_kind = kernel_cfg.global_kind if name == "semdlm_plus" else None
  return MEMBERS[(name, global_kind, table_kind)]


def make_process(kernel_cfg, vocab_size: int, table=None, unigram=None,
                 prior_kl_table=None) -> Process:
  """The process named by `config.kernel` for a tokenizer of `vocab_size` ids.

  `table`: the semantic members' neighbour table, a neighbors.NeighborTable or its device
  form (clusters.PartitionTable | topk.TopkTable, as a checkpoint restores it); `unigram`
  (V,) defines p_1 (default: uniform); `prior_kl_table` (V,): KL(q_1(.|x) || p_1) when
  already computed (a restored run), else computed here.
  """
  static = _static_fields(kernel_cfg)
  device_table = None
  if static.get("sem") is not None:
    if table is None:
      raise UserError(f"kernel {kernel_cfg.name!r} needs a neighbour table (kernel.neighbors)")
    if isinstance(table, tuple(TABLES.values())):
      device_table = table
    else:
      if table.vocab_size != vocab_size:
        raise UserError(f"neighbour table has V={table.vocab_size}, the tokenizer {vocab_size}")
      device_table = TABLES[table.kind].from_numpy(table)
  member = _member(kernel_cfg, "none" if device_table is None else device_table.kind)
  unigram = (np.full((vocab_size,), 1.0 / vocab_size) if unigram is None
             else np.asarray(unigram, np.float64) / np.sum(unigram))
  process = member(vocab_size=vocab_size, table=device_table, unigram=jnp.asarray(unigram),
                   **static)
  if prior_kl_table is None:
    prior_kl_table = _prior_kl_table(process)
  return process.replace(prior_kl_table=jnp.asarray(prior_kl_table, jnp.float32))


def process_arrays(process: Process) -> dict:
  """The process's arrays as a flat dict of host arrays: what a checkpoint stores of it (its
  static fields come from the run's config)."""
  arrays = {"unigram": process.unigram, "prior_kl_table": process.prior_kl_table}
  if process.table is not None:
    arrays.update({f"table_{name}": value for name, value in vars(process.table).items()})
  return {name: np.asarray(value) for name, value in arrays.items()}


def process_from_arrays(kernel_cfg, vocab_size: int, arrays: dict) -> Process:
  """The process `process_arrays` saved, for the run's `config.kernel`: nothing is rebuilt."""
  fields = {name[len("table_"):]: jnp.asarray(value) for name, value in arrays.items()
            if name.startswith("table_")}
  table = None
  if fields:
    kind = "topk" if "in_ids" in fields else "partition"
    table = TABLES[kind](**fields)
  return make_process(kernel_cfg, vocab_size, table, np.asarray(arrays["unigram"], np.float64),
                      prior_kl_table=arrays["prior_kl_table"])


def abstract_process(kernel_cfg, vocab_size: int) -> Process:
  """The process of `kernel_cfg` with jax.ShapeDtypeStruct leaves of the largest shapes its
  table can take (a balanced partition: ceil(V / k) clusters of k; top-k: in-degree at its cap,
  kernel.max_in_degree or 4k): for compiling and fit checks (dlm_jax.fit) without a corpus."""
  V, k = vocab_size, kernel_cfg.k
  sds = lambda shape, dtype=jnp.float32: jax.ShapeDtypeStruct(shape, dtype)
  table = None
  if kernel_cfg.name in SEMANTIC:
    if kernel_cfg.neighbors == "partition":
      table = PartitionTable(ids=sds((V, k), jnp.int32), weights=sds((V, k)),
                             cluster=sds((V,), jnp.int32),
                             members=sds((-(-V // k), k), jnp.int32), size=sds((V,)))
    else:
      k_in = kernel_cfg.max_in_degree or 4 * k
      table = TopkTable(ids=sds((V, k), jnp.int32), weights=sds((V, k)),
                        in_ids=sds((V, k_in), jnp.int32), in_weights=sds((V, k_in)))
  member = _member(kernel_cfg, "none" if table is None else table.kind)
  return member(vocab_size=V, table=table, unigram=sds((V,)), prior_kl_table=sds((V,)),
                **_static_fields(kernel_cfg))
