"""Bad input fails fast, in one line that names the problem, before anything compiles."""

import os
import subprocess
import sys

import jax
import pytest

from dlm_jax import evaluation, generation, training
from dlm_jax.samplers import reverse
from dlm_jax.configuration import validate_config
from dlm_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def no_compile(monkeypatch):
  """Fails the test if anything is jitted/compiled while the error is being raised."""
  def refuse(*a, **k):
    raise AssertionError("compiled before rejecting bad input")
  monkeypatch.setattr(jax, "jit", refuse)


def _expect(config, workdir, match):
  with pytest.raises(UserError, match=match) as e:
    training.train_and_evaluate(config, workdir)
  assert "\n" not in str(e.value)


def test_unknown_config_key(config, tmp_path, no_compile):
  config.unlock()
  config.train.learning_rat = 1e-3
  _expect(config, str(tmp_path), "unknown config key 'train.learning_rat'")


def test_unknown_kernel(config, tmp_path, no_compile):
  config.kernel.name = "gaussian"
  _expect(config, str(tmp_path), "kernel.name='gaussian' is not one of")


def test_wrong_type_in_a_config_file(config, tmp_path, no_compile):
  config.unlock()
  del config.train["batch_size"]
  config.train.batch_size = "32"            # what a hand-written config could hold
  _expect(config, str(tmp_path), "config key 'train.batch_size' must be int, got '32'")


def test_unknown_choice(config, tmp_path, no_compile):
  config.data.mode = "packed"
  _expect(config, str(tmp_path), r"data.mode='packed' is not one of")


def test_short_sequence(config, tmp_path, no_compile):
  config.data.seq_len = 1
  _expect(config, str(tmp_path), "seq_len must be >= 2")


def test_missing_files(config, tmp_path, no_compile):
  config.data.train_pattern = str(tmp_path / "nothing_here" / "*.txt")
  _expect(config, str(tmp_path / "w"), "no files match")


def test_empty_corpus(config, tmp_path, no_compile):
  (tmp_path / "empty.txt").write_text("\n \n")
  config.data.train_pattern = str(tmp_path / "empty.txt")
  _expect(config, str(tmp_path / "w"), "is empty")


def test_missing_tokenizer(config, tmp_path, no_compile):
  config.data.tokenizer_path = str(tmp_path / "nope.model")
  config.data.train_tokenizer_if_missing = False
  _expect(config, str(tmp_path / "w"), "tokenizer file not found")


def test_restoring_never_trains_a_tokenizer(config, tmp_path, no_compile):
  """evaluate / sample rebuild the run with restoring=True: a missing tokenizer.model is an
  error, even where training would create one, and no file appears."""
  from dlm_jax import experiment  # pylint: disable=g-import-not-at-top
  config.data.tokenizer_path = ""                      # <workdir>/tokenizer.model
  workdir = tmp_path / "w"
  workdir.mkdir()                                      # a run's workdir, its tokenizer lost
  with pytest.raises(UserError, match="never retrain it") as e:
    experiment.build(config, str(workdir), restoring=True)
  assert "\n" not in str(e.value) and not (workdir / "tokenizer.model").exists()


def test_batch_not_divisible_by_accumulation(config, tmp_path, no_compile):
  config.optim.grad_accum_steps = 3
  _expect(config, str(tmp_path), "grad_accum_steps=3 must divide")


def test_heads_do_not_divide_width(config, tmp_path, no_compile):
  config.model.num_heads = 5
  _expect(config, str(tmp_path), "must split into 5 heads")


def test_base_configs_validate():
  import importlib  # pylint: disable=g-import-not-at-top
  names = ["base", "quickstart"] + [f"{d}_{k}" for d in ("quickstart", "lm1b", "owt")
                                    for k in ("masking", "uniform", "semdlm", "semdlm_plus")
                                    if f"{d}_{k}" != "quickstart_masking"]
  for name in names:
    validate_config(importlib.import_module(f"configs.{name}").get_config())


def test_evaluate_and_sample_without_checkpoint(tmp_path):
  with pytest.raises(UserError, match="no checkpoints in workdir"):
    evaluation.evaluate(str(tmp_path))
  with pytest.raises(UserError, match="no checkpoints in workdir"):
    generation.generate(str(tmp_path), 2, reverse.SamplerOptions())


def _cli(*args):
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=300, check=False)


