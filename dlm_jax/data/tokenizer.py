"""SentencePiece tokenizer: train from a corpus, load, encode and decode.

Special ids are fixed so every tokenizer trained here agrees on them:
PAD = 0, UNK = 1, BOS = 2, EOS = 3. A kernel that needs a mask token uses the
extra id V (= vocab_size), outside the tokenizer (DESIGN.md §3).
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from typing import Iterable, Iterator, Sequence

import sentencepiece as spm

from dlm_jax.errors import UserError

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


class Tokenizer:
  """Thin wrapper around a SentencePiece model with the fixed special ids."""

  def __init__(self, path: str):
    if not os.path.exists(path):
      raise UserError(f"tokenizer file not found: {path}")
    with open(path, "rb") as f:
      self.model_proto = f.read()
    self._sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
    self.path = path
    if (self._sp.pad_id(), self._sp.bos_id(), self._sp.eos_id()) != (PAD_ID, BOS_ID, EOS_ID):
      raise UserError(
          f"tokenizer {path} has pad/bos/eos ids {self._sp.pad_id()}/{self._sp.bos_id()}/"
          f"{self._sp.eos_id()}; dlm_jax needs {PAD_ID}/{BOS_ID}/{EOS_ID}: retrain it with "
          "`python -m dlm_jax.data.train_tokenizer`")

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID

  def fingerprint(self) -> str:
    """A hash of the vocabulary; caches and tables built for it carry it."""
    return hashlib.sha256(self.model_proto).hexdigest()[:16]

  def encode(self, texts: Sequence[str]) -> list[list[int]]:
    return self._sp.encode(list(texts), out_type=int, num_threads=os.cpu_count() or 1)

  def decode(self, ids: Sequence[int]) -> str:
    """Decodes one sequence, dropping PAD and stopping at nothing (BOS/EOS shown)."""
    pieces, out = [], []
    for i in ids:
      i = int(i)
      if i == PAD_ID:
        continue
      if i in (BOS_ID, EOS_ID) or i >= self.vocab_size:
        if pieces:
          out.append(self._sp.decode(pieces))
          pieces = []
        out.append({BOS_ID: "<s>", EOS_ID: "</s>"}.get(i, "[MASK]"))
      else:
        pieces.append(i)
    if pieces:
      out.append(self._sp.decode(pieces))
    return "".join(out)


def _sentences(documents: Iterable[str], max_sentences: int) -> Iterator[str]:
  n = 0
  for doc in documents:
    for line in doc.splitlines():
      line = line.strip()
      if line:
        yield line
        n += 1
        if n >= max_sentences:
          return


def train_sentencepiece(documents: Iterable[str], path: str, vocab_size: int,
                        model_type: str = "unigram",
                        max_sentences: int = 2_000_000) -> Tokenizer:
  """Trains a SentencePiece model on `documents` and writes it atomically to `path`."""
  if vocab_size < 8:
    raise UserError(f"tokenizer vocab_size must be >= 8, got {vocab_size}")
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=_sentences(documents, max_sentences),
        model_writer=model,
        vocab_size=vocab_size,
        model_type=model_type,
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
        character_coverage=0.9995,
        shuffle_input_sentence=True,
        input_sentence_size=max_sentences,
        hard_vocab_limit=False,
        minloglevel=2,
    )
  except RuntimeError as e:
    raise UserError(f"SentencePiece training failed ({e}); is the corpus large enough "
                    f"for vocab_size={vocab_size}?") from None
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=os.path.dirname(os.path.abspath(path)), delete=False) as f:
    f.write(model.getvalue())
  os.replace(f.name, path)
  return Tokenizer(path)
