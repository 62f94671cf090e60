"""Preemption, crashes, corruption, NaNs, mismatched checkpoints and full disks."""

import errno
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from dlm_jax import evaluation, reports, training
from dlm_jax.checkpoint import Checkpointer
from dlm_jax.data.rows import data_fingerprint
from dlm_jax.errors import UserError
from tests.conftest import tiny_config

HERE = os.path.dirname(os.path.abspath(__file__))


def _script(corpus, tokenizer, workdir, steps, *extra):
  return [sys.executable, os.path.join(HERE, "train_subprocess.py"), corpus, tokenizer,
          str(workdir), str(steps), *extra]


def _steps(workdir):
  return Checkpointer(str(workdir), create=False).all_steps()


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _constant_lr(config):
  config.optim.lr_schedule = "constant"
  config.train.log_every = 1
  config.train.checkpoint_every = 4
  config.train.eval_every = 10**6
  return config


def test_sigterm_saves_and_resume_is_exact(tmp_path, corpus_glob, shared_tokenizer, config):
  workdir = tmp_path / "preempted"
  proc = subprocess.Popen(_script(corpus_glob, shared_tokenizer, workdir, 100_000),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 240
  while time.time() < deadline:
    if metrics.exists() and sum("train/loss" in l for l in metrics.read_text().splitlines()) >= 6:
      break
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=240)
  assert proc.returncode == 0, err[-2000:]
  assert "received SIGTERM at step" in out
  stopped = _steps(workdir)[-1]
  assert stopped >= 6 and stopped % 4 != 0 or stopped >= 6   # saved at the interruption step

  _constant_lr(config)
  config.train.num_steps = stopped + 3
  _, resumed = training.train_and_evaluate(config, str(workdir))
  _, straight = training.train_and_evaluate(config, str(tmp_path / "straight"))
  for a, b in zip(_leaves(resumed.params), _leaves(straight.params)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_kill_9_during_checkpoint_write(tmp_path, corpus_glob, shared_tokenizer, config):
  workdir = tmp_path / "killed"
  proc = subprocess.run(_script(corpus_glob, shared_tokenizer, workdir, 12, "kill_in_save=8"),
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == -signal.SIGKILL
  assert _steps(workdir) == [4]                                  # the partial 8 is ignored
  assert glob.glob(str(workdir / "checkpoints" / "8.orbax-checkpoint-tmp*"))
  _constant_lr(config)
  config.train.num_steps = 12
  _, state = training.train_and_evaluate(config, str(workdir))
  assert int(state.step) == 12 and _steps(workdir)[-1] == 12
  # The killed run logged steps after checkpoint 4; the resumed run replaced them.
  logged = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text()
            .splitlines() if "train/loss" in line]
  assert logged == sorted(set(logged)) and logged[-1] == 12


@pytest.fixture(scope="module")
def _two_checkpoints_once(tmp_path_factory, corpus_glob, shared_tokenizer):
  """One 8-step run with checkpoints at 4 and 8, trained once per module; tests get copies."""
  config = _constant_lr(tiny_config(corpus_glob, shared_tokenizer))
  config.train.num_steps = 8
  workdir = str(tmp_path_factory.mktemp("two_checkpoints") / "run")
  training.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture
def two_checkpoints(tmp_path, config, _two_checkpoints_once):
  _constant_lr(config)
  config.train.num_steps = 8
  workdir = str(tmp_path / "run")
  shutil.copytree(_two_checkpoints_once, workdir, symlinks=True)
  assert _steps(workdir) == [4, 8]
  return config, workdir


def _truncate_state(workdir, step):
  files = [f for f in glob.glob(os.path.join(workdir, "checkpoints", str(step), "state", "**"),
                                recursive=True) if os.path.isfile(f)]
  for f in files:
    size = os.path.getsize(f)
    with open(f, "r+b") as fh:
      fh.truncate(size // 3)


def test_corrupt_checkpoint_names_step_and_earlier_one(two_checkpoints):
  config, workdir = two_checkpoints
  _truncate_state(workdir, 8)
  config.train.num_steps = 12
  with pytest.raises(UserError, match=r"checkpoint step 8 .* is unreadable .* the earlier "
                                      r"checkpoint 4 may be usable"):
    training.train_and_evaluate(config, workdir)
  config.train.restore_fallback = True
  history, state = training.train_and_evaluate(config, workdir)
  assert int(state.step) == 12
  assert [h["step"] for h in history if "train/loss" in h][0] == 5   # resumed from 4


def test_readers_never_fall_back_or_move_a_checkpoint(two_checkpoints, monkeypatch):
  """evaluate / sample read: a damaged newest step is a one-line error even when the run was
  saved with train.restore_fallback=True, `--step=N` serves N or fails, nothing is renamed."""
  config, workdir = two_checkpoints
  _truncate_state(workdir, 8)
  from dlm_jax import checkpoint  # pylint: disable=g-import-not-at-top
  saved = checkpoint.Checkpointer.restore_config

  def with_fallback(self, step=None):
    cfg = saved(self, step)
    cfg.train.restore_fallback = True            # as if the run had been saved with it
    return cfg

  monkeypatch.setattr(checkpoint.Checkpointer, "restore_config", with_fallback)
  for step in (None, 8):
    with pytest.raises(UserError, match=r"checkpoint step 8 .* is unreadable .*--step"):
      evaluation.evaluate(workdir, step=step, max_batches=1)
  assert _steps(workdir) == [4, 8] and not glob.glob(os.path.join(workdir, "checkpoints", "*.unreadable"))
  assert evaluation.evaluate(workdir, step=4, max_batches=1)["step"] == 4


def test_a_reader_follows_a_step_deleted_while_it_reads(two_checkpoints, monkeypatch):
  """A running train with keep_checkpoints=1 deletes the step a reader picked: the reader reads
  the newest step that still exists instead of ending in a traceback."""
  config, workdir = two_checkpoints
  from dlm_jax import checkpoint  # pylint: disable=g-import-not-at-top
  original = checkpoint.Checkpointer.restore
  calls = []

  def deleted_once(self, step, *args, **kwargs):
    if not calls:
      calls.append(step)
      shutil.rmtree(os.path.join(workdir, "checkpoints", str(step)))
      raise FileNotFoundError(f"step {step} is gone")
    return original(self, step, *args, **kwargs)

  monkeypatch.setattr(checkpoint.Checkpointer, "restore", deleted_once)
  assert evaluation.evaluate(workdir, max_batches=1)["step"] == 4 and calls == [8]


def test_damaged_checkpoint_metadata_is_one_line_and_fallback_covers_it(two_checkpoints,
                                                                         tmp_path):
  config, original = two_checkpoints
  step8 = lambda w: os.path.join(w, "checkpoints", "8")

  def truncate_meta(w):
    for f in glob.glob(os.path.join(step8(w), "meta", "*")):
      open(f, "w").close()

  def delete_config(w):
    shutil.rmtree(os.path.join(step8(w), "config"))

  def empty_step(w):
    shutil.rmtree(step8(w))
    os.makedirs(step8(w))

  exercised = []
  for damage in (truncate_meta, delete_config, empty_step):
    workdir = str(tmp_path / damage.__name__)
    shutil.copytree(original, workdir)
    damage(workdir)
    if 8 not in _steps(workdir):          # orbax no longer lists it: nothing to report
      continue
    exercised.append(damage.__name__)
    with pytest.raises(UserError, match=r"step 8 .* is damaged .* earlier checkpoint 4 .*--step"):
      evaluation.evaluate(workdir, max_batches=1)
    with pytest.raises(UserError, match=r"step 8 .* is damaged .* earlier checkpoint 4 may be "
                                        r"usable.*restore_fallback"):
      training.train_and_evaluate(config, workdir)
  assert {"truncate_meta", "delete_config"} <= set(exercised), exercised
  config.train.restore_fallback = True
  history, state = training.train_and_evaluate(config, str(tmp_path / "truncate_meta"))
  assert int(state.step) == 8
  assert [h["step"] for h in history if "train/loss" in h][0] == 5   # resumed from 4
  assert os.path.isdir(step8(str(tmp_path / "truncate_meta")) + ".unreadable")   # kept aside


def test_nonfinite_loss_stops_with_step_and_checkpoint(tmp_path, config):
  _constant_lr(config)
  config.optim.learning_rate = 1e30            # parameters blow up -> inf/NaN loss
  config.optim.grad_clip = 0.0
  config.optim.warmup_steps = 1
  config.train.num_steps = 40
  with pytest.raises(FloatingPointError, match=r"non-finite .* at step \d+ \(update not "
                     r"applied\); (last good checkpoint: step \d+|no checkpoint was saved yet)"):
    training.train_and_evaluate(config, str(tmp_path / "nan"))
  config.train.nonfinite = "skip"
  history, state = training.train_and_evaluate(config, str(tmp_path / "skip"))
  assert int(state.step) == 40
  assert max(h.get("train/skipped_updates", 0) for h in history) > 0


def test_an_update_that_makes_the_parameters_nonfinite_is_not_applied(tmp_path, config):
  """lr = 1e39 is a finite float but inf in float32: loss and gradient are finite, the updated
  parameters are not. The step is refused (stop, naming it) and no checkpoint holds NaN."""
  _constant_lr(config)
  config.optim.learning_rate = 1e39
  config.optim.warmup_steps = 1
  config.train.num_steps = 1
  with pytest.raises(FloatingPointError, match=r"non-finite updated parameters at step 1 \(update not applied\)"):
    training.train_and_evaluate(config, str(tmp_path / "inf"))
  config.train.nonfinite = "skip"
  _, state = training.train_and_evaluate(config, str(tmp_path / "skip"))
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def test_checkpoint_from_another_model_is_refused(two_checkpoints, monkeypatch):
  config, workdir = two_checkpoints
  config.model.d_model = 48
  config.model.num_heads = 3
  with pytest.raises(UserError, match="does not match this config .*d_model"):
    training.train_and_evaluate(config, workdir)


def test_checkpoint_from_before_a_model_field_existed_is_accepted(two_checkpoints):
  """A model field added since the checkpoint was saved (clean_flag) takes its default there."""
  from dlm_jax import experiment  # pylint: disable=g-import-not-at-top
  config, workdir = two_checkpoints
  exp = experiment.build(config, workdir, restoring=True)
  saved = exp.meta()
  del saved["model"]["clean_flag"]
  exp.check_compatible(saved, 1)
  saved["model"]["clean_flag"] = True
  with pytest.raises(UserError, match="clean_flag"):
    exp.check_compatible(saved, 1)


def test_runs_saved_before_the_parameterization_existed_restore_as_mixture():
  """kernel.parameterization defaults to mean, but every run saved before the option trained
  the mixture form: a saved config without the key restores as mixture."""
  from dlm_jax import configuration  # pylint: disable=g-import-not-at-top
  old = configuration.from_saved({"kernel": {"name": "uniform"}})
  assert old.kernel.parameterization == "mixture"
  new = configuration.from_saved({"kernel": {"name": "uniform", "parameterization": "mean"}})
  assert new.kernel.parameterization == "mean"


def test_unwritable_workdir(tmp_path, config):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  with pytest.raises(UserError, match="cannot create workdir"):
    training.train_and_evaluate(config, str(blocker / "run"))


def test_full_disk_keeps_last_complete_checkpoint(tmp_path, config, monkeypatch):
  _constant_lr(config)
  config.train.num_steps = 8
  original = ocp.CheckpointManager.save

  def save(self, step, *args, **kwargs):
    if step == 8:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return original(self, step, *args, **kwargs)
  monkeypatch.setattr(ocp.CheckpointManager, "save", save)
  workdir = str(tmp_path / "full")
  with pytest.raises(UserError, match=r"could not write the checkpoint for step 8 .*No space "
                                      r"left on device.*last complete checkpoint is step 4"):
    training.train_and_evaluate(config, workdir)
  assert _steps(workdir) == [4]


def test_resume_refuses_changed_training_files(tmp_path, config, capsys):
  corpus = tmp_path / "corpus" / "topics.jsonl"
  corpus.parent.mkdir()
  shutil.copy(config.data.train_pattern, corpus)
  config.data.train_pattern = str(corpus)
  _constant_lr(config)
  config.train.num_steps = 4
  workdir = str(tmp_path / "run")
  training.train_and_evaluate(config, workdir)
  with open(corpus, "a", encoding="utf-8") as f:
    f.write(json.dumps({"text": "seventy percent more text, appended later"}) + "\n")
  config.train.num_steps = 8
  with pytest.raises(UserError, match="training data changed since step 4"):
    training.train_and_evaluate(config, workdir)
  assert _steps(workdir) == [4]
  config.train.resume_on_changed_data = True      # the explicit way on: a warning, no error
  training.check_same_data(config, Checkpointer(workdir, create=False).restore_json(4, "meta"), 4,
                           data_fingerprint(config.data))
  assert "resuming on the new data" in capsys.readouterr().out


def test_one_train_run_per_workdir_and_a_killed_holder_blocks_nothing(tmp_path, config):
  from dlm_jax import workdirs  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "run")
  with workdirs.train_lock(workdir):
    with pytest.raises(UserError, match=r"in use by another train run \(host .*, pid \d+"):
      training.train_and_evaluate(config, workdir)
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time\nfrom dlm_jax import workdirs\n"
       "with workdirs.train_lock(sys.argv[1]):\n  print('held', flush=True)\n  time.sleep(120)",
       workdir], stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(HERE),
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UserError, match=f"pid {holder.pid},"):
      with workdirs.train_lock(workdir):
        pass
  finally:
    holder.kill()                                  # kill -9: no clean-up runs
    holder.wait()
  with workdirs.train_lock(workdir):               # the lock died with its holder
    pass


