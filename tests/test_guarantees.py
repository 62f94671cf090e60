"""Regression tests of reliability review round four (the README's "Guarantees: preemption,
crashes and bad input"): each finding's fix (D1-D9, m1-m14), in one line of behaviour."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from dlm_jax import generation, reports, rng
from dlm_jax.data import readers
from dlm_jax.errors import UserError
from dlm_jax.samplers import reverse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args, cwd=ROOT):
  return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True,
                        timeout=300, check=False, env={**os.environ, "JAX_PLATFORMS": "cpu",
                                                       "PYTHONPATH": ROOT})


def _one_line_error(run, program, match):
  assert run.returncode == 1, (run.stdout[-500:], run.stderr[-1500:])
  last = run.stderr.strip().splitlines()[-1]
  assert last.startswith(f"{program}: error: ") and match in last, run.stderr[-1500:]
  assert "Traceback" not in run.stderr


def test_seeds_above_32_bits_draw_their_own_keys():
  """m6 / m1: --seed=2**32 drew what --seed=0 draws; seeds >= 2**63 were a traceback."""
  same = jax.random.key_data
  np.testing.assert_array_equal(same(rng.key(12345)), same(jax.random.key(12345)))
  np.testing.assert_array_equal(same(rng.key(2**32 - 1)), same(jax.random.key(2**32 - 1)))
  keys = {tuple(np.asarray(same(rng.key(s))).tolist()) for s in (0, 1, 2**32, 2**32 + 1, 2**40,
                                                                  2**63 - 1)}
  assert len(keys) == 6
  for bad in (-1, 2**63, 2**64, 1.5, True):
    with pytest.raises(UserError, match=r"seed must be an integer in \[0, 2\*\*63\)"):
      rng.key(bad)


def test_sampler_values_that_cannot_run_are_refused_before_any_work():
  """m1 / m2: --steps=3e9 was an OverflowError, --temperature=1e-320 wrote NaN."""
  opts = reverse.SamplerOptions(steps=8)
  reverse.check_values(opts)
  for change, match in [(dict(steps=3_000_000_000), "steps must be in"),
                        (dict(steps=0), "steps must be in"),
                        (dict(temperature=1e-320), "temperature must be >= 0.001"),
                        (dict(block_size=-2), "block_size must be >= 0")]:
    with pytest.raises(UserError, match=match):
      reverse.check_values(reverse.SamplerOptions(**{"steps": 8, **change}))


def test_a_mask_span_with_leading_zeros_is_its_number():
  """m12: <mask:007> was refused as longer than the row."""
  class Chars:
    def encode(self, texts):
      return [[ord(c) % 50 + 4 for c in t] for t in texts]
  fixed, mask = generation.template_conditioning(Chars(), ["ab <mask:007> cd"], 64)
  assert mask[0, :2].all() and not mask[0, 2:9].any() and mask[0, 9:11].all()


def test_the_real_word_rate_counts_generated_positions_only():
  """D5: the clamped suffix's words counted as generated ones."""
  class Words:
    def decode(self, ids):
      return " ".join(f"w{i}" for i in ids)
  tokens = np.array([[1, 2, 3, 4, 5, 6]])
  free = np.array([[False, True, True, False, True, False]])
  assert generation.generated_texts(Words(), tokens, free) == ["w2 w3", "w5"]
  assert generation.generated_texts(Words(), tokens, ~free) == ["w1", "w4", "w6"]


def test_a_left_to_right_sampler_conditions_exactly_on_a_prefix_only():
  """D6: an AR run sampled with --suffix or <mask:K> spans claimed exact conditioning."""
  from dlm_jax import objectives  # pylint: disable=g-import-not-at-top
  ar = objectives.Autoregressive()
  prefix = np.array([[True, True, False, False]])
  suffix = np.array([[True, False, False, True]])
  assert generation._prefixes_only(prefix) and not generation._prefixes_only(suffix)
  assert ar.conditions_exactly(None, True) and not ar.conditions_exactly(None, False)
  assert "left to right" in ar.inexact_conditioning_note()


