r"""Tokenize a corpus once into ArrayRecord shards of rows that grain reads.

  python -m dlm_jax.data.prepare --config=configs/owt_masking.py \
      --config.data.train_pattern='/data/openwebtext/*.jsonl' --output_dir=/data/owt_gpt2_1024

Streams documents of each split (local files or a prepared TFDS dataset)
through the config's tokenizer and sequence mode and writes
<output_dir>/<split>-NNNNN.array_record (one row of seq_len int32 per record)
plus <split>.json (rows, shards, seq_len, mode, tokenizer hash). Train with
--config.data.prepared_dir=<output_dir>; a mismatch of seq_len, mode or
tokenizer is refused.
"""

from __future__ import annotations

import json
import os
import sys
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


def prepare(config, output_dir: str, workdir: str = "", rows_per_shard: int = 100_000,
            splits=sources.SPLITS) -> dict:
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  configuration.validate_config(config)
  os.makedirs(output_dir, exist_ok=True)
  tokenizer = get_tokenizer(config.data, workdir or output_dir)
  d = config.data
  summary = {}
  for split in splits:
    start, shards, rows, writer = time.time(), [], 0, None
    for row in iter_rows(sources.documents(d, split), tokenizer, Layout.of(d), split):
      if rows % rows_per_shard == 0:
        if writer is not None:
          writer.close()
        shards.append(f"{split}-{len(shards):05d}.array_record")
        writer = array_record_module.ArrayRecordWriter(os.path.join(output_dir, shards[-1]),
                                                       "group_size:1")
      writer.write(row.astype("int32").tobytes())
      rows += 1
    if writer is not None:
      writer.close()
    if rows == 0:
      raise UserError(f"the {split} split yields no row of seq_len={d.seq_len} tokens")
    meta = {"split": split, "rows": rows, "shards": shards, "seq_len": d.seq_len,
            "mode": d.mode, "convention": d.convention, "tokenizer": tokenizer.fingerprint(),
            "tokenizer_kind": tokenizer.kind,
            "vocab_size": tokenizer.vocab_size, "seconds": time.time() - start}
    with open(os.path.join(output_dir, f"{split}.json"), "w", encoding="utf-8") as f:
      json.dump(meta, f, indent=2)
    summary[split] = meta
    print(f"{split}: {rows} rows of {d.seq_len} tokens in {len(shards)} shard(s), "
          f"{meta['seconds']:.1f}s", flush=True)
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