def test_restoring_commands_check_the_tokenizer_and_rebuild_damaged_caches(tmp_path, config,
                                                                          shared_tokenizer,
                                                                          capsys):
  from dlm_jax import experiment, generation  # pylint: disable=g-import-not-at-top
  from dlm_jax.data.tokenizer import train_sentencepiece  # pylint: disable=g-import-not-at-top
  from dlm_jax.samplers.reverse import SamplerOptions  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  workdir.mkdir()
  tokenizer = workdir / "tokenizer.model"
  shutil.copy(shared_tokenizer, tokenizer)
  config.data.tokenizer_path = ""                  # <workdir>/tokenizer.model
  _constant_lr(config)
  config.train.num_steps = 2
  training.train_and_evaluate(config, str(workdir))
  original = tokenizer.read_bytes()
  opts = SamplerOptions(steps=4)
  # A damaged token cache is rebuilt, with a warning.
  for cache in glob.glob(str(workdir / "data_cache" / "validation-*.npy")):
    with open(cache, "r+b") as f:
      f.truncate(100)
  assert np.isfinite(evaluation.evaluate(str(workdir), max_batches=1)["nats_per_token"])
  assert "is damaged (ValueError); rebuilding" in capsys.readouterr().out
  # Another valid tokenizer in its place: both restoring commands refuse, naming it.
  train_sentencepiece(["the quick brown fox jumps over the lazy dog"] * 50, str(tokenizer), 40)
  for command in (lambda: evaluation.evaluate(str(workdir), max_batches=1),
                  lambda: generation.generate(str(workdir), 1, opts)):
    with pytest.raises(UserError, match=r"does not match this config \(tokenizer: checkpoint"):
      command()
  # Random bytes: a one-line error naming the file. Missing: an error, nothing trained.
  tokenizer.write_bytes(os.urandom(400))
  with pytest.raises(UserError, match="tokenizer.model is damaged"):
    generation.generate(str(workdir), 1, opts)
  tokenizer.unlink()
  with pytest.raises(UserError, match="never retrain it"):
    generation.generate(str(workdir), 1, opts)
  assert not tokenizer.exists()
  tokenizer.write_bytes(original)
  assert experiment.restore(str(workdir))[2] == 2
  with pytest.raises(UserError, match="length must be >= 1"):    # 0 never means "full length"
    generation.generate(str(workdir), 1, opts, length=0)


