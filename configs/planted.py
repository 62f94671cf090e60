"""The planted semantic language (dlm_jax/data/planted.py): a masking DLM on rows whose exact
likelihood and entropy are known, minutes on a CPU. `python -m experiments.planted` trains
every kernel from this config."""

from configs import base


def get_config():
  c = base.get_config()
  c.data.source = "synthetic"
  c.data.tokenizer = "planted"
  c.data.seq_len = 64
  c.model.size = "tiny"
  c.model.dtype = "float32"      # bf16 matmuls are emulated (slow) on most CPUs
  c.kernel.k = 8                 # the planted clusters' size
  c.optim.learning_rate = 2e-3
  c.optim.warmup_steps = 50
  c.optim.lr_schedule = "cosine"
  c.optim.ema_decay = 0.99
  c.train.batch_size = 64
  c.train.num_steps = 600
  c.train.log_every = 50
  c.train.eval_every = 200
  c.train.eval_batches = 8
  c.train.checkpoint_every = 200
  c.eval.batch_size = 64
  return c
