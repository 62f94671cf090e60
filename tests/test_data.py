import json
import re
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from dlm_jax.data import pipeline, readers, sources
from dlm_jax.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from dlm_jax.data.tokenizer import SentencePieceTokenizer as Tokenizer
from dlm_jax.errors import UserError
from dlm_jax.data.rows import ArrayRecordRows, Layout, build_rows, token_rows


def _cfg(config, **kw):
  for k, v in kw.items():
    config.data[k] = v
  return config.data


def test_text_units(tmp_path, config):
  (tmp_path / "a.txt").write_text("one line\nsecond line\n\nnew paragraph\n")
  (tmp_path / "b.txt").write_text("b file\n")
  pattern = str(tmp_path / "*.txt")
  assert readers.read_text_files(pattern, "file", "text") == [
      "one line\nsecond line\n\nnew paragraph\n", "b file\n"]
  assert readers.read_text_files(pattern, "paragraph", "text") == [
      "one line\nsecond line", "new paragraph", "b file"]
  assert readers.read_text_files(pattern, "line", "text") == [
      "one line", "second line", "new paragraph", "b file"]


def test_jsonl_and_errors(tmp_path):
  path = tmp_path / "c.jsonl"
  path.write_text(json.dumps({"body": "hello"}) + "\n\n" + json.dumps({"body": "world"}) + "\n")
  assert readers.read_text_files(str(path), "file", "body") == ["hello", "world"]
  with pytest.raises(UserError, match="no field 'text'"):
    readers.read_text_files(str(path), "file", "text")
  with pytest.raises(UserError, match="no files match"):
    readers.read_text_files(str(tmp_path / "missing*.txt"), "file", "text")
  (tmp_path / "empty.txt").write_text("  \n\n")
  with pytest.raises(UserError, match="is empty"):
    readers.read_text_files(str(tmp_path / "empty.txt"), "file", "text")


@pytest.mark.parametrize("line, message", [
    ('{"text": null}', "c.jsonl:2: field 'text' is null, not text"),
    ('{"text": {"nested": "x"}}', "c.jsonl:2: field 'text' is a dict"),
    ('{"text": 3}', "c.jsonl:2: field 'text' is a int"),
    ('"just a string"', "c.jsonl:2: a .jsonl line must be a JSON object"),
    ('42', "c.jsonl:2: a .jsonl line must be a JSON object"),
])
def test_jsonl_values_that_are_not_text(tmp_path, line, message):
  path = tmp_path / "c.jsonl"
  path.write_text('{"text": "fine"}\n' + line + "\n")
  with pytest.raises(UserError, match=re.escape(message)):
    readers.read_text_files(str(path), "file", "text")


def test_invalid_utf8_is_replaced_and_counted_in_both_formats(tmp_path, capsys):
  (tmp_path / "a.txt").write_bytes(b"caf\xe9 ok \xff\n")
  (tmp_path / "b.jsonl").write_bytes(b'{"text": "na\xefve"}\n')
  assert readers.read_text_files(str(tmp_path / "a.txt"), "file", "text") == ["caf\ufffd ok \ufffd\n"]
  assert readers.read_text_files(str(tmp_path / "b.jsonl"), "file", "text") == ["na\ufffdve"]
  out = capsys.readouterr().out
  assert "a.txt: 2 invalid UTF-8" in out and "b.jsonl: 1 invalid UTF-8" in out


def test_glob_parts_that_match_nothing_or_a_directory(tmp_path):
  (tmp_path / "a.txt").write_text("text")
  (tmp_path / "sub").mkdir()
  with pytest.raises(UserError, match="part .*typo.txt.* matches no file"):
    readers.read_text_files(f"{tmp_path}/a.txt,{tmp_path}/typo.txt", "file", "text")
  with pytest.raises(UserError, match="matches the directory"):
    readers.read_text_files(f"{tmp_path}/*", "file", "text")


def _finishes_within(seconds, fn):
  """fn() in a daemon thread; its result, or a failure if it is still running after `seconds`."""
  import threading  # pylint: disable=g-import-not-at-top
  out = []
  worker = threading.Thread(target=lambda: out.append(fn()), daemon=True)
  worker.start()
  worker.join(seconds)
  assert not worker.is_alive(), f"still running after {seconds} s"
  return out[0]


