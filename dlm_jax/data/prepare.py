r"""Tokenize a corpus once into ArrayRecord shards of rows that grain reads.

  python -m dlm_jax.data.prepare --config=configs/owt_masking.py --config.data.source=files \
      --config.data.train_pattern='/data/openwebtext/*.jsonl' \
      --config.data.validation_documents=100000 --output_dir=/data/owt_gpt2_1024

Streams documents of each split (local files or a prepared TFDS dataset)
through the config's tokenizer and sequence mode and writes
<output_dir>/<split>-NNNNN.array_record (one row of seq_len int32 per record)
plus <split>.json (rows, shards, seq_len, mode, tokenizer hash). Each split is written into a
staging directory first and moved in when complete: a prepare that fails leaves what was
there as it was. Train with
--config.data.prepared_dir=<output_dir>; a mismatch of seq_len, mode or
tokenizer is refused.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import tempfile
import time

from absl import flags
from ml_collections import config_flags

from dlm_jax import cli, configuration
from dlm_jax.data import sources
from dlm_jax.errors import UserError
from dlm_jax.data.tokenizer import get_tokenizer
from dlm_jax.data.rows import Layout, iter_rows


def define_flags():
  config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.")
  flags.DEFINE_string("output_dir", None, "Where the shards go.")
  flags.DEFINE_string("workdir", "", "Workdir (only for a SentencePiece tokenizer trained there).")
  flags.DEFINE_integer("rows_per_shard", 100_000, "Rows per ArrayRecord file.")
  flags.DEFINE_list("splits", list(sources.SPLITS), "Splits to prepare.")


def _write_split(d, split: str, tokenizer, directory: str, rows_per_shard: int, module) -> dict:
  """Writes the shards of `split` into `directory`; returns their description."""
  start, shards, rows, writer = time.time(), [], 0, None
  try:
    for row in iter_rows(sources.documents(d, split), tokenizer, Layout.of(d), split):
      if rows % rows_per_shard == 0:
        if writer is not None:
          writer.close()
        shards.append(f"{split}-{len(shards):05d}.array_record")
        writer = module.ArrayRecordWriter(os.path.join(directory, shards[-1]), "group_size:1")
      writer.write(row.astype("int32").tobytes())
      rows += 1
  finally:
    if writer is not None:
      writer.close()
  if rows == 0:
    raise UserError(f"the {split} split yields no row of seq_len={d.seq_len} tokens")
  return {"split": split, "rows": rows, "shards": shards, "seq_len": d.seq_len,
          "mode": d.mode, "convention": d.convention, "tokenizer": tokenizer.fingerprint(),
          "tokenizer_kind": tokenizer.kind,
          "vocab_size": tokenizer.vocab_size, "seconds": time.time() - start}


def _publish(staging: str, output_dir: str, split: str, meta: dict) -> None:
  """Moves a complete split from `staging` into `output_dir`: its shards replace the old
  ones, then its description replaces the old one (written last: a split whose shards and
  description disagree is refused by training, never read)."""
  old = set(glob.glob(os.path.join(glob.escape(output_dir), f"{split}-*.array_record")))
  for name in meta["shards"]:
    os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
    old.discard(os.path.join(output_dir, name))
  for path in old:
    os.remove(path)
  described = os.path.join(staging, f"{split}.json")
  with open(described, "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=2)
  os.replace(described, os.path.join(output_dir, f"{split}.json"))


def prepare(config, output_dir: str, workdir: str = "", rows_per_shard: int = 100_000,
            splits=sources.SPLITS) -> dict:
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  configuration.validate_config(config)
  os.makedirs(output_dir, exist_ok=True)
  tokenizer = get_tokenizer(config.data, workdir or output_dir)
  d = config.data
  summary = {}
  for split in splits:
    staging = tempfile.mkdtemp(prefix=f".{split}-staging-", dir=output_dir)
    try:
      meta = _write_split(d, split, tokenizer, staging, rows_per_shard, array_record_module)
      _publish(staging, output_dir, split, meta)
    finally:
      shutil.rmtree(staging, ignore_errors=True)
    summary[split] = meta
    print(f"{split}: {meta['rows']} rows of {d.seq_len} tokens in {len(meta['shards'])} "
          f"shard(s), {meta['seconds']:.1f}s", flush=True)
  return summary


def main(argv):
  del argv
  f = flags.FLAGS
  if f.config is None or not f.output_dir:
    sys.exit("dlm_jax.data.prepare: error: --config and --output_dir are required")
  cli.run("dlm_jax.data.prepare", prepare, f.config, f.output_dir, f.workdir, f.rows_per_shard,
          f.splits)


if __name__ == "__main__":
  cli.run_app("dlm_jax.data.prepare", main, define_flags)
