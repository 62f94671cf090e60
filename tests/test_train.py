"""End-to-end training on CPU: learning, exact resume, evaluation and sampling."""

import glob
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from dlm_jax import evaluation, experiment, generation, sample_quality, training
from dlm_jax.errors import UserError
from dlm_jax.samplers import reverse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _data_state(workdir, step):
  path = os.path.join(workdir, "checkpoints", str(step), "data", "process_0-of-1.json")
  with open(path) as f:
    return json.load(f)


def test_resume_is_exact(tmp_path, config):
  config.train.num_steps = 8
  config.train.checkpoint_every = 4
  config.train.log_every = 4
  config.train.eval_every = 100
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  _, state_a = training.train_and_evaluate(config, straight)
  _, first = training.train_and_evaluate(config, resumed, stop_after=4)
  assert int(first.step) == 4
  _, state_b = training.train_and_evaluate(config, resumed)
  assert int(state_b.step) == 8
  for a, b in zip(_leaves(state_a.params), _leaves(state_b.params)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  for a, b in zip(_leaves(state_a.ema_params), _leaves(state_b.ema_params)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  # Same data order: the iterator positions match step for step.
  assert _data_state(straight, 8) == _data_state(resumed, 8)
  assert _data_state(resumed, 4) == _data_state(straight, 4)


def test_train_learns_then_evaluate_and_sample(tmp_path, config):
  workdir = str(tmp_path / "run")
  config.train.num_steps = 60
  config.train.eval_every = 30
  config.train.grad_noise_every = 30
  config.train.loss_profile_batches = 1
  config.optim.ema_decay = 0.5
  history, _ = training.train_and_evaluate(config, workdir)
  val = [h["val/nelbo_bits_per_token"] for h in history if "val/nelbo_bits_per_token" in h]
  # Diagnostics for the kernel report: gradient noise at steps 0 and 30, a per-t profile at
  # each evaluation (finite, positive: the integrand is a KL-type term).
  noise = [h for h in history if "train/grad_noise_scale" in h]
  assert [h["step"] for h in noise] == [0, 30]
  assert all(h["train/grad_noise_trace"] > 0 for h in noise)
  profile = [h for h in history if "val/loss_at_t/0.55" in h]
  assert len(profile) == 3 and all(h["val/loss_at_t/0.05"] > 0 for h in profile)
  assert len(val) == 3
  assert val[-1] < val[0] - 1.0, val               # starts at log2(256) = 8 bits
  final = [h for h in history if "final/unigram_bits_per_token" in h]
  assert len(final) == 1 and final[0]["final/nelbo_bits_per_token"] == pytest.approx(val[-1])
  assert final[0]["final/below_unigram_bits"] == pytest.approx(
      final[0]["final/unigram_bits_per_token"] - val[-1])
  assert final[0]["final/loss_at_t/0.95"] > 0
  assert os.path.exists(os.path.join(workdir, "metrics.jsonl"))
  assert os.listdir(os.path.join(workdir, "tensorboard"))

  report = evaluation.evaluate(workdir, max_batches=4)
  assert report["step"] == 60 and report["kernel"] == "masking"
  assert report["bits_per_token"] < 8.0
  np.testing.assert_allclose(report["perplexity_bound"], np.exp(report["nats_per_token"]))
  # The headline is the NELBO over (0, 1]; next to it the truncated bound (with its
  # reconstruction term) and MDLM's own quantity (no prior term, t in [1e-3, 1]).
  assert report["reported_form"] == "nelbo"
  assert report["nelbo_t_in_0_1"]["nats_per_token"] == report["nats_per_token"]
  truncated = report["nelbo_truncated"]
  assert truncated["t_min"] == 1e-3 and truncated["reconstruction_nats"] >= 0
  assert abs(truncated["nats_per_token"] - report["nats_per_token"]) < 0.3
  # MDLM's quantity leaves out t in [0, 1e-3) and the prior term (both ~0 for masking): in
  # expectation a hair below the NELBO, so two Monte Carlo draws may fall either way.
  assert abs(report["mdlm_reported"]["nats_per_token"] - report["nats_per_token"]) < 0.3
  assert "not a bound" in report["mdlm_reported"]["what"]

  texts, tokens, info = generation.generate(workdir, 2, reverse.SamplerOptions(steps=16), prompt="the")
  assert tokens.shape == (2, 32) and len(texts) == 2
  assert (tokens < 256).all()                       # no mask left
  assert all(t.startswith("the") for t in texts)         # rows start anywhere: no BOS
  assert 1 <= info["network_evaluations"] <= 16
  # Twice the trained length: sliding windows, each later one clamps what is generated.
  texts, tokens, info = generation.generate(workdir, 2, reverse.SamplerOptions(steps=8),
                                            length=64, prompt="the")
  assert tokens.shape == (2, 64) and (tokens < 256).all()
  assert all(t.startswith("the") for t in texts)         # rows start anywhere: no BOS
  assert [w["start"] for w in info["windows"]] == [0, 16, 32]
  # One template per sample: clamped text, free spans.
  templates = ["the <mask:3> and", "of"]
  _, tokens, _ = generation.generate(workdir, 1, reverse.SamplerOptions(steps=8),
                                     templates=templates)
  fixed, mask = generation.template_conditioning(
      experiment.restore(workdir)[0].tokenizer, templates, 32)
  assert tokens.shape == (2, 32) and (tokens[mask] == fixed[mask]).all()
  assert (tokens[~mask] < 256).all()

  # The command: the real-word rate printed; other options, other files (none overwritten).
  def sample(*options):
    run = subprocess.run([sys.executable, "-m", "dlm_jax.sample", f"--workdir={workdir}",
                          "--num_samples=2", "--steps=4", *options], capture_output=True,
                         text=True, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout
  assert "real-word rate" in sample()
  sample("--temperature=0.9")
  written = sorted(glob.glob(os.path.join(workdir, "samples", "step60_T4_*.json")))
  assert len(written) == 2
  temperatures = {json.load(open(p))["command_options"]["temperature"] for p in written}
  assert temperatures == {1.0, 0.9}


def test_autoregressive_baseline_learns(tmp_path, config):
  config.model.causal = True
  config.train.num_steps = 30
  config.train.eval_every = 30
  config.optim.ema_decay = 0.5
  history, _ = training.train_and_evaluate(config, str(tmp_path / "ar"))
  val = [h["val/nelbo_bits_per_token"] for h in history if "val/nelbo_bits_per_token" in h]
  assert val[-1] < val[0] - 1.0
  report = evaluation.evaluate(str(tmp_path / "ar"), max_batches=2)
  assert report["kernel"] == "autoregressive" and "perplexity" in report

  # The quality evaluation, with the AR model sampling and judging itself.
  ar = str(tmp_path / "ar")
  quality = sample_quality.sample_quality(ar, 4, [8], reverse.SamplerOptions(), judge=ar,
                                    prompt_tokens=4, batch_size=4)
  data, samples = quality["results"]
  assert data["name"] == "data" and samples["steps"] == 8
  for row in (data, samples):
    assert np.isfinite(row["gen_ppl"]) and row["gen_ppl"] > 1
    assert 0 < row["distinct_1"] <= 1 and 0 <= row["basin_share"] <= 1
  # Real rows of the validation split are words of the training split almost always.
  assert data["real_word_rate"] > 0.9 and data["words"] > 0
  assert 0 <= samples["real_word_rate"] <= 1
  # Uniformly random tokens score a perplexity >= V under any judge (cross-entropy >= entropy);
  # the model's own samples (and the real rows) must be far likelier than that.
  vocab = config.data.vocab_size
  assert samples["gen_ppl"] < 0.75 * vocab and data["gen_ppl"] < 0.75 * vocab
  assert "| autoregressive | 8 |" in sample_quality.quality_markdown(quality)


def test_gradient_accumulation_runs(tmp_path, config):
  config.optim.grad_accum_steps = 2
  config.train.num_steps = 3
  history, state = training.train_and_evaluate(config, str(tmp_path / "acc"))
  assert int(state.step) == 3
  assert np.isfinite([h["train/loss"] for h in history if "train/loss" in h]).all()


@pytest.mark.parametrize("name,neighbors,global_kind", [
    ("semdlm_plus", "partition", "uniform"),
    ("semdlm_plus", "topk", "mask"),
])
def test_other_kernels_train_and_report(tmp_path, config, name, neighbors, global_kind):
  """Each kernel trains through the same loop; tables are built into the workdir on demand."""
  config.kernel.name = name
  config.kernel.neighbors = neighbors
  config.kernel.global_kind = global_kind
  config.kernel.embedding_dim = 16
  config.model.time_conditioning = True
  config.train.num_steps = 4
  config.train.eval_every = 4
  flagged = neighbors == "partition"          # trained for exact conditioning
  config.model.clean_flag = flagged
  config.train.prompt_rate = 0.5 if flagged else 0.0
  workdir = str(tmp_path / name)
  history, _ = training.train_and_evaluate(config, workdir)
  val = [h["val/nelbo_bits_per_token"] for h in history if "val/nelbo_bits_per_token" in h]
  assert len(val) == 2 and np.isfinite(val).all()
  report = evaluation.evaluate(workdir, max_batches=1)
  assert report["kernel"] == name and report["structure"] == neighbors
  assert report["parameterization"] == "mean" and report["reported_form"] == "truncated"
  assert report["nats_per_token"] == report["nelbo_truncated"]["nats_per_token"]
  assert report["std_error_nats"] is None          # one batch: undefined, not a false 0
  for bad in (dict(t_samples=0), dict(t_samples=-2), dict(max_batches=-1)):
    with pytest.raises(UserError, match="must be >= "):
      evaluation.evaluate(workdir, **bad)
  assert np.isfinite(report["nelbo_truncated"]["nats_per_token"])
  assert "mdlm_reported" not in report
  assert ("loose" in report["what"]) == (neighbors == "topk")
  _, tokens, info = generation.generate(workdir, 2, reverse.SamplerOptions(steps=4),
                                        prompt="the")
  assert info["conditioning_exact"] == flagged and tokens.shape[0] == 2
