"""Reading the .npy / .npz files users hand to the tools (neighbour tables, embeddings,
reference logits): never unpickled, and every failure one UserError line."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from dlm_jax.errors import UserError


def _numeric(array: np.ndarray, path: str, what: str, name: str = "") -> np.ndarray:
  if array.dtype.kind not in "biuf":
    label = f" array {name!r}" if name else ""
    raise UserError(f"{what} {path}{label} holds {array.dtype} values, not numbers")
  return array


def load_npz(path: str, what: str, keys=()) -> dict[str, np.ndarray]:
  """{name: array} of an .npz file (numeric arrays only, `keys` required)."""
  if not os.path.exists(path):
    raise UserError(f"{what} not found: {path}")
  try:
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
      raise UserError(f"{what} {path} is a single array (.npy); expected an .npz archive "
                      f"with {', '.join(keys) or 'named arrays'}")
    with loaded as f:
      arrays = {k: f[k] for k in f.files}
  except UserError:
    raise
  except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
    raise UserError(f"{what} {path} cannot be read as .npz ({type(e).__name__}: "
                    f"{str(e)[:120]})") from None
  missing = [k for k in keys if k not in arrays]
  if missing:
    raise UserError(f"{what} {path} has no {', '.join(missing)} array")
  return arrays


def load_npy(path: str, what: str) -> np.ndarray:
  """A numeric array from an .npy file."""
  if not os.path.exists(path):
    raise UserError(f"{what} not found: {path}")
  try:
    array = np.load(path, allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:
    raise UserError(f"{what} {path} cannot be read as .npy ({type(e).__name__}: "
                    f"{str(e)[:120]})") from None
  if not isinstance(array, np.ndarray):
    raise UserError(f"{what} {path} is an .npz archive; expected one .npy array")
  return _numeric(array, path, what)


def numeric(arrays: dict, path: str, what: str, keys) -> None:
  for key in keys:
    _numeric(arrays[key], path, what, key)
