"""Field parity: MDLM/Duo checkpoints in and out (the `mdlm` DiT variant), the Flax GPT-2
judge, and generative perplexity by the MDLM/Duo protocol. Fixtures in tests/fixtures/ were
written by the upstream PyTorch code (MDLM's DiT) and by `transformers` (GPT-2)."""

import json
import os
import subprocess
import sys

import jax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax import judge, mdlm_checkpoint, safetensors_io, scorers, training
from dlm_jax.checkpoint import Checkpointer
from dlm_jax.data.tokenizer import IdsTokenizer
from dlm_jax.errors import UserError
from dlm_jax.models import Transformer, gpt2
from dlm_jax.models.transformer import TransformerConfig

from tests.conftest import kernel_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
MDLM_DIR = os.path.join(FIXTURES, "mdlm_dit_tiny")
GPT2_DIR = os.path.join(FIXTURES, "gpt2_tiny")


def _base_config():
  from configs import base  # pylint: disable=g-import-not-at-top
  return base.get_config()


def _params(workdir, step=None):
  ckpt = Checkpointer(workdir, create=False)
  step = ckpt.latest_step() if step is None else step
  params = ckpt.restore_param(step, ("ema_params",))
  ckpt.close()
  return params


def test_safetensors_round_trip(tmp_path):
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  tensors = {"b": np.arange(6, dtype=np.float32).reshape(2, 3),
             "a": np.array([1.5, -2], ml_dtypes.bfloat16), "i": np.array([7], np.int64)}
  path = str(tmp_path / "x.safetensors")
  safetensors_io.save(path, tensors, {"format": "pt"})
  back = safetensors_io.load(path)
  assert sorted(back) == ["a", "b", "i"]
  for k, v in tensors.items():
    assert back[k].dtype == v.dtype and np.array_equal(back[k], v)
  assert safetensors_io.metadata(path) == {"format": "pt"}
  (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 12)
  with pytest.raises(UserError, match="bad.safetensors is not a valid safetensors file"):
    safetensors_io.load(str(tmp_path / "bad.safetensors"))
  with pytest.raises(UserError, match="cannot write"):
    safetensors_io.save(path, {"c": np.array([1j])})
  assert sorted(safetensors_io.load(path)) == ["a", "b", "i"]      # the old file kept


def test_flax_gpt2_matches_transformers():
  model, params = gpt2.load(GPT2_DIR)
  ref = np.load(os.path.join(GPT2_DIR, "expected.npz"))
  logits = np.asarray(jax.jit(model.apply)({"params": params}, ref["input_ids"]))
  assert np.abs(logits - ref["logits"]).max() <= 1e-4


