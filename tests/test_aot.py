"""The ahead-of-time fit check (dlm_jax.fit / python -m dlm_jax.aot): a tiny config compiled
for a TPU v5e topology on this CPU host with libtpu (the `tpu` extra), and the batch search."""

import math

import pytest

from configs import quickstart
from dlm_jax import fit
from dlm_jax.errors import UserError


def _tiny(kernel="masking"):
  from configs import base  # pylint: disable=g-import-not-at-top
  c = base.use_kernel(quickstart.get_config(), kernel)
  c.data.seq_len, c.data.vocab_size = 32, 128
  c.model.num_layers, c.model.d_model, c.model.num_heads = 1, 32, 2
  c.model.logits_chunk = 16
  return c


def test_train_step_compiles_for_a_tpu_topology_on_a_cpu_host():
  target = fit.Target.make(_tiny("semdlm_plus"), "v5e:2x2")
  assert len(target.devices) == 4 and target.devices[0].platform == "tpu"
  assert target.hbm_gib == 16.0
  small, large = (fit.compile_train_step(target, target.experiment(b)) for b in (2, 4))
  for row in (small, large):
    assert row["fits"] and 0 < row["hbm_gib_per_chip"] < 1
    assert row["tflop_per_chip_step"] > 0
  # Twice the sequences per chip: more FLOPs, at most twice (the optimizer's are fixed).
  ratio = large["tflop_per_chip_step"] / small["tflop_per_chip_step"]
  assert 1.5 < ratio <= 2.0


def test_unknown_topology_is_one_line():
  with pytest.raises(UserError, match="v5e:2x2"):
    fit.topology_devices("v99:1x1")


def test_batch_search_summary():
  row = lambda b, fits, flops: {"per_chip_batch": b, "fits": fits,
                                "tflop_per_chip_step": flops,
                                "flops_per_sequence_vs_first": flops / b if fits else math.nan}
  rows = [row(1, True, 1.0), row(2, True, 2.02), row(4, True, 4.4), row(8, False, math.nan)]
  assert fit.summarise(rows) == {"largest_fitting": 4, "largest_without_recompute": 2,
                                 "reference_batch": 1}
  with pytest.raises(UserError, match="not even 1"):
    fit.summarise([row(1, False, math.nan)])
  assert fit.parse_batches("16, 8,8") == [8, 16]
  with pytest.raises(UserError, match="per_chip_batch"):
    fit.parse_batches("eight")


# The quickstart's training compute, as XLA counts it: 2000 steps x 14.3 GFLOP = 28.7 TFLOP,
# which trains in about 6 minutes on 2 CPU cores (README "Quickstart"; the ceiling is
# 10). A change that makes the quickstart costlier (a larger model, vocabulary, batch, rows or
# more steps) must move this budget and the README's measured times together.
QUICKSTART_TRAIN_TFLOP = 31.0


def test_quickstart_training_stays_within_its_compute_budget():
  c = quickstart.get_config()
  target = fit.Target.make(c, "local")
  per_chip = c.train.batch_size // len(target.devices)
  row = fit.compile_train_step(target, target.experiment(per_chip))
  total = row["tflop_per_chip_step"] * len(target.devices) * c.train.num_steps
  assert 0.5 * QUICKSTART_TRAIN_TFLOP < total <= QUICKSTART_TRAIN_TFLOP, total
  # Diagnostics that cost extra steps are off; evaluation is a few batches.
  assert c.train.grad_noise_every == 0 and c.train.loss_profile_batches == 0
  assert c.train.eval_batches * c.eval.batch_size * (c.train.num_steps // c.train.eval_every) <= 2048


def test_explicit_batches_that_do_not_fit_exit_nonzero():
  """`aot --per_chip_batch=1` on a chip too small for it printed the table and exited 0."""
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  run = lambda *flags: subprocess.run(
      [sys.executable, "-m", "dlm_jax.aot", "--config=configs/quickstart.py", "--topology=local",
       *flags], capture_output=True, text=True, cwd=root,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  none_fit = run("--per_chip_batch=1", "--hbm_gib=0.000001")
  assert none_fit.returncode != 0 and "none of the batches [1] fits" in none_fit.stderr
  negative = run("--hbm_gib=-1")
  assert negative.returncode != 0 and "--hbm_gib must be a positive" in negative.stderr
