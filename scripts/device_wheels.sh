#!/usr/bin/env bash
# Wheels the GPU machine of the `device` tool lacks (its Python 3.12 has jax, flax, optax,
# orbax, absl, sentencepiece, protobuf, etils, cloudpickle, pyyaml; not grain or ml-collections),
# fetched here for CPython 3.12 / x86-64 into .whl/ (git-ignored through .git/info/exclude).
#
#   scripts/device_wheels.sh            # download, then check every requirement is met
#   scripts/device_wheels.sh --check    # only the check (a dry run of the device install)
#
# On the device, every call that needs them names `.whl` in `carry` and starts with
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit;
# TensorFlow Datasets is imported only by data.source=tfds and is not carried.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS="grain==0.2.18 array-record==0.8.6 ml-collections==1.1.0 more-itertools==11.2.1 portpicker==1.6.0"
# What the device image holds (the tool's KINDS.md), of the names these wheels require.
DEVICE_HAS="absl-py numpy protobuf etils cloudpickle pyyaml psutil"
if [[ "${1:-}" != "--check" ]]; then
  grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl $WHEELS
fi
python3 - "$DEVICE_HAS" <<'PY'
import glob, re, sys, zipfile
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
have = {norm(n) for n in sys.argv[1].split()}
wheels = glob.glob(".whl/*.whl")
have |= {norm(w.split("/")[-1].split("-")[0]) for w in wheels}
missing, total = [], 0
for w in wheels:
  with zipfile.ZipFile(w) as z:
    meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
  for line in meta.splitlines():
    if line.startswith("Requires-Dist:") and "extra ==" not in line:
      req = line.split(":", 1)[1].split(";")[0].strip()
      marker = line.split(";", 1)[1] if ";" in line else ""
      if "python_version < \"3.1" in marker or "sys_platform == \"win" in marker:
        continue
      name = norm(re.split(r"[ <>=!~\[(]", req)[0])
      if name not in have:
        missing.append(f"{w.split('/')[-1]} needs {req}")
  total += len(open(w, "rb").read())
print(f"{len(wheels)} wheels, {total / 2**20:.1f} MiB (the call's tree limit: 64 MiB)")
if missing or not wheels:
  sys.exit("unmet: " + ("; ".join(missing) or "no wheels in .whl/"))
print("every requirement is met by the wheels or the device image")
PY