def test_import_check_export_round_trip(tmp_path):
  workdir, out = str(tmp_path / "imported"), str(tmp_path / "exported")
  summary = mdlm_checkpoint.import_checkpoint(MDLM_DIR, workdir, _base_config())
  assert (summary["num_layers"], summary["d_model"], summary["num_heads"]) == (2, 32, 2)
  reference = os.path.join(MDLM_DIR, "expected.npz")
  assert mdlm_checkpoint.reference_difference(workdir, reference) <= 1e-4
  # The command prints one line and exits 0 within tolerance, 1 above it.
  run = lambda tol: subprocess.run(
      [sys.executable, "-m", "dlm_jax.convert", "check", f"--workdir={workdir}",
       f"--reference={reference}", f"--tolerance={tol}"], capture_output=True, text=True,
      cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  ok = run(1e-4)
  assert ok.returncode == 0 and ok.stdout.startswith("max abs difference"), ok.stderr
  assert run(1e-12).returncode == 1
  # A NaN difference fails (it compared as "not above the tolerance" and exited 0); token ids
  # outside the reference's columns are a one-line error.
  with np.load(reference) as ref:
    arrays = dict(ref)
  nan_reference = str(tmp_path / "nan.npz")
  np.savez(nan_reference, **{**arrays, "logits": np.full_like(arrays["logits"], np.nan)})
  reference_nan = subprocess.run(
      [sys.executable, "-m", "dlm_jax.convert", "check", f"--workdir={workdir}",
       f"--reference={nan_reference}"], capture_output=True, text=True, cwd=ROOT,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert reference_nan.returncode == 1 and "FAILED" in reference_nan.stdout
  bad_ids = str(tmp_path / "bad_ids.npz")
  np.savez(bad_ids, **{**arrays, "tokens": arrays["tokens"] + arrays["logits"].shape[-1]})
  with pytest.raises(UserError, match="token ids must be in"):
    mdlm_checkpoint.reference_difference(workdir, bad_ids)

  mdlm_checkpoint.export_checkpoint(workdir, out)
  original = safetensors_io.load(os.path.join(MDLM_DIR, "model.safetensors"))
  exported = safetensors_io.load(os.path.join(out, "model.safetensors"))
  assert sorted(original) == sorted(exported)
  for name, value in original.items():       # identical but for the never-predicted mask row
    got = exported[name]
    if name.startswith("backbone.output_layer.linear"):
      value, got = value[:-1], got[:-1]
    assert np.array_equal(value, got), name
  with pytest.raises(UserError, match="exists"):
    mdlm_checkpoint.export_checkpoint(workdir, out)

  again = str(tmp_path / "again")
  mdlm_checkpoint.import_checkpoint(out, again, _base_config())
  a, b = _params(workdir), _params(again)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.array_equal(x, y)
  with pytest.raises(UserError, match="already holds checkpoints"):
    mdlm_checkpoint.import_checkpoint(out, again, _base_config())


def test_any_mdlm_shaped_checkpoint_imports(tmp_path):
  """Other sizes (3 blocks, 3 heads of 16, cond 8, MLP x2, 20 tokens, a GPT-2-like extra
  tokenizer id) import from the tensors alone and compute the same function."""
  cfg = TransformerConfig(vocab_in=21, vocab_out=20, num_layers=3, d_model=48, num_heads=3,
                          mlp_ratio=2, cond_dim=8, time_conditioning=True, dtype="float32",
                          variant="mdlm")
  model = Transformer(cfg)

  @jax.jit
  def init():   # random non-zero values everywhere (adaLN and the head start at zero)
    params = model.init(jax.random.key(1), jnp.zeros((1, 8), jnp.int32), jnp.ones((1,)))
    leaves, tree = jax.tree.flatten(nn.meta.unbox(params["params"]))
    keys = jax.random.split(jax.random.key(2), len(leaves))
    return tree.unflatten([p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
  params = init()
  tensors, hf_config = mdlm_checkpoint.from_params(params, cfg, True, 8)
  src = tmp_path / "ckpt"
  src.mkdir()
  safetensors_io.save(str(src / "model.safetensors"), tensors)
  (src / "config.json").write_text(json.dumps({k: hf_config[k] for k in (
      "vocab_size", "n_heads", "model_length", "time_conditioning")}))
  hf, read_tensors = mdlm_checkpoint.read(str(src))
  arch = mdlm_checkpoint.architecture(hf, read_tensors)
  assert (arch.num_layers, arch.d_model, arch.num_heads, arch.cond_dim, arch.mlp_ratio,
          arch.real_tokens) == (3, 48, 3, 8, 2, 20)
  # Into a tokenizer with one more id (as GPT-2 + PAD): it is never predicted.
  loaded = mdlm_checkpoint.to_params(read_tensors, arch, 21, True)
  wide = Transformer(TransformerConfig(**{**cfg.__dict__, "vocab_in": 22, "vocab_out": 21}))
  z = jax.random.randint(jax.random.key(3), (2, 8), 0, 21)
  sigma = jnp.array([0.3, 2.0])
  want = jax.jit(model.apply)({"params": params}, z, sigma)
  got = jax.jit(wide.apply)({"params": loaded}, jnp.where(z == 20, 21, z), sigma)
  np.testing.assert_allclose(got[..., :20], want, atol=1e-5)
  assert float(jax.nn.softmax(got, -1)[..., 20].max()) < 1e-30

  with pytest.raises(UserError, match="real tokens"):
    mdlm_checkpoint.to_params(read_tensors, arch, 19, True)


def _damaged_copy(tmp_path, name, tensors=None, config=None, raw=None):
  """A copy of the MDLM fixture with its tensors / config.json / raw safetensors bytes
  replaced."""
  import shutil  # pylint: disable=g-import-not-at-top
  d = tmp_path / name
  shutil.copytree(MDLM_DIR, d)
  if tensors is not None:
    safetensors_io.save(str(d / "model.safetensors"), tensors)
  if config is not None:
    (d / "config.json").write_text(config)
  if raw is not None:
    (d / "model.safetensors").write_bytes(raw)
  return str(d)


def test_damaged_mdlm_checkpoints_are_one_line_errors(tmp_path):
  """Truncated files, bad headers, bad config.json fields, missing or stray tensors and NaN
  weights: a UserError each (they were tracebacks, or imported silently)."""
  import struct  # pylint: disable=g-import-not-at-top
  original = dict(safetensors_io.load(os.path.join(MDLM_DIR, "model.safetensors")))
  blob = open(os.path.join(MDLM_DIR, "model.safetensors"), "rb").read()
  header = lambda h: (lambda b: struct.pack("<Q", len(b)) + b)(json.dumps(h).encode())
  name = sorted(original)[0]
  cases = {
      "truncated": (dict(raw=blob[: len(blob) // 2]), "not a valid safetensors file"),
      "header_list": (dict(raw=header([1, 2])), "not a valid safetensors file"),
      "no_offsets": (dict(raw=header({name: {"dtype": "F32", "shape": [1]}})),
                     "not a valid safetensors file"),
      "negative_shape": (dict(raw=header({name: {"dtype": "F32", "shape": [-1],
                                                 "data_offsets": [0, 0]}})),
                         "not a valid safetensors file"),
      "config_not_json": (dict(config="{not json"), "is not JSON"),
      "config_list": (dict(config="[1, 2]"), "JSON list, not an object"),
      "config_text_field": (dict(config=json.dumps({"vocab_size": "many"})),
                            "vocab_size must be a number"),
      "time_conditioning_no": (dict(config=json.dumps({"time_conditioning": "no"})),
                               "time_conditioning must be true or false"),
      "missing_tensor": (dict(tensors={k: v for k, v in original.items()
                                       if k != "backbone.blocks.0.norm1.weight"}),
                         "lacks backbone.blocks.0.norm1.weight"),
      "stray_layer": (dict(tensors={**original, "backbone.blocks.0.extra.weight":
                                    np.zeros(2, np.float32)}), "does not: backbone.blocks.0.extra"),
      "nan_weights": (dict(tensors={**original, name: np.full_like(original[name], np.nan)}),
                      "holds NaN or Inf"),
  }
  for case, (kwargs, message) in cases.items():
    directory = _damaged_copy(tmp_path, case, **kwargs)
    with pytest.raises(UserError, match=message):
      mdlm_checkpoint.import_checkpoint(directory, str(tmp_path / f"w_{case}"), _base_config())


def test_export_checks_its_destination_first(tmp_path):
  """--out that is a file or not writable: one line before any restore; nothing left behind."""
  workdir = str(tmp_path / "imported")
  mdlm_checkpoint.import_checkpoint(MDLM_DIR, workdir, _base_config())
  (tmp_path / "file").write_text("x")
  with pytest.raises(UserError, match="is a file"):
    mdlm_checkpoint.export_checkpoint(workdir, str(tmp_path / "file"))
  with pytest.MonkeyPatch.context() as patch:     # a read-only directory, even for root
    patch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(UserError, match="not writable"):
      mdlm_checkpoint.export_checkpoint(workdir, str(tmp_path / "out"))


def test_mdlm_variant_conditions_on_the_noise_level():
  from dlm_jax.kernels import family  # pylint: disable=g-import-not-at-top
  t = jnp.array([1e-4, 0.3, 0.9])
  masking = family.make_process(kernel_config("masking", eps=1e-3), 8)
  np.testing.assert_allclose(masking.noise_level(t), -np.log1p(-(1 - 1e-3) * np.asarray(t)),
                             rtol=1e-6)
  plus = family.make_process(kernel_config("semdlm_plus", eps=1e-3, global_kind="mask"), 8,
                            _toy_table(8))
  t64 = np.asarray(t, np.float64)   # sem: 1 - (1 - eps) t; mask part: 1 - (1 - eps) t^2
  np.testing.assert_allclose(plus.noise_level(t), -np.log((1 - 0.999 * t64) * (1 - 0.999 * t64**2)),
                             rtol=1e-6)
  tree = lambda variant: jax.eval_shape(lambda: Transformer(TransformerConfig(
      vocab_in=9, vocab_out=8, num_layers=1, d_model=8, num_heads=2, cond_dim=4,
      variant=variant)).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32),
                             jnp.ones((1,))))["params"]
  dlm, mdlm = tree("dlm"), tree("mdlm")
  assert "bias" in dlm["block_0"]["qkv"] and "norm1" not in dlm["block_0"]
  assert "bias" not in mdlm["block_0"]["qkv"] and "bias" not in mdlm["block_0"]["attn_out"]
  assert set(mdlm) - set(dlm) == {"norm_final"}


def _toy_table(V):
  from dlm_jax.kernels import neighbors  # pylint: disable=g-import-not-at-top
  emb = np.random.default_rng(0).normal(size=(V, 4))
  return neighbors.build(emb, "partition", 2, "toy", special=())


def test_ids_tokenizer():
  tok = IdsTokenizer(10)
  assert tok.encode(["4 5  9", ""]) == [[4, 5, 9], []]
  assert tok.decode([2, 4, 0, 10]) == "2 4 [MASK]"
  with pytest.raises(UserError, match="outside"):
    tok.encode(["10"])
  with pytest.raises(UserError, match="integers"):
    tok.encode(["a b"])


def test_protocol_counts_the_first_eos_only():
  E = 9
  chunk = np.array([[E, 1, 2, E, 3, E, E],      # leading BOS=EOS: no EOS target counts
                    [1, 2, E, 3, E, E, E],      # the first EOS counts, later ones not
                    [1, 2, 3, 4, 5, 6, 7]])
  np.testing.assert_array_equal(counted_targets := judge.counted_targets(chunk, E), [
      [1, 1, 0, 1, 0, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
  assert counted_targets.dtype == bool
  np.testing.assert_allclose(judge.mean_entropy([[1, 1, 2, 2], [3, 3, 3, 3]]),
                             np.log(2) / 2)


def _char_judge(tmp_path):
  """The tiny GPT-2 with a character tokenizer.json (ids 0..94: ' '..'~', 95: EOS)."""
  import shutil  # pylint: disable=g-import-not-at-top
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import models, pre_tokenizers  # pylint: disable=g-import-not-at-top
  directory = tmp_path / "judge"
  shutil.copytree(GPT2_DIR, directory)
  vocab = {chr(32 + i): i for i in range(95)}
  vocab["<|endoftext|>"] = 95
  tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="?"))
  tok.pre_tokenizer = pre_tokenizers.Split(tokenizers.Regex("."), "isolated")
  tok.add_special_tokens(["<|endoftext|>"])
  tok.save(str(directory / "tokenizer.json"))
  return f"hf:{directory}"


def test_hf_judge_scores_samples_by_the_protocol(tmp_path, config):
  spec = _char_judge(tmp_path)
  hf = judge.load(spec)
  assert hf.encode(["ab<|endoftext|>"])[0] == [65, 66, 95]
  # The protocol's NLL equals a direct computation with the Flax judge.
  texts = ["hi<|endoftext|>yo", "a"]
  total, count = scorers.HuggingFaceJudge(spec).nll(texts, max_length=16, batch_size=4)
  rows = judge.judge_rows(hf, texts, 16)
  logp = jax.nn.log_softmax(jax.jit(hf.model.apply)({"params": hf.params}, rows), -1)
  nll = -np.take_along_axis(np.asarray(logp)[:, :-1], rows[:, 1:, None], -1)[..., 0]
  weight = judge.counted_targets(rows, 95)
  assert count == weight.sum() == 4 + 1
  np.testing.assert_allclose(total, (nll * weight).sum(), rtol=1e-5)

  workdir = str(tmp_path / "run")
  config.train.num_steps = 4
  config.train.eval_every = 100
  training.train_and_evaluate(config, workdir)
  out = str(tmp_path / "quality")
  run = subprocess.run(
      [sys.executable, "-m", "dlm_jax.evaluate", f"--workdir={workdir}", "--num_samples=3",
       "--steps=4", f"--judge={spec}", "--batch_size=4", f"--output={out}"],
      capture_output=True, text=True, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert run.returncode == 0, run.stderr[-2000:]
  with open(out + ".json") as f:
    report = json.load(f)
  assert {"generative_ppl", "entropy", "generated_seqs"} <= set(report)
  assert len(report["generated_seqs"]) == 3 and report["generative_ppl"] > 1
  assert report["sampler"]["float64"]               # the protocol's default
  samples = report["results"][-1]
  assert samples["gen_ppl"] == samples["generative_ppl"] and samples["judge_tokens_counted"] > 0