def test_a_second_stop_signal_exits_at_once(monkeypatch, capsys):
  exits = []
  monkeypatch.setattr(training.os, "_exit", exits.append)
  request = training._StopRequest()
  request._handle(signal.SIGINT, None)
  assert request.requested(1) and not exits           # the first: stop at the step boundary
  request._handle(signal.SIGINT, None)
  assert exits == [128 + signal.SIGINT]                # the second: now
  assert "exiting now (the last complete checkpoint is kept)" in capsys.readouterr().out


def _semdlm_plus_run(tmp_path, config):
  """A tiny SemDLM+ run (corpus-built partition table) on a files corpus whose validation
  documents live in a file of their own: (config, workdir, train file)."""
  from pydoc_data import topics  # pylint: disable=g-import-not-at-top
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  names = sorted(topics.topics)
  for name, chosen in (("train.jsonl", names[20:]), ("valid.jsonl", names[:20])):
    with open(corpus / name, "w", encoding="utf-8") as f:
      for topic in chosen:
        f.write(json.dumps({"title": topic, "text": topics.topics[topic]}) + "\n")
  config.data.train_pattern = str(corpus / "*.jsonl")
  config.data.validation_pattern = str(corpus / "valid.jsonl")
  config.kernel.name, config.kernel.global_kind = "semdlm_plus", "uniform"
  config.kernel.k = 4
  _constant_lr(config)
  config.train.num_steps = 2
  workdir = tmp_path / "run"
  training.train_and_evaluate(config, str(workdir))
  return config, workdir, corpus / "train.jsonl"