def test_cli_reports_one_line(tmp_path):
  out = _cli("dlm_jax.train", "--config=configs/quickstart.py", f"--workdir={tmp_path}",
             "--config.data.fooo=1")
  assert out.returncode == 1
  assert out.stderr.strip().splitlines()[-1] == (
      "dlm_jax.train: error: unknown config key 'data.fooo' in --config.data.fooo=... "
      "(keys are defined in dlm_jax/config_schema.py)")
  out = _cli("dlm_jax.train", "--config=configs/quickstart.py", f"--workdir={tmp_path}",
             "--config.kernel.name=sedd")
  assert out.returncode == 1 and "Traceback" not in out.stderr
  assert out.stderr.strip().splitlines()[-1].startswith(
      "dlm_jax.train: error: kernel.name='sedd' is not one of")
  out = _cli("dlm_jax.train", "--config=configs/quickstart.py", f"--workdir={tmp_path}",
             "--config.train.batch_size=abc")
  assert out.returncode == 1 and "Traceback" not in out.stderr
  assert "flag --config.train.batch_size=abc: invalid literal for int()" in out.stderr
  out = _cli("dlm_jax.sample", f"--workdir={tmp_path / 'empty'}")
  assert out.returncode == 1 and "Traceback" not in out.stderr
  assert "no checkpoints in workdir" in out.stderr
  (tmp_path / "a_file").write_text("x")               # --output through a file: refused first
  out = _cli("dlm_jax.sample", f"--workdir={tmp_path / 'empty'}",
             f"--output={tmp_path / 'a_file' / 'samples'}")
  assert out.returncode == 1 and "Traceback" not in out.stderr
  assert "cannot write outputs to" in out.stderr and "no checkpoints" not in out.stderr
  (tmp_path / "blank.txt").write_text("\n\n")        # a prompts file: read before the run
  for path, message in [(tmp_path / "missing.txt", "cannot read --prompts_file"),
                        (tmp_path / "blank.txt", "has no non-empty line")]:
    out = _cli("dlm_jax.sample", f"--workdir={tmp_path / 'empty'}", f"--prompts_file={path}")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert message in out.stderr and "no checkpoints" not in out.stderr


def test_table_for_another_vocabulary(config, tmp_path, no_compile):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from dlm_jax.kernels import neighbors  # pylint: disable=g-import-not-at-top
  other = neighbors.build(np.random.default_rng(0).normal(size=(256, 8)), "partition", 8,
                          "0123456789abcdef")
  other.save(str(tmp_path / "other.npz"))
  config.kernel.name = "semdlm"
  config.kernel.table_path = str(tmp_path / "other.npz")
  _expect(config, str(tmp_path / "w"), "built for another vocabulary")


def test_bad_kernel_settings(config, tmp_path, no_compile):
  config.kernel.name = "semdlm"
  config.kernel.tau = 0.0
  _expect(config, str(tmp_path), "kernel.tau must be > 0")
  config.kernel.tau = 0.1
  config.kernel.k = 256
  _expect(config, str(tmp_path), "kernel.k=256 must be in")
  config.kernel.k = 8
  config.kernel.global_power = 0.0
  _expect(config, str(tmp_path), "kernel.global_power must be > 0")


@pytest.mark.parametrize("key,value,message", [
    ("optim.learning_rate", float("nan"), "optim.learning_rate must be a finite number"),
    ("optim.learning_rate", float("inf"), "optim.learning_rate must be a finite number"),
    ("kernel.tau", float("nan"), "kernel.tau must be a finite number"),
    ("kernel.power", float("nan"), "kernel.power must be a finite number"),
    ("optim.b2", 1.0, "optim.b2 must be in"),
    ("optim.weight_decay", -0.1, "optim.weight_decay and optim.grad_clip must be >= 0"),
    ("model.dropout", 1.0, "model.dropout must be in"),
    ("kernel.parameterization", "average", "kernel.parameterization='average' is not one of"),
])
def test_float_options_are_finite_and_in_range(config, tmp_path, no_compile, key, value,
                                               message):
  group, name = key.split(".")
  config[group][name] = value
  _expect(config, str(tmp_path), message)


def test_a_planted_vocabulary_size_cannot_be_overridden(tmp_path, no_compile):
  """data.vocab_size under the planted language was silently ignored (the saved config said
  one size, the model had 412)."""
  from configs import planted as planted_config  # pylint: disable=g-import-not-at-top
  config = planted_config.get_config()
  config.data.vocab_size = 1000
  _expect(config, str(tmp_path), "does not apply to the planted language")
  config.data.vocab_size = 412                     # its own size is accepted
  validate_config(config)


def test_a_source_and_its_own_vocabulary_go_together(config, tmp_path, no_compile):
  config.data.tokenizer = "planted"
  _expect(config, str(tmp_path), "needs data.source='synthetic'")
  config.data.source, config.data.tokenizer = "synthetic", "sentencepiece"
  config.data.train_pattern = ""          # files' setting: refused under synthetic
  config.data.validation_fraction = 0.05
  _expect(config, str(tmp_path), "data.tokenizer='planted' go together")


def test_clean_flag_and_prompt_rate_go_together(config, tmp_path, no_compile):
  config.kernel.name = "uniform"
  config.model.clean_flag = True
  _expect(config, str(tmp_path), "model.clean_flag and train.prompt_rate > 0 go together")
  config.train.prompt_rate = 1.5
  _expect(config, str(tmp_path), "train.prompt_rate must be in")


