"""Read and write safetensors files (Hugging Face's `safetensors` package, numpy arrays;
bfloat16 through ml_dtypes), every failure one line that names the file."""

from __future__ import annotations

import os

import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy: BF16 tensors read and write)
import numpy as np
import safetensors
import safetensors.numpy

from dlm_jax import atomic_files
from dlm_jax.errors import UserError


def _opened(path: str):
  if not os.path.exists(path):
    raise UserError(f"no such file: {path}")
  try:
    return safetensors.safe_open(path, framework="numpy")
  except (safetensors.SafetensorError, OSError, ValueError) as e:
    raise UserError(f"{path} is not a valid safetensors file ({e}): it is damaged or "
                    "truncated; copy it again") from None


def load(path: str) -> dict[str, np.ndarray]:
  """All tensors of a safetensors file, as numpy arrays."""
  with _opened(path) as f:
    try:
      return {name: f.get_tensor(name) for name in f.keys()}
    except (safetensors.SafetensorError, TypeError, ValueError) as e:
      raise UserError(f"{path}: a tensor cannot be read ({e})") from None


def metadata(path: str) -> dict[str, str]:
  """The file's `__metadata__` ({} without one)."""
  with _opened(path) as f:
    return dict(f.metadata() or {})


def save(path: str, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None):
  """Writes `tensors` (name -> array) atomically: the old file stays until the new one is
  complete."""
  arrays = {name: np.ascontiguousarray(a) for name, a in tensors.items()}
  try:
    blob = safetensors.numpy.save(arrays, metadata=None if not metadata else {
        str(k): str(v) for k, v in metadata.items()})
  except (safetensors.SafetensorError, TypeError, ValueError) as e:
    raise UserError(f"cannot write {path} as safetensors ({e})") from None
  with atomic_files.replace_on_success(path, "safetensors file") as f:
    f.write(blob)