def test_output_names_are_reserved_and_a_directory_is_not_a_name(tmp_path):
  """m5: two processes could get the same report name; --output=DIR/ wrote DIR/.json."""
  names = {reports.unique_stem(str(tmp_path), "quality", {"a": 1}) for _ in range(5)}
  assert len(names) == 5
  assert all(os.path.exists(n + ".json") for n in names)
  for bad in (str(tmp_path) + os.sep, str(tmp_path)):
    with pytest.raises(UserError, match="is a directory; give a file name"):
      reports.check_writable(bad)


def test_corpus_globs_skip_no_link_and_refuse_special_files(tmp_path):
  """m4: a validation file hard-linked into the training glob was trained on; m10: a FIFO
  in the glob hung `train`."""
  (tmp_path / "a.txt").write_text("alpha")
  os.link(tmp_path / "a.txt", tmp_path / "b.txt")
  assert readers.paths(str(tmp_path / "*.txt")) == [str(tmp_path / "a.txt")]
  held_out = frozenset({readers.file_id(str(tmp_path / "b.txt"))})
  (tmp_path / "c.txt").write_text("gamma")
  assert readers.read_text_files(str(tmp_path / "*.txt"), "file", "text", held_out) == ["gamma"]
  os.mkfifo(tmp_path / "d.txt")
  with pytest.raises(UserError, match="d.txt.*not a regular file"):
    readers.paths(str(tmp_path / "*.txt"))


def test_a_lone_surrogate_in_a_jsonl_line_is_one_line_naming_it(tmp_path):
  """m1: "\\ud800" in a .jsonl was a TypeError in train, a multi-line message elsewhere."""
  path = tmp_path / "c.jsonl"
  path.write_text('{"text": "fine"}\n{"text": "bad \\ud800 here"}\n')
  with pytest.raises(UserError, match=r"c.jsonl:2: field 'text' holds a lone surrogate"):
    readers.jsonl_documents(str(path), "text")


def test_windows_line_ends_decode_as_line_breaks(shared_tokenizer, capsys):
  """m3: "one\\r\\nCRLF" decoded as "one \\nCRLF"; a literal U+2424 is a line break (said)."""
  from dlm_jax.data.tokenizer import SentencePieceTokenizer  # pylint: disable=g-import-not-at-top
  tok = SentencePieceTokenizer(shared_tokenizer)
  if not tok.keeps_newlines:
    pytest.skip("the shared test tokenizer predates the newline piece")
  for text in ("one\r\ntwo", "one\rtwo", "one\r\n\r\ntwo"):
    assert tok.encode([text]) == tok.encode([text.replace("\r\n", "\n").replace("\r", "\n")])
  tok.encode(["a \u2424 b"])
  assert "U+2424" in capsys.readouterr().out


def test_planted_checks_its_baseline_and_rewrite_input_first(tmp_path):
  """D8: --baseline=<typo> was read after the whole analysis; --rewrite on a bad JSON was a
  traceback."""
  sys.path.insert(0, ROOT)
  from experiments import planted  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserError, match="baseline .*typo.json does not exist"):
    planted.analyse(str(tmp_path / "out"), str(tmp_path / "root"), 2, 2, [2], ["masking"],
                    baseline=str(tmp_path / "typo.json"))
  assert not (tmp_path / "root").exists()                  # nothing trained, nothing written
  with pytest.raises(UserError, match="sample_steps must be comma-separated integers"):
    planted.analyse(str(tmp_path / "out"), str(tmp_path / "root"), 2, 2, ["abc"], ["masking"])
  for text, match in [("{not json", "not a readable JSON"), ("[1, 2]", "no list of results"),
                      ('{"results": []}', "incomplete"),
                      ('{"results": [{"name": "m"}]}', "incomplete")]:
    (tmp_path / "r.json").write_text(text)
    with pytest.raises(UserError, match=match):
      planted.read_report(str(tmp_path / "r.json"), "report",
                          ("results", "language", "sample_steps", "output"))


