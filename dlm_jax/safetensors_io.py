"""Read and write the safetensors format with numpy only (no torch, no extra package).

Layout: an 8-byte little-endian header length N, N bytes of JSON
({name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}), then
the raw little-endian tensor bytes, offsets relative to the end of the header.
"""

from __future__ import annotations

import json
import os
import struct

import ml_dtypes
import numpy as np

from dlm_jax import atomic_files
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
  if not isinstance(header, dict):
    raise UserError(f"{path} is not a safetensors file (its header is a "
                    f"{type(header).__name__}, not an object)")
  return header, 8 + n


def _entry(path: str, name: str, info, data_bytes: int):
  """(dtype, shape, begin, end) of one header entry, checked against the file."""
  fail = lambda why: UserError(f"{path}: tensor {name!r} {why}")
  if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
    raise fail("lacks dtype, shape or data_offsets")
  if info["dtype"] not in _DTYPES:
    raise fail(f"has unsupported dtype {info['dtype']}")
  shape, offsets = info["shape"], info["data_offsets"]
  if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)):
    raise fail(f"has an invalid shape {shape!r}")
  if (not isinstance(offsets, list) or len(offsets) != 2
      or not all(isinstance(o, int) for o in offsets) or not 0 <= offsets[0] <= offsets[1]):
    raise fail(f"has invalid data_offsets {offsets!r}")
  if offsets[1] > data_bytes:
    raise fail(f"ends at byte {offsets[1]} of a data buffer of {data_bytes}: the file is "
               "truncated")
  dtype = np.dtype(_DTYPES[info["dtype"]])
  if offsets[1] - offsets[0] != dtype.itemsize * int(np.prod(shape)):
    raise fail(f"has {offsets[1] - offsets[0]} bytes for shape {tuple(shape)}")
  return dtype, tuple(shape), offsets[0], offsets[1]


def load(path: str) -> dict[str, np.ndarray]:
  """All tensors of a safetensors file, as read-only numpy arrays (memory-mapped)."""
  header, start = read_header(path)
  data_bytes = os.path.getsize(path) - start
  entries = {name: _entry(path, name, info, data_bytes) for name, info in header.items()
             if name != "__metadata__"}
  data = np.memmap(path, dtype=np.uint8, mode="r") if data_bytes > 0 else np.zeros(0, np.uint8)
  return {name: data[start + begin: start + end].view(dtype).reshape(shape)
          for name, (dtype, shape, begin, end) in entries.items()}


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
  with atomic_files.replace_on_success(path, "safetensors file") as f:
    f.write(struct.pack("<Q", len(blob)) + blob)
    for a in arrays:
      f.write(a.tobytes())
