"""grain input pipelines over token rows (`data/rows.py`): elements are *this process's
slice of one global batch*.

Global batch k holds rows perm_e(k*B), ..., perm_e(k*B + B - 1) where perm_e is a seeded
Feistel permutation of epoch e; process p of P reads the contiguous block [p*B/P,
(p+1)*B/P) of it. The global batch is therefore the same for any number of processes, and
the iterator state is one integer (checkpointable).
"""

from __future__ import annotations

import sys
from typing import Iterator

import grain
import numpy as np

from dlm_jax.errors import UserError


class ShuffledBatches:
  """Random-access source: index i -> this process's rows of global batch i."""

  def __init__(self, rows: np.ndarray, global_batch: int, seed: int,
               process_index: int = 0, process_count: int = 1):
    if global_batch % process_count:
      raise UserError(f"batch_size={global_batch} is not divisible by {process_count} processes")
    if len(rows) < global_batch:
      raise UserError(f"the training split has {len(rows)} rows of length {rows.shape[1]}, fewer "
                      f"than batch_size={global_batch}: add text or lower the batch size")
    self.rows, self.global_batch, self.seed = rows, global_batch, seed
    self.local_batch = global_batch // process_count
    self.offset = process_index * self.local_batch
    self.batches_per_epoch = len(rows) // global_batch

  def __len__(self) -> int:
    return sys.maxsize

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    epoch, b = divmod(int(i), self.batches_per_epoch)
    start = b * self.global_batch + self.offset
    seed = (self.seed * 1_000_003 + epoch) % (2**31)
    idx = [grain.experimental.index_shuffle(g, max_index=len(self.rows) - 1, seed=seed, rounds=4)
           for g in range(start, start + self.local_batch)]
    return {"tokens": np.asarray(self.rows[idx], np.int32)}


def train_iterator(rows: np.ndarray, global_batch: int, seed: int, process_index: int = 0,
                   process_count: int = 1, worker_count: int = 0):
  """A checkpointable grain iterator over local batches (see ShuffledBatches)."""
  ds = grain.MapDataset.source(ShuffledBatches(rows, global_batch, seed, process_index,
                                               process_count)).to_iter_dataset()
  if worker_count > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return iter(ds)


def eval_batches(rows: np.ndarray, global_batch: int, process_index: int = 0,
                 process_count: int = 1, max_batches: int = 0,
                 pad_id: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """One deterministic pass over the rows; the last batch is padded with invalid rows."""
  local = global_batch // process_count
  n_batches = -(-len(rows) // global_batch)
  if max_batches:
    n_batches = min(n_batches, max_batches)
  for b in range(n_batches):
    start = b * global_batch + process_index * local
    chunk = np.asarray(rows[start: start + local], np.int32)
    valid = np.zeros((local,), np.float32)
    valid[: len(chunk)] = 1.0
    if len(chunk) < local:
      chunk = np.concatenate([chunk, np.full((local - len(chunk), rows.shape[1]), pad_id, np.int32)])
    yield {"tokens": chunk, "valid": valid}
