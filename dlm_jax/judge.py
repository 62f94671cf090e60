"""Generative perplexity as MDLM / Duo measure it: samples judged by a Hugging Face GPT-2.

`--judge=hf:DIR` names a GPT-2 directory (config.json + model.safetensors; gpt2-large in the
papers) and its tokenizer: DIR/tokenizer.json when present (Hugging Face `tokenizers`),
else GPT-2's BPE through tiktoken (a local gpt2.tiktoken, as data.tokenizer=gpt2 finds it).
The protocol, exactly as MDLM's `compute_generative_perplexity` (arXiv 2406.07524) and Duo's
`eval` (arXiv 2506.10892) compute it:

1. each sample is decoded to text with its end-of-text tokens kept (as the judge's EOS text;
   with GPT-2 models, whose BOS is EOS, the leading BOS too) and PAD dropped;
2. re-encoded by the judge's tokenizer (its special EOS text becomes the EOS id), truncated to
   the model's sequence length, right-padded with EOS to the longest sample;
3. scored in chunks of the judge's context (n_positions), no BOS added: position j predicts
   token j + 1 within a chunk;
4. the targets counted are every non-EOS token plus the first EOS of the chunk (when that
   first EOS is the chunk's first token, no EOS is counted): later EOS and the padding are
   not counted;
5. generative_ppl = exp(sum of NLL / number of counted tokens) over all samples (token
   weighted, not a mean of per-sample perplexities) — an estimate from N samples;
6. entropy = the mean over samples of the unigram entropy (nats) of the sample's generated
   ids (the model's own ids, specials included, as Duo computes it).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import numpy as np

from dlm_jax import quality
from dlm_jax.data.tokenizer import GPT2Tokenizer, encode_plain, tokenizer_json
from dlm_jax.errors import UserError
from dlm_jax.models import gpt2

EOS_TEXT = "<|endoftext|>"


@dataclasses.dataclass
class Judge:
  model: Any
  params: Any
  encode: Callable[[list[str]], list[list[int]]]
  eos_id: int
  eos_text: str
  context: int
  source: str


def _tokenizer_json(path: str):
  tok = tokenizer_json(path)
  return lambda texts: encode_plain(tok, texts)


def load(spec: str, dtype: str = "float32") -> Judge:
  """The judge named by `hf:DIR`."""
  if not spec.startswith("hf:"):
    raise UserError(f"--judge={spec!r}: a Hugging Face judge is named hf:DIR")
  directory = spec[3:]
  model, params = gpt2.load(directory, dtype)
  path = os.path.join(directory, "tokenizer.json")
  encode = _tokenizer_json(path) if os.path.exists(path) else GPT2Tokenizer().encode_with_eos
  eos_text = EOS_TEXT
  special = os.path.join(directory, "special_tokens_map.json")
  if os.path.exists(special):
    with open(special, encoding="utf-8") as f:
      eos = json.load(f).get("eos_token", EOS_TEXT)
    eos_text = eos["content"] if isinstance(eos, dict) else eos
  eos_id = model.cfg.eos_token_id
  if encode([eos_text])[0] != [eos_id]:
    raise UserError(f"the judge's tokenizer does not encode {eos_text!r} as its eos_token_id "
                    f"{eos_id}: give DIR a tokenizer.json that matches config.json")
  return Judge(model, params, encode, eos_id, eos_text, model.cfg.n_positions,
               os.path.abspath(directory))


def protocol_text(ids, tokenizer, eos_text: str) -> str:
  """One sample as text: PAD dropped, each EOS (and a BOS that is EOS) as `eos_text`, a
  distinct BOS dropped, the rest decoded by the model's tokenizer."""
  parts, run = [], []
  for i in map(int, ids):
    if i == tokenizer.pad_id or (i == tokenizer.bos_id and i != tokenizer.eos_id):
      continue
    if i == tokenizer.eos_id:
      parts.append(tokenizer.decode(run) + eos_text)
      run = []
    else:
      run.append(i)
  return "".join(parts) + tokenizer.decode(run)


def counted_targets(chunk: np.ndarray, eos_id: int) -> np.ndarray:
  """(B, W - 1) bool: which next-token targets of a chunk count (step 4 of the protocol)."""
  is_eos = chunk == eos_id
  first_eos = np.cumsum(is_eos, -1) == 1
  return (~is_eos[:, 1:]) | (first_eos[:, 1:] & is_eos[:, 1:])


def judge_rows(judge: Judge, texts: list[str], max_length: int) -> np.ndarray:
  encoded = [ids[:max_length] for ids in judge.encode(texts)]
  rows = np.full((len(encoded), max(1, max(map(len, encoded)))), judge.eos_id, np.int32)
  for r, ids in enumerate(encoded):
    rows[r, : len(ids)] = ids
  return rows


def mean_entropy(rows) -> float:
  """Mean over rows of the unigram entropy (nats) of each row's ids."""
  return float(np.mean([quality.unigram_entropy(r) for r in np.asarray(rows)]))