def test_compare_runs_skips_a_line_cut_off_by_a_kill(tmp_path, capsys):
  """m1: compare_runs was a JSONDecodeError on a metrics.jsonl cut off by a kill."""
  from dlm_jax.analysis import compare_runs  # pylint: disable=g-import-not-at-top
  key = compare_runs.KEY
  (tmp_path / "metrics.jsonl").write_text(
      json.dumps({"step": 0, key: 10.0}) + "\n" + json.dumps({"step": 5, key: 9.0}) + "\n"
      + '{"step": 10, "val/ne')
  assert compare_runs.load_curve(str(tmp_path)) == {0: 10.0, 5: 9.0}
  assert "skipped 1 line" in capsys.readouterr().out


def test_train_tokenizer_never_replaces_a_trained_runs_tokenizer(tmp_path, config):
  """m11: --overwrite replaced the only tokenizer of a workdir with checkpoints."""
  from dlm_jax.data import train_tokenizer  # pylint: disable=g-import-not-at-top
  (tmp_path / "checkpoints" / "4").mkdir(parents=True)
  (tmp_path / "tokenizer.model").write_bytes(b"the run's tokenizer")
  config.data.tokenizer_path = ""
  with pytest.raises(UserError, match="holds checkpoints trained with"):
    train_tokenizer.train(config, str(tmp_path), overwrite=True)
  assert (tmp_path / "tokenizer.model").read_bytes() == b"the run's tokenizer"


def test_a_failed_start_leaves_no_workdir_behind(tmp_path, config):
  """A start that failed before step 0 left an empty workdir holding train.lock."""
  from dlm_jax import training  # pylint: disable=g-import-not-at-top
  config.data.train_pattern = str(tmp_path / "missing" / "*.txt")
  with pytest.raises(UserError):
    training.train_and_evaluate(config, str(tmp_path / "new"))
  assert not (tmp_path / "new").exists()
  (tmp_path / "old").mkdir()
  (tmp_path / "old" / "notes.txt").write_text("mine")
  with pytest.raises(UserError):
    training.train_and_evaluate(config, str(tmp_path / "old"))
  assert (tmp_path / "old" / "notes.txt").read_text() == "mine"   # a workdir it found: kept


def test_commands_refuse_bad_flags_in_one_line_before_any_work(tmp_path):
  """D4, m1, m2: evaluate recorded --prompt/--suffix/--length under --num_samples and ignored
  them; --steps=abc was a traceback after 43 s; --steps= sampled nothing with exit 0;
  --prompt_tokens=-3 ran as 0; sample --steps=3e9 and seeds >= 2**63 were tracebacks.
  (The workdir does not exist: each check comes before it is read.)"""
  w = f"--workdir={tmp_path / 'absent'}"
  cases = [
      ("dlm_jax.evaluate", [w, "--num_samples=2", "--prompt=ROMEO."], "--prompt is an option"),
      ("dlm_jax.evaluate", [w, "--num_samples=2", "--steps=abc"], "comma-separated integers"),
      ("dlm_jax.evaluate", [w, "--temperature=0.5"], "add --num_samples"),
      ("dlm_jax.sample", [w, "--steps=3000000000", "--seed=99999999999999999999"],
       "steps must be in"),
  ]
  for program, args, match in cases:
    _one_line_error(_cli(program, *args), program, match)
  from dlm_jax import cli  # pylint: disable=g-import-not-at-top
  for values, match in [([], "must list step counts"), (["8", "0"], "must list step counts"),
                        (["x"], "comma-separated integers")]:
    with pytest.raises(SystemExit, match=match):
      cli.step_counts(values, "dlm_jax.evaluate")
  assert cli.step_counts(["16", "64"], "dlm_jax.evaluate") == [16, 64]


def test_convert_finds_its_default_config_from_any_directory(tmp_path):
  """A `convert import-mdlm` run outside the checkout was a 40-line traceback."""
  from dlm_jax import convert  # pylint: disable=g-import-not-at-top
  assert os.path.isabs(convert.DEFAULT_CONFIG) and os.path.exists(convert.DEFAULT_CONFIG)