def test_glob_through_a_symlink_loop_ends_and_reads_each_file_once(tmp_path):
  """`dir/**/*.txt` with dir/self -> . recursed forever; a file reached by several links
  was read once per path (duplicated documents, possibly in both splits)."""
  (tmp_path / "d").mkdir()
  (tmp_path / "d" / "a.txt").write_text("alpha")
  os.symlink(".", tmp_path / "d" / "self")
  os.symlink(tmp_path / "d" / "a.txt", tmp_path / "d" / "b.txt")
  assert _finishes_within(30, lambda: readers.paths(str(tmp_path / "d" / "**" / "*.txt"))) == [
      str(tmp_path / "d" / "a.txt")]
  assert readers.paths(str(tmp_path / "d" / "*.txt")) == [str(tmp_path / "d" / "a.txt")]


def test_long_lines_are_cut_for_sentencepiece_in_linear_time():
  """The splitter for SentencePiece's sentence limit copied the remainder for every piece
  (quadratic: a 50 MB line never finished). Same pieces as that definition, linear time."""
  from dlm_jax.data import tokenizer  # pylint: disable=g-import-not-at-top

  def quadratic(line, limit=tokenizer._MAX_SENTENCE_CHARS):
    while len(line.encode()) > 4 * limit:
      cut = line.rfind(" ", 0, limit)
      cut = cut if cut > 0 else limit
      yield line[:cut]
      line = line[cut:].lstrip()
    if line:
      yield line

  rng = np.random.default_rng(0)
  for _ in range(20):
    words = ["".join(rng.choice(list("abcé\u00e9 \t"), size=rng.integers(1, 900)))
             for _ in range(rng.integers(1, 30))]
    line = " ".join(words).strip()
    assert list(tokenizer._pieces(line)) == list(quadratic(line))
  big = "word " * 2_000_000                                 # 10 MB on one line
  pieces = _finishes_within(30, lambda: sum(1 for _ in tokenizer._pieces(big.strip())))
  assert pieces > 9000


def test_holdout_split(config):
  train = sources.documents(config.data, "train")
  val = sources.documents(config.data, "validation")
  assert len(val) == round(0.1 * (len(train) + len(val)))
  assert not set(val) & set(train[-5:])


def test_tokenizer_round_trip(shared_tokenizer):
  tok = Tokenizer(shared_tokenizer)
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (PAD_ID, BOS_ID, EOS_ID)
  assert tok.vocab_size == 256
  ids = tok.encode(["the quick brown fox"])[0]
  assert all(3 < i < 256 for i in ids)
  assert tok.decode(ids) == "the quick brown fox"
  # No special token is printed; documents are separated by a blank line.
  assert tok.decode([BOS_ID, *ids, EOS_ID, PAD_ID]) == "the quick brown fox"
  assert tok.decode([*ids, EOS_ID, BOS_ID, *ids[:2]]) == "the quick brown fox\n\n" + tok.decode(
      ids[:2])


def test_tokenizer_keeps_lines_and_every_character(tmp_path):
  from pydoc_data import topics
  from dlm_jax.data.tokenizer import NEWLINE_SYMBOL, UNK_ID, train_sentencepiece
  docs = list(topics.topics.values())[:60]
  tok = train_sentencepiece(docs, str(tmp_path / "t.model"), 256)
  assert tok.keeps_newlines
  text = "ROMEO.\nBut soft, what light?\n\nJULIET.\nAy me."
  ids = tok.encode([text])[0]
  assert tok.decode(ids) == text
  assert NEWLINE_SYMBOL not in tok.decode(ids)
  # Character coverage 1.0: no character of the training text becomes UNK.
  assert all(UNK_ID not in row for row in tok.encode(docs))


