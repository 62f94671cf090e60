"""Read and write the safetensors format with numpy only (no torch, no extra package).

Layout: an 8-byte little-endian header length N, N bytes of JSON
({name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}), then
the raw little-endian tensor bytes, offsets relative to the end of the header.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile

import ml_dtypes
import numpy as np

from dlm_jax.errors import UserError

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16,
           "BF16": ml_dtypes.bfloat16, "I64": np.int64, "I32": np.int32, "I16": np.int16,
           "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


def read_header(path: str) -> tuple[dict, int]:
  """(header dict, offset of the data buffer)."""
  if not os.path.exists(path):
    raise UserError(f"no such file: {path}")
  with open(path, "rb") as f:
    prefix = f.read(8)
    if len(prefix) < 8:
      raise UserError(f"{path} is not a safetensors file (shorter than 8 bytes)")
    (n,) = struct.unpack("<Q", prefix)
    if n > os.path.getsize(path) - 8:
      raise UserError(f"{path} is not a safetensors file (header length {n} beyond the file)")
    try:
      header = json.loads(f.read(n))
    except ValueError:
      raise UserError(f"{path} is not a safetensors file (unreadable JSON header)") from None
  return header, 8 + n


def load(path: str) -> dict[str, np.ndarray]:
  """All tensors of a safetensors file, as read-only numpy arrays (memory-mapped)."""
  header, start = read_header(path)
  data = np.memmap(path, dtype=np.uint8, mode="r")
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _DTYPES:
      raise UserError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
    begin, end = info["data_offsets"]
    dtype = np.dtype(_DTYPES[info["dtype"]])
    shape = tuple(info["shape"])
    if end - begin != dtype.itemsize * int(np.prod(shape)):
      raise UserError(f"{path}: tensor {name!r} has {end - begin} bytes for shape {shape}")
    out[name] = data[start + begin: start + end].view(dtype).reshape(shape)
  return out


def save(path: str, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None):
  """Writes `tensors` (name -> array) atomically; names in sorted order, 8-byte aligned."""
  header, offset, arrays = {}, 0, []
  for name in sorted(tensors):
    a = np.ascontiguousarray(tensors[name])
    if a.dtype not in _NAMES:
      raise UserError(f"cannot write tensor {name!r} of dtype {a.dtype} as safetensors")
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    header[name] = {"dtype": _NAMES[a.dtype], "shape": list(a.shape),
                    "data_offsets": [offset, offset + a.nbytes]}
    offset += a.nbytes
    arrays.append(a)
  if metadata:
    header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=directory, delete=False) as f:
    f.write(struct.pack("<Q", len(blob)) + blob)
    for a in arrays:
      f.write(a.tobytes())
  os.replace(f.name, path)
