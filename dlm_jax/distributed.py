"""Multi-controller start-up: one process per host, `jax.distributed.initialize()`.

On TPU VMs and SLURM / Open MPI clusters JAX discovers everything from the
environment; elsewhere pass the coordinator explicitly (flags of the entry
points or the environment variables below). CPU runs (tests, laptops) use gloo
collectives.
"""

from __future__ import annotations

import os

import jax
from absl import flags

flags.DEFINE_string("coordinator_address", os.environ.get("DLM_JAX_COORDINATOR", ""),
                    "host:port of process 0 (multi-process runs outside TPU/SLURM).")
flags.DEFINE_integer("num_processes", int(os.environ.get("DLM_JAX_NUM_PROCESSES", "0")),
                     "Number of processes (with --coordinator_address).")
flags.DEFINE_integer("process_id", int(os.environ.get("DLM_JAX_PROCESS_ID", "-1")),
                     "This process's index (with --coordinator_address).")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() with auto-detection (TPU pods, SLURM).")


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1,
               auto: bool = False) -> None:
  """Initialises JAX's multi-controller runtime when asked; a no-op for single-process runs."""
  if coordinator_address:
    # Only the CPU backend reads this; it makes CPU-only multi-process runs work.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  elif auto:
    jax.distributed.initialize()


def initialize_from_flags() -> None:
  f = flags.FLAGS
  initialize(f.coordinator_address, f.num_processes, f.process_id, f.distributed)