def test_checkpoint_configs_from_older_versions(config):
  """A saved config without keys added since gets their defaults; a removed key is refused."""
  from dlm_jax.configuration import from_saved  # pylint: disable=g-import-not-at-top
  saved = config.to_dict()
  del saved["data"]["tokenizer"]
  restored = from_saved(saved)
  assert restored.data.tokenizer == "sentencepiece"
  assert restored.model.num_layers == config.model.num_layers
  saved["data"]["old_option"] = 1
  with pytest.raises(UserError, match="unknown to this version"):
    from_saved(saved)


class _Planted:
  """Unpickling this creates a directory: the proof that a tool ran code from a file."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (os.mkdir, (self.path,))


def test_no_tool_unpickles_what_it_reads(tmp_path):
  """A pickle planted in every .npy / .npz kind the tools read (neighbour table, embeddings,
  reference logits, token cache) is refused (or, for the cache, rebuilt), never run."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from dlm_jax import assets, mdlm_checkpoint  # pylint: disable=g-import-not-at-top
  from dlm_jax.data import rows  # pylint: disable=g-import-not-at-top
  from dlm_jax.kernels import neighbors  # pylint: disable=g-import-not-at-top
  marker = str(tmp_path / "ran")
  planted = np.array([_Planted(marker)], dtype=object)
  np.savez(tmp_path / "table.npz", kind="partition", fingerprint="x", ids=planted,
           weights=np.ones(1))
  with pytest.raises(UserError, match="neighbour table .* cannot be read"):
    neighbors.NeighborTable.load(str(tmp_path / "table.npz"))
  np.save(tmp_path / "emb.npy", planted, allow_pickle=True)
  kernel_cfg = type("K", (), {"embedding_path": str(tmp_path / "emb.npy")})
  with pytest.raises(UserError, match="embedding file .* cannot be read"):
    assets._embeddings_file(kernel_cfg)
  np.savez(tmp_path / "ref.npz", tokens=planted, sigma=np.ones(1), logits=np.ones((1, 1, 2)))
  with pytest.raises(UserError, match="reference .* cannot be read"):
    mdlm_checkpoint.reference_difference(str(tmp_path), str(tmp_path / "ref.npz"))
  np.save(tmp_path / "cache.npy", planted, allow_pickle=True)
  assert rows._load_cache(str(tmp_path / "cache.npy")) is None     # damaged: rebuilt
  assert not os.path.exists(marker)


@pytest.mark.parametrize("content,message", [
    (b"garbage", "cannot be read as .npz"),
    (b"", "cannot be read as .npz"),
    ("npy", "is a single array"),
    ("one_column", "R >= 1"),
])
def test_convert_check_references_that_are_not_references(tmp_path, content, message):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from dlm_jax import mdlm_checkpoint  # pylint: disable=g-import-not-at-top
  path = tmp_path / "ref.npz"
  if content == "npy":
    with open(path, "wb") as f:
      np.save(f, np.zeros(3))
  elif content == "one_column":
    np.savez(path, tokens=np.zeros((1, 4), np.int32), sigma=np.ones(1),
             logits=np.zeros((1, 4, 1)))
  else:
    path.write_bytes(content)
  with pytest.raises(UserError, match=message):
    mdlm_checkpoint.reference_difference(str(tmp_path), str(path))


def test_a_judge_that_is_not_gpt2_and_a_read_only_cache_are_one_line(tmp_path, config):
  from dlm_jax.data import rows  # pylint: disable=g-import-not-at-top
  from dlm_jax.models import gpt2  # pylint: disable=g-import-not-at-top
  (tmp_path / "judge").mkdir()
  (tmp_path / "judge" / "config.json").write_text('{"model_type": "gpt2", "hidden_size": 8}')
  with pytest.raises(UserError, match="not a GPT-2 config"):
    gpt2.load(str(tmp_path / "judge"))
  import numpy as np  # pylint: disable=g-import-not-at-top

  def read_only(*args, **kwargs):
    raise PermissionError(13, "Read-only file system")
  with pytest.MonkeyPatch.context() as patch:     # a read-only mount, even for root
    patch.setattr(os, "makedirs", read_only)
    with pytest.raises(UserError, match="set data.cache_dir to a writable directory"):
      rows._save_cache(str(tmp_path / "sub" / "rows.npy"), np.zeros(3))


def test_output_names_never_collide(tmp_path):
  from dlm_jax import reports
  a = reports.unique_stem(str(tmp_path), "step5_T8", {"seed": 0, "temperature": 1.0})
  b = reports.unique_stem(str(tmp_path), "step5_T8", {"temperature": 0.9, "seed": 0})
  assert a != b and os.path.basename(a).startswith("step5_T8_")
  # The same options again (keys in another order): the name is reserved, so the next one.
  assert reports.unique_stem(str(tmp_path), "step5_T8", {"temperature": 1.0, "seed": 0}) == (
      a + "-2")
  reports.write(a, {"x": 1})
  assert reports.unique_stem(str(tmp_path), "step5_T8", {"seed": 0, "temperature": 1.0}) == a + "-3"