def test_the_basin_metric_never_writes_a_table_into_the_workdir(tmp_path, config,
                                                                shared_tokenizer):
  """m8: evaluate --num_samples wrote a top-k neighbour table into the evaluated workdir."""
  from dlm_jax import assets  # pylint: disable=g-import-not-at-top
  from dlm_jax.data.tokenizer import get_tokenizer  # pylint: disable=g-import-not-at-top
  tok = get_tokenizer(config.data, os.path.dirname(shared_tokenizer))
  config.kernel.neighbors = "topk"
  path = assets.table_path(config, tok, str(tmp_path))
  table = assets.neighbor_table(config, tok, str(tmp_path), save=False)
  assert table.kind == "topk" and table.vocab_size == tok.vocab_size
  assert not os.path.exists(path)


def test_resume_with_another_num_steps_keeps_the_schedule_or_refuses():
  from configs import base  # pylint: disable=g-import-not-at-top
  from dlm_jax import training  # pylint: disable=g-import-not-at-top
  c = base.get_config()
  c.optim.lr_schedule, c.optim.warmup_steps, c.train.num_steps = "cosine", 20, 3000
  with pytest.raises(UserError, match=r"started with train.num_steps=2000.*"
                                      r"--config.train.num_steps=2000"):
    training.check_same_schedule(c, {"train": {"num_steps": 2000}}, 500)
  training.check_same_schedule(c, {"train": {"num_steps": 3000}}, 500)     # same: resumes
  c.optim.lr_schedule = "constant"                                          # no dependence
  training.check_same_schedule(c, {"train": {"num_steps": 2000}}, 500)


def test_people_read_the_output_lines(capsys):
  from dlm_jax import evaluation, metric_writers  # pylint: disable=g-import-not-at-top
  line = evaluation.summary_line({"nelbo_bits_per_token": 8.5, "unigram_bits_per_token": 8.428,
                                  "below_unigram_bits": -0.072})
  assert "0.072 above" in line and "-0.072" not in line
  assert metric_writers._shown("train/eta_hours", 1.5083) == "train/eta=1:30"
  report = {"split": "validation", "bits_per_token": 6.9, "std_error_nats": 0.0139,
            "perplexity_bound": 119.4, "tokens": 32768, "step": 2000, "params": "ema",
            "reported_form": "nelbo"}
  assert evaluation.report_line(report) == (
      "validation 6.900 +- 0.020 bits/token (NELBO, an upper bound; Monte Carlo estimate; "
      "+- one standard error), perplexity <= 119.4, 32768 tokens, step 2000, ema parameters")
  for _ in range(3):
    generation._note_once("conditioning is inexact")
  assert capsys.readouterr().err.count("conditioning is inexact") == 1


def test_unknown_config_keys_get_a_suggestion():
  from configs import base  # pylint: disable=g-import-not-at-top
  from dlm_jax import configuration  # pylint: disable=g-import-not-at-top
  assert configuration.did_you_mean("train.learning_rate") == (
      " (did you mean 'optim.learning_rate'?)")
  assert "optim.learning_rate" in configuration.did_you_mean("optim.learnin_rate")
  c = base.get_config()
  c.train.lr = 1.0
  with pytest.raises(UserError, match="unknown config key 'train.lr'"):
    configuration.validate_config(c)


def test_the_sampler_progress_bar_is_tqdm_on_a_terminal_only(monkeypatch, capsys):
  monkeypatch.delenv("DLM_PROGRESS", raising=False)
  bar = generation._progress_bar(2, "sampling")    # stderr is captured: not a terminal
  bar.update(2)
  bar.close()
  assert capsys.readouterr().err == ""
  monkeypatch.setenv("DLM_PROGRESS", "1")
  bar = generation._progress_bar(2, "sampling")
  bar.update(2)
  bar.close()
  err = capsys.readouterr().err
  assert "sampling" in err and "2/2" in err and "batch" in err