def test_a_restored_run_never_reads_its_training_corpus(tmp_path, config):
  """The process is saved with the checkpoint: with the training file deleted and data_cache/
  removed, `evaluate` gives the same NELBO and `sample` the same tokens for the same seed."""
  from dlm_jax import generation  # pylint: disable=g-import-not-at-top
  from dlm_jax.samplers.reverse import SamplerOptions  # pylint: disable=g-import-not-at-top
  _, workdir, train_file = _semdlm_plus_run(tmp_path, config)
  opts = SamplerOptions(steps=4)

  def measure():
    nats = evaluation.evaluate(str(workdir), max_batches=2, seed=3)["nats_per_token"]
    return nats, generation.generate(str(workdir), 2, opts, seed=5, real_words=False)[1]

  nats, tokens = measure()
  train_file.unlink()
  shutil.rmtree(workdir / "data_cache")
  tables = glob.glob(os.path.join(os.path.dirname(config.data.tokenizer_path), "neighbors-*"))
  for table in tables:                       # the table file next to the tokenizer, too
    os.rename(table, table + ".moved")
  try:
    nats_after, tokens_after = measure()
  finally:
    for table in tables:
      os.rename(table + ".moved", table)
  np.testing.assert_allclose(nats_after, nats, rtol=1e-6)
  np.testing.assert_array_equal(tokens_after, tokens)


