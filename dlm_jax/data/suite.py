"""The zero-shot perplexity suite of MDLM (arXiv 2406.07524) and Duo (arXiv 2506.10892):
which split and column of which dataset, and which detokenizer, each benchmark uses.

Their protocol (`dlm_jax.evaluation.zero_shot`): documents are detokenized, tokenized by
the model's tokenizer and concatenated *without* EOS between them (Duo's
`insert_valid_eos=False`), then cut into rows of BOS + (L - 2) tokens + EOS (the `mdlm` row
layout, data/rows.py), whatever convention the model was trained with.

Each benchmark is read from a local copy when `datasets_dir` holds one, else from the local
Hugging Face cache (offline):
- `<datasets_dir>/<name>/`: a `datasets` directory written by `save_to_disk` (a Dataset, or
  a DatasetDict with the benchmark's split);
- `<datasets_dir>/<name>.jsonl`: one document per line in the benchmark's column (read as
  the corpus reads .jsonl: empty texts skipped, a bad line is an error naming it);
- `<datasets_dir>/<name>.txt`: one document per line, line endings kept (as the Hugging
  Face wikitext rows are).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator

from dlm_jax.data import detokenizers, readers
from dlm_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Benchmark:
  hf_name: str          # on the Hugging Face hub (read from the local cache)
  hf_config: str
  split: str
  column: str
  detokenizer: str


SUITE = {
    "wikitext2": Benchmark("wikitext", "wikitext-2-raw-v1", "validation", "text", "wikitext"),
    "wikitext103": Benchmark("wikitext", "wikitext-103-raw-v1", "validation", "text",
                             "wikitext"),
    "ptb": Benchmark("ptb_text_only", "", "validation", "sentence", "ptb"),
    # MDLM reads OpenAI's lambada_test.jsonl; EleutherAI/lambada_openai holds the same texts.
    "lambada": Benchmark("EleutherAI/lambada_openai", "en", "test", "text", "lambada"),
    "ag_news": Benchmark("ag_news", "", "test", "text", ""),
    "scientific_papers_pubmed": Benchmark("scientific_papers", "pubmed", "validation",
                                          "article", "scientific_papers"),
    "scientific_papers_arxiv": Benchmark("scientific_papers", "arxiv", "validation", "article",
                                         "scientific_papers"),
    "lm1b": Benchmark("lm1b", "", "test", "text", "lm1b"),
}


def _local_copy(name: str, datasets_dir: str) -> str:
  for candidate in (name, f"{name}.jsonl", f"{name}.txt"):
    path = os.path.join(datasets_dir, candidate)
    if datasets_dir and os.path.exists(path):
      return path
  return ""


def _lines(path: str) -> Iterator[str]:
  with open(path, encoding="utf-8", errors="replace") as f:
    yield from f


def raw_documents(name: str, datasets_dir: str = "") -> tuple[Iterator[str], str]:
  """(the benchmark's documents before detokenization, where they were read from)."""
  if name not in SUITE:
    raise UserError(f"unknown zero-shot dataset {name!r}; the suite is {sorted(SUITE)}")
  bench = SUITE[name]
  path = _local_copy(name, datasets_dir)
  if path.endswith(".jsonl"):
    return iter(readers.jsonl_documents(path, bench.column)), path
  if path.endswith(".txt"):
    return _lines(path), path
  hf_name = path or bench.hf_name
  where = path or f"hf:{bench.hf_name}" + (f"/{bench.hf_config}" if bench.hf_config else "")
  return (readers.hf_documents(hf_name, bench.hf_config, bench.split, bench.column),
          f"{where} [{bench.split}]")


def documents(name: str, datasets_dir: str = "") -> tuple[Iterator[str], str]:
  """(the benchmark's documents, detokenized as MDLM / Duo do, their source)."""
  docs, source = raw_documents(name, datasets_dir)
  rule = SUITE[name].detokenizer
  return (detokenizers.detokenize(rule, d) for d in docs), source