def test_tokenizer_trained_before_newline_symbol_still_loads(tmp_path):
  import io
  import sentencepiece as spm
  from pydoc_data import topics
  model = io.BytesIO()
  lines = [l for d in list(topics.topics.values())[:60] for l in d.splitlines() if l.strip()]
  spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model,
                                 vocab_size=256, pad_id=PAD_ID, unk_id=1, bos_id=BOS_ID,
                                 eos_id=EOS_ID, hard_vocab_limit=False, minloglevel=2)
  (tmp_path / "old.model").write_bytes(model.getvalue())
  tok = Tokenizer(str(tmp_path / "old.model"))
  assert not tok.keeps_newlines            # as trained: line breaks fold into spaces
  assert tok.decode(tok.encode(["a line\nanother"])[0]) == "a line another"


def test_wrap_and_pad_rows(shared_tokenizer):
  tok = Tokenizer(shared_tokenizer)
  docs = ["alpha beta gamma", "delta", "a much longer document " * 10]
  wrap = build_rows(docs, tok, Layout(8, "wrap"))
  stream = np.concatenate([[BOS_ID, *ids, EOS_ID] for ids in tok.encode(docs)])
  assert wrap.shape == (len(stream) // 8, 8)
  np.testing.assert_array_equal(wrap.ravel(), stream[: wrap.size])
  pad = build_rows(docs, tok, Layout(8, "pad"))
  assert pad.shape == (3, 8)
  ids = tok.encode(["delta"])[0]
  np.testing.assert_array_equal(pad[1], [BOS_ID, *ids, EOS_ID] + [PAD_ID] * (6 - len(ids)))
  assert pad[2, 0] == BOS_ID and PAD_ID not in pad[2]   # truncated, no EOS


def test_token_rows_cached(tmp_path, config):
  tok = Tokenizer(config.data.tokenizer_path)
  rows = token_rows(config.data, "train", tok, str(tmp_path))
  assert rows.shape[1] == 32 and rows.dtype == np.int32
  again = token_rows(config.data, "train", tok, str(tmp_path))
  assert isinstance(again, np.memmap)
  np.testing.assert_array_equal(rows, again)
  config.data.seq_len = 100_000
  with pytest.raises(UserError, match="fewer than seq_len"):
    token_rows(config.data, "validation", tok, str(tmp_path))


def test_global_batch_independent_of_process_count():
  rows = np.arange(40 * 3, dtype=np.int32).reshape(40, 3)
  one = pipeline.ShuffledBatches(rows, 8, seed=7)
  two = [pipeline.ShuffledBatches(rows, 8, seed=7, process_index=p, process_count=2)
         for p in range(2)]
  for i in (0, 3, 5, 11):
    np.testing.assert_array_equal(
        one[i]["tokens"], np.concatenate([two[0][i]["tokens"], two[1][i]["tokens"]]))
  epoch0 = np.concatenate([one[i]["tokens"][:, 0] for i in range(5)])
  epoch1 = np.concatenate([one[i]["tokens"][:, 0] for i in range(5, 10)])
  assert sorted(epoch0) == sorted(epoch1) == list(range(0, 120, 3))   # each row once per epoch
  assert not np.array_equal(epoch0, epoch1)                          # reshuffled per epoch


def test_iterator_state_resumes_exactly():
  rows = np.arange(50 * 2, dtype=np.int32).reshape(50, 2)
  it = pipeline.train_iterator(rows, 4, seed=1)
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it)["tokens"] for _ in range(20)]
  fresh = pipeline.train_iterator(rows, 4, seed=1)
  fresh.set_state(state)
  for e in expected:
    np.testing.assert_array_equal(next(fresh)["tokens"], e)


def test_eval_batches_cover_split_once():
  rows = np.arange(10 * 2, dtype=np.int32).reshape(10, 2) + 4
  batches = list(pipeline.eval_batches(rows, 4))
  assert len(batches) == 3
  assert batches[-1]["valid"].tolist() == [1, 1, 0, 0]
  got = np.concatenate([b["tokens"][b["valid"] > 0] for b in batches])
  np.testing.assert_array_equal(got, rows)