def test_a_run_saved_before_checkpoints_held_the_process_restores_by_the_old_recipe(
    tmp_path, config):
  """A checkpoint without its `process` item (as every run before this change was saved) is
  restored from its table file and cached unigram (nothing built or tokenized): the same
  NELBO; without the cached unigram, a one-line error that says what to do."""
  _, workdir, _ = _semdlm_plus_run(tmp_path, config)
  nats = evaluation.evaluate(str(workdir), max_batches=2, seed=3)["nats_per_token"]
  for step_dir in glob.glob(str(workdir / "checkpoints" / "*")):
    shutil.rmtree(os.path.join(step_dir, "process"))
  np.testing.assert_allclose(
      evaluation.evaluate(str(workdir), max_batches=2, seed=3)["nats_per_token"], nats,
      rtol=1e-6)
  for cache in glob.glob(str(workdir / "data_cache" / "unigram-*")):
    os.remove(cache)
  with pytest.raises(UserError, match="training unigram it needs is not cached"):
    evaluation.evaluate(str(workdir), max_batches=1)
  assert not glob.glob(str(workdir / "data_cache" / "unigram-*"))    # nothing rebuilt


def test_resuming_a_run_saved_before_the_parameterization_never_switches_it(tmp_path, config):
  """A run whose checkpoint records no parameterisation trained the mixture form: `train`
  under the new default (mean) refuses in one line naming the flag; with the flag it resumes
  as mixture."""
  _constant_lr(config)
  config.kernel.name, config.kernel.parameterization = "uniform", "mixture"
  config.train.num_steps = 4
  workdir = str(tmp_path / "run")
  training.train_and_evaluate(config, workdir)
  step_dir = os.path.join(workdir, "checkpoints", "4")
  shutil.rmtree(os.path.join(step_dir, "process"))    # as old checkpoints were saved
  for item, drop in (("meta", lambda d: d.pop("parameterization")),
                     ("config", lambda d: d["kernel"].pop("parameterization"))):
    path = os.path.join(step_dir, item, "metadata")
    saved = json.load(open(path))
    drop(saved)
    json.dump(saved, open(path, "w"))
  config.train.num_steps = 8
  config.kernel.parameterization = "mean"
  with pytest.raises(UserError, match=r"parameterization: checkpoint 'mixture' vs config "
                                      r"'mean'.*--config.kernel.parameterization=mixture"):
    training.train_and_evaluate(config, workdir)
  assert _steps(workdir) == [4]
  config.kernel.parameterization = "mixture"
  _, state = training.train_and_evaluate(config, workdir)
  assert int(state.step) == 8


def test_readers_read_a_read_only_workdir(two_checkpoints, monkeypatch, tmp_path):
  """m7: evaluate and sample refused a read-only workdir ("not writable"), even with
  --output elsewhere."""
  _, workdir = two_checkpoints
  real_access, real_makedirs = os.access, os.makedirs
  inside = lambda p: os.path.abspath(str(p)).startswith(os.path.abspath(workdir))

  def access(path, mode, *args, **kwargs):
    return False if mode & os.W_OK and inside(path) else real_access(path, mode, *args, **kwargs)

  def makedirs(path, *args, **kwargs):       # a read-only mount, even for root
    if inside(path) and not os.path.isdir(path):
      raise PermissionError(13, "Read-only file system", path)
    return real_makedirs(path, *args, **kwargs)
  monkeypatch.setattr(os, "access", access)
  monkeypatch.setattr(os, "makedirs", makedirs)
  report = evaluation.evaluate(workdir, None, None, 1, 1, True, 0)
  assert report["step"] == 8 and np.isfinite(report["nats_per_token"])
  with pytest.raises(UserError, match="cannot write outputs under .*give --output=PATH"):
    reports.unique_stem(os.path.join(workdir, "eval"), "validation_step8", {})
