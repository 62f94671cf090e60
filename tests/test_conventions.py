"""The data conventions of MDLM / Duo and md4 (data/rows.py), Hugging Face dataset sources,
the evaluation suite's detokenizers and the PAD rule."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from dlm_jax import configuration, objectives
from dlm_jax.data import detokenizers, rows, sources, suite
from dlm_jax.data.rows import Layout, build_rows
from dlm_jax.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, IdsTokenizer
from dlm_jax.errors import UserError

TOK = IdsTokenizer(100)        # documents are written as their token ids


def _docs(*lengths, start=10):
  """Documents of the given lengths with distinct, consecutive ids."""
  out, i = [], start
  for n in lengths:
    out.append(" ".join(str(j) for j in range(i, i + n)))
    i += n
  return out


def _ids(doc):
  return [int(w) for w in doc.split()]


def test_mdlm_wrap_rows_are_bos_payload_eos():
  docs = _docs(5, 3, 9)
  got = build_rows(docs, TOK, Layout(6, "wrap", "mdlm"))
  stream = [i for d in docs for i in (*_ids(d), EOS_ID)]          # doc EOS doc EOS ...
  n = len(stream) // 4                                             # L - 2 payload per row
  assert got.shape == (n, 6)
  np.testing.assert_array_equal(got[:, 0], BOS_ID)
  np.testing.assert_array_equal(got[:, -1], EOS_ID)
  np.testing.assert_array_equal(got[:, 1:-1].ravel(), stream[: n * 4])
  # Duo's zero-shot rows: no EOS between documents.
  no_eos = build_rows(docs, TOK, Layout(6, "wrap", "mdlm", insert_eos=False))
  flat = [i for d in docs for i in _ids(d)]
  np.testing.assert_array_equal(no_eos[:, 1:-1].ravel(), flat[: len(flat) // 4 * 4])


def test_mdlm_wrap_cuts_each_group_of_documents_on_its_own(monkeypatch):
  monkeypatch.setattr(rows, "MDLM_GROUP_DOCUMENTS", 2)
  docs = _docs(4, 3, 2, 5)          # groups (4+1 + 3+1 = 9 tokens), (2+1 + 5+1 = 9 tokens)
  got = build_rows(docs, TOK, Layout(6, "wrap", "mdlm"))
  first = [*_ids(docs[0]), EOS_ID, *_ids(docs[1]), EOS_ID]
  second = [*_ids(docs[2]), EOS_ID, *_ids(docs[3]), EOS_ID]
  # Each group of 9 payload tokens gives two rows of 4; its ninth token is dropped.
  np.testing.assert_array_equal(got[:, 1:-1].ravel(), first[:8] + second[:8])


def test_mdlm_pad_rows_keep_the_end_marker():
  docs = _docs(2, 10)
  got = build_rows(docs, TOK, Layout(6, "pad", "mdlm"))
  np.testing.assert_array_equal(got[0], [BOS_ID, *_ids(docs[0]), EOS_ID, PAD_ID, PAD_ID])
  np.testing.assert_array_equal(got[1], [BOS_ID, *_ids(docs[1])[:4], EOS_ID])   # truncated
  today = build_rows(docs, TOK, Layout(6, "pad", "dlm_jax"))
  np.testing.assert_array_equal(today[1], [BOS_ID, *_ids(docs[1])[:5]])          # EOS cut off


def test_md4_rows_and_their_two_percent_split(monkeypatch):
  monkeypatch.setattr(rows, "MD4_GROUP_DOCUMENTS", 50)
  docs = [" ".join(str(4 + (i % 90)) for i in range(j, j + 7)) for j in range(0, 840, 7)]
  train = build_rows(docs, TOK, Layout(8, "wrap", "md4"), "train")
  val = build_rows(docs, TOK, Layout(8, "wrap", "md4"), "validation")
  stream = [i for d in docs for i in (*_ids(d), EOS_ID)]            # no BOS anywhere
  assert len(train) + len(val) == len(stream) // 8
  # 50 documents = 400 tokens = 50 rows per full group: int(0.02 * 50) = 1 held out each.
  assert len(val) == 2
  all_rows = np.asarray(stream[: len(stream) // 8 * 8]).reshape(-1, 8)
  both = np.concatenate([train, val])
  assert sorted(map(tuple, both)) == sorted(map(tuple, all_rows))
  assert BOS_ID not in both


def test_config_rules_for_conventions():
  c = base.get_config()
  c.data.convention = "md4"
  c.data.mode = "pad"
  with pytest.raises(UserError, match="md4' defines wrapped rows only"):
    configuration.validate_config(c)
  c.data.mode, c.data.validation_pattern = "wrap", "val/*.txt"
  with pytest.raises(UserError, match="holds out 2% of the rows"):
    configuration.validate_config(c)
  c = base.get_config()
  c.data.convention = "mdlm2"
  with pytest.raises(UserError, match="data.convention='mdlm2' is not one of"):
    configuration.validate_config(c)


def test_shipped_field_configs_follow_mdlm():
  from configs import lm1b_masking, owt_masking  # pylint: disable=g-import-not-at-top
  owt, lm1b = owt_masking.get_config().data, lm1b_masking.get_config().data
  assert (owt.convention, owt.mode, owt.seq_len) == ("mdlm", "wrap", 1024)
  assert (owt.source, owt.hf.train_split, owt.hf.validation_split) == (
      "hf", "train[:-100000]", "train[-100000:]")
  assert (lm1b.convention, lm1b.mode, lm1b.detokenizer, lm1b.seq_len) == (
      "mdlm", "pad", "lm1b", 128)


def _saved_dataset(path, n):
  datasets = pytest.importorskip("datasets")
  ds = datasets.Dataset.from_dict({"text": [f"doc {i}" for i in range(n)],
                                   "label": list(range(n))})
  datasets.DatasetDict({"train": ds}).save_to_disk(str(path))
  return str(path)


def test_hf_source_slices_the_last_documents_off(tmp_path):
  c = base.get_config().data
  c.source, c.hf.name = "hf", _saved_dataset(tmp_path / "ds", 10)
  c.hf.train_split, c.hf.validation_split = "train[:-3]", "train[-3:]"
  assert list(sources.documents(c, "train")) == [f"doc {i}" for i in range(7)]
  assert list(sources.documents(c, "validation")) == ["doc 7", "doc 8", "doc 9"]
  c.hf.validation_split = "train[:20%]"
  assert list(sources.documents(c, "validation")) == ["doc 0", "doc 1"]
  c.hf.validation_split = "test"
  with pytest.raises(UserError, match="has no split 'test'"):
    list(sources.documents(c, "validation"))
  c.hf.validation_split, c.text_field = "train", "body"
  with pytest.raises(UserError, match="no column 'body'"):
    list(sources.documents(c, "validation"))
  c.text_field, c.hf.name = "text", "surely_not_cached_dataset_xyz"
  with pytest.raises(UserError, match="not available offline"):
    list(sources.documents(c, "train"))


def test_a_single_saved_dataset_needs_slices_for_its_splits(tmp_path):
  """A plain save_to_disk Dataset (no DatasetDict) has no split names: they selected the
  whole dataset, so validation rows were the training rows. Slices are required."""
  datasets = pytest.importorskip("datasets")
  datasets.Dataset.from_dict({"text": [f"doc {i}" for i in range(10)]}).save_to_disk(
      str(tmp_path / "single"))
  c = base.get_config().data
  c.source, c.hf.name = "hf", str(tmp_path / "single")
  with pytest.raises(UserError, match="single dataset without splits: give each split a slice"):
    list(sources.documents(c, "train"))
  c.hf.validation_split = "validation[-2:]"
  with pytest.raises(UserError, match="without a split 'validation'"):
    list(sources.documents(c, "validation"))
  c.hf.train_split, c.hf.validation_split = "train[:-2]", "train[-2:]"
  assert list(sources.documents(c, "validation")) == ["doc 8", "doc 9"]
  assert len(list(sources.documents(c, "train"))) == 8


def test_validation_files_are_never_trained_on(tmp_path):
  """data.validation_pattern naming a file that data.train_pattern also matches: that file
  was trained on too. It is left out of training (by real path)."""
  (tmp_path / "a.txt").write_text("alpha")
  (tmp_path / "b.txt").write_text("beta")
  c = base.get_config().data
  c.source, c.train_pattern, c.validation_pattern = "files", str(tmp_path / "*.txt"), str(
      tmp_path / "b.txt")
  assert list(sources.documents(c, "train")) == ["alpha"]
  assert list(sources.documents(c, "validation")) == ["beta"]
  c.train_pattern = str(tmp_path / "b.txt")
  with pytest.raises(UserError, match="nothing is left to train on"):
    list(sources.documents(c, "train"))


def test_files_hold_out_the_last_n_documents(tmp_path):
  (tmp_path / "a.txt").write_text("\n".join(f"line {i}" for i in range(10)))
  c = base.get_config().data
  c.source, c.train_pattern, c.text_unit, c.validation_documents = (
      "files", str(tmp_path / "*.txt"), "line", 4)
  assert sources.documents(c, "validation") == [f"line {i}" for i in range(6, 10)]
  assert sources.documents(c, "train") == [f"line {i}" for i in range(6)]


DETOKENIZED = {
    "wikitext": (" = Valkyria Chronicles = \n Senjō no Valkyria 3 : Unrecorded Chronicles ( "
                 "Japanese : 戦場のヴァルキュリア3 ) , 1 @,@ 000 players @-@ and 3 @.@ 5 ; "
                 "the N 's \" quoted \" end . \n",
                 " = Valkyria Chronicles =\nSenjō no Valkyria 3: Unrecorded Chronicles "
                 "(Japanese: 戦場のヴァルキュリア3), 1,000 players-and 3.5; the 1's \"quoted\" "
                 "end.\n"),
    "ptb": ("the company 's shares fell N N to $ N a share and did n't <unk> \\/ ",
            "the company's shares fell 1 1 to $1 a share and didn't ? / "),
    "lm1b": ("He said : \" It 's a test , see http : / / x.org ( now ) . \" Why ?",
             "He said: \"It's a test, see http://x.org (now) .\" Why?"),
    "lambada": ("  \u201cHello,\u201d she said  ", "\n\"Hello,\" she said"),
}


@pytest.mark.parametrize("name", sorted(DETOKENIZED))
def test_detokenizers(name):
  raw, expected = DETOKENIZED[name]
  assert detokenizers.detokenize(name, raw) == expected


def test_scientific_papers_detokenizer_is_wikitext_then_lm1b():
  raw = "we use 3 @.@ 5 % ( see fig . 2 ) , and ' quoted ' words ."
  assert detokenizers.detokenize("scientific_papers", raw) == detokenizers.detokenize(
      "lm1b", detokenizers.detokenize("wikitext", raw))
  with pytest.raises(UserError, match="data.detokenizer must be one of"):
    detokenizers.detokenize("bogus", raw)


def test_pad_rule_weights():
  tokens = jnp.asarray([[BOS_ID, 7, EOS_ID, PAD_ID], [BOS_ID, 8, 9, EOS_ID]])
  valid = jnp.asarray([1.0, 0.0])
  summed, counted = objectives._weights(tokens, valid, PAD_ID, pad_in_loss=True)
  np.testing.assert_array_equal(summed, [[1, 1, 1, 1], [0, 0, 0, 0]])
  np.testing.assert_array_equal(counted, [[1, 1, 1, 0], [0, 0, 0, 0]])
  summed, counted = objectives._weights(tokens, valid, PAD_ID, pad_in_loss=False)
  np.testing.assert_array_equal(summed, counted)
  assert rows.pad_in_loss("dlm_jax") and rows.pad_in_loss("md4") and not rows.pad_in_loss("mdlm")
  assert "not a bound" in rows.pad_rule("mdlm")


def test_loss_excludes_pad_under_mdlm(config):
  """Same model, batch and key: MDLM's rule drops exactly PAD's share of the sum."""
  import jax  # pylint: disable=g-import-not-at-top
  from dlm_jax.kernels import family  # pylint: disable=g-import-not-at-top
  from dlm_jax.models import Transformer, model_config  # pylint: disable=g-import-not-at-top
  kernel = family.make_process(config.kernel, 64)
  model = Transformer(model_config(config.model, kernel.input_vocab_size, 64))
  tokens = np.full((2, config.data.seq_len), PAD_ID, np.int32)
  tokens[:, :10] = np.arange(4, 14)
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), jnp.asarray(tokens),
                                             jnp.zeros((2,))))["params"]
  def terms(pad_in_loss, pad_id):
    return objectives.Diffusion(kernel, pad_in_loss=pad_in_loss).loss_terms(
        params, {"tokens": jnp.asarray(tokens)}, jax.random.key(1), model=model, t_min=0.0,
        train=False, pad_id=pad_id)

  (with_pad, count), (without_pad, count2), (no_pad_id, _) = jax.jit(
      lambda: (terms(True, PAD_ID), terms(False, PAD_ID), terms(False, -1)))()
  assert float(count) == float(count2) == 20.0
  assert float(without_pad) < float(with_pad)
  np.testing.assert_allclose(float(no_pad_id), float(with_pad), rtol=1e-6)


def test_zero_shot_suite_command(tmp_path):
  """`evaluate --dataset=all` on local copies of every benchmark in the three formats (.txt,
  .jsonl, save_to_disk), on a model imported from the MDLM fixture (ids tokenizer, L = 16)."""
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  datasets = pytest.importorskip("datasets")
  from dlm_jax import evaluation, mdlm_checkpoint  # pylint: disable=g-import-not-at-top
  from tests.test_convert import MDLM_DIR, ROOT  # pylint: disable=g-import-not-at-top
  workdir, data = str(tmp_path / "w"), tmp_path / "suite"
  mdlm_checkpoint.import_checkpoint(MDLM_DIR, workdir, base.get_config())
  rng = np.random.default_rng(0)
  doc = lambda: " ".join(str(i) for i in rng.integers(4, 64, size=rng.integers(3, 30)))
  data.mkdir()
  (data / "wikitext2.txt").write_text("".join(f" {doc()} \n" for _ in range(40)))
  with open(data / "ptb.jsonl", "w") as f:
    f.writelines(json.dumps({"sentence": doc()}) + "\n" for _ in range(30))
  datasets.Dataset.from_dict({"text": [doc() for _ in range(20)]}).save_to_disk(
      str(data / "lambada"))
  for name in ("wikitext103", "lm1b"):
    (data / f"{name}.txt").write_text("".join(f"{doc()}\n" for _ in range(30)))
  for name, column in (("ag_news", "text"), ("scientific_papers_pubmed", "article"),
                       ("scientific_papers_arxiv", "article")):
    with open(data / f"{name}.jsonl", "w") as f:
      f.writelines(json.dumps({column: doc()}) + "\n" for _ in range(30))
  with pytest.raises(UserError, match="unknown zero-shot dataset 'wikitext'"):
    evaluation.zero_shot(workdir, ["wikitext"], str(data))
  run = subprocess.run(
      [sys.executable, "-m", "dlm_jax.evaluate", f"--workdir={workdir}",
       "--dataset=all", f"--datasets_dir={data}"],
      capture_output=True, text=True, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert run.returncode == 0, run.stderr[-2000:]
  (written,) = (tmp_path / "w" / "eval").glob("zero_shot_step0_*.json")   # named by its options
  report = json.loads(written.read_text())
  assert report["command_options"]["datasets_dir"] == str(data)
  assert [r["dataset"] for r in report["results"]] == sorted(suite.SUITE)
  for r, name in zip(report["results"], sorted(suite.SUITE)):
    docs, _ = suite.documents(name, str(data))
    expected = build_rows(docs, IdsTokenizer(64), Layout(16, "wrap", "mdlm", insert_eos=False))
    assert r["rows"] == len(expected) > 0 and r["tokens"] == 16 * len(expected)
    assert np.isfinite(r["nats_per_token"]) and r["complete"]
  assert "| lambada |" in written.with_suffix(".md").read_text()


def test_flat_source_keys_still_accepted_with_a_warning(capsys):
  from configs import base  # pylint: disable=g-import-not-at-top
  c = base.get_config()
  c.data.source, c.data.hf_name, c.data.hf_train_split = "hf", "/data/owt", "train[:-10]"
  configuration.validate_config(c)
  assert (c.data.hf.name, c.data.hf.train_split) == ("/data/owt", "train[:-10]")
  assert "data.hf_name is now data.hf.name" in capsys.readouterr().out
  c.data.hf_name = "/elsewhere"                     # both names, two values: refused
  with pytest.raises(UserError, match="disagree"):
    configuration.validate_config(c)
  # A run saved before the groups restores with its values in them.
  saved = base.get_config().to_dict()
  for key in [k for k in saved["data"] if isinstance(saved["data"][k], dict)]:
    for sub, value in saved["data"].pop(key).items():
      saved["data"][f"{key}_{sub}"] = value
  saved["data"].update(source="synthetic", tokenizer="planted", synthetic_topics=3)
  restored = configuration.from_saved(saved)
  assert restored.data.synthetic.topics == 3 and restored.data.synthetic_topics is None
  # A run saved with the groups kept default flat copies: the groups are its values.
  saved = base.get_config().to_dict()
  saved["data"].update(source="hf", hf_validation_split="validation")
  saved["data"]["hf"]["validation_split"] = "test"
  assert configuration.from_saved(saved).data.hf.validation_split == "test"


def test_flat_source_key_equal_to_its_default_is_applied(capsys):
  """D1 of reliability round four: `--config.data.hf_validation_split=validation` on a
  config file whose grouped value is 'test' validated on 'test', without a word."""
  from configs import base  # pylint: disable=g-import-not-at-top

  def config():
    c = base.get_config()
    c.data.source, c.data.hf.name, c.data.hf.validation_split = "hf", "/data/lm1b", "test"
    return c
  c = config()        # the flat name on the command line replaces the config file's value
  c.data.hf_validation_split = "validation"
  configuration.move_flat_source_keys(c, overrides=frozenset({"data.hf_validation_split"}))
  assert c.data.hf.validation_split == "validation" and c.data.hf_validation_split is None
  assert "replaces the config file's 'test'" in capsys.readouterr().out
  c = config()        # the same flat value set in Python next to the grouped one: refused
  c.data.hf_validation_split = "validation"
  with pytest.raises(UserError, match="disagree"):
    configuration.validate_config(c)
  c = config()        # both on the command line: refused
  c.data.hf_validation_split = "validation"
  with pytest.raises(UserError, match="disagree"):
    configuration.move_flat_source_keys(c, overrides=frozenset(
        {"data.hf_validation_split", "data.hf.validation_split"}))
  c = config()        # the previous README's command: a flat name over a config file's value
  c.data.hf_name = "/data/owt"
  configuration.move_flat_source_keys(c, overrides=frozenset({"data.hf_name"}))
  assert c.data.hf.name == "/data/owt"


@pytest.mark.parametrize("source,key,value,fix", [
    ("quickstart", "train_pattern", "corpus/*.txt", "--config.data.source=files"),
    ("hf", "train_pattern", "corpus/*.txt", "--config.data.source=files"),
    ("hf", "text_unit", "line", "--config.data.source=quickstart or --config.data.source=files"),
    ("quickstart", "hf.name", "/data/owt", "--config.data.source=hf"),
    ("files", "tfds.name", "wiki40b", "--config.data.source=tfds"),
    ("hf", "synthetic.topics", 3, "--config.data.source=synthetic"),
])
def test_settings_of_a_source_not_selected_are_refused(source, key, value, fix):
  """D2: data.train_pattern under data.source='quickstart' trained on Shakespeare."""
  from configs import base  # pylint: disable=g-import-not-at-top
  c = base.get_config()
  c.data.source = source
  c.data.train_pattern = "x/*.txt" if source == "files" else ""
  c.data.hf.name = "/data/x" if source == "hf" else ""
  group, _, name = key.rpartition(".")
  (c.data[group] if group else c.data)[name] = value
  with pytest.raises(UserError, match=f"data.{key}=.* is ignored by data.source='{source}'"
                     f".*{fix}.* or drop data.{key}"):
    configuration.validate_config(c)
  # A run saved with such a setting (it was ignored) restores without it.
  saved = c.to_dict()
  restored = configuration.from_saved(saved)
  assert (restored.data[group] if group else restored.data)[name] != value