class TinyText(tfds.core.GeneratorBasedBuilder):
  """A local TFDS builder (array_record, no download) standing in for lm1b."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(30), "test": self._generate_examples(6)}

  def _generate_examples(self, n):
    for i in range(n):
      yield i, {"text": f"sentence number {i} of the tiny corpus"}


def test_tfds_source(tmp_path, config):
  TinyText(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  data = _cfg(config, source="tfds", mode="pad")
  data.tfds.name, data.tfds.data_dir, data.tfds.validation_split = "tiny_text", str(tmp_path), "test"
  docs = list(sources.documents(data, "validation"))
  assert len(docs) == 6 and docs[0].startswith("sentence number")
  rows = token_rows(data, "train", Tokenizer(data.tokenizer_path), str(tmp_path / "w"))
  assert rows.shape == (30, 32)
  data.tfds.name = "not_prepared_here"
  with pytest.raises(UserError, match="not available"):
    list(sources.documents(data, "train"))


def test_train_tokenizer_cli_function(tmp_path, config):
  from dlm_jax.data import train_tokenizer  # pylint: disable=g-import-not-at-top
  config.data.tokenizer_path = ""
  config.data.vocab_size = 128
  path = train_tokenizer.train(config, str(tmp_path))
  assert path == str(tmp_path / "tokenizer.model")
  assert Tokenizer(path).vocab_size == 128
  with pytest.raises(UserError, match="pass --overwrite"):
    train_tokenizer.train(config, str(tmp_path))


def test_prepared_array_record_rows_train(tmp_path, config):
  """prepare -> ArrayRecord shards -> the same rows and batches as the .npy cache."""
  from dlm_jax.data import prepare  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "prepared")
  summary = prepare.prepare(config, out, rows_per_shard=50)
  assert len(summary["train"]["shards"]) > 1
  tok = Tokenizer(config.data.tokenizer_path)
  cached = token_rows(config.data, "train", tok, str(tmp_path / "w"))
  config.data.prepared_dir = out
  rows = token_rows(config.data, "train", tok, str(tmp_path / "w"))
  assert isinstance(rows, ArrayRecordRows) and rows.shape == cached.shape
  np.testing.assert_array_equal(rows[3:7], cached[3:7])
  a = pipeline.ShuffledBatches(rows, 8, seed=3)[5]["tokens"]
  np.testing.assert_array_equal(a, pipeline.ShuffledBatches(cached, 8, seed=3)[5]["tokens"])
  config.data.seq_len = 16
  with pytest.raises(UserError, match="prepared with other settings seq_len: 32"):
    token_rows(config.data, "train", tok, str(tmp_path / "w"))
  # A description that does not match its shards (rows of 32 described as 16) is refused.
  meta_path = os.path.join(out, "train.json")
  with open(meta_path) as f:
    meta = json.load(f)
  with open(meta_path, "w") as f:
    json.dump({**meta, "seq_len": 16}, f)
  with pytest.raises(UserError, match="hold rows of 32 tokens, not seq_len=16"):
    token_rows(config.data, "train", tok, str(tmp_path / "w2"))


def test_binary_files_warn_and_long_lines_train_a_tokenizer(tmp_path, capsys):
  from dlm_jax.data.tokenizer import train_sentencepiece  # pylint: disable=g-import-not-at-top
  (tmp_path / "blob.txt").write_bytes(b"text\x00\x01\x02 more text")
  readers.read_text_files(str(tmp_path / "blob.txt"), "file", "text")
  assert "looks like a binary file" in capsys.readouterr().out
  rng = np.random.default_rng(0)
  words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa"]
  docs = [" ".join(rng.choice(words, size=1500)) for _ in range(20)]   # ~9 KB lines only
  tok = train_sentencepiece(docs, str(tmp_path / "long.model"), 24)
  assert tok.vocab_size == 24 and tok.decode(tok.encode(["alpha beta"])[0]) == "alpha beta"


def test_readers_never_start_tokenizing(tmp_path, config, shared_tokenizer):
  """token_rows(build=False) serves a cached split and returns None for one never built."""
  tok = Tokenizer(shared_tokenizer)
  assert token_rows(config.data, "train", tok, str(tmp_path), build=False) is None
  built = token_rows(config.data, "train", tok, str(tmp_path))
  again = token_rows(config.data, "train", tok, str(tmp_path), build=False)
  assert again is not None and np.array_equal(np.asarray(again), built)
