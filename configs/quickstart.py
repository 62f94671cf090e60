"""CPU quickstart: a tiny masking DLM on Gutenberg Shakespeare, minutes on a laptop."""

from configs import base


def get_config():
  c = base.get_config()
  c.data.source = "quickstart"
  c.data.vocab_size = 2048
  c.data.seq_len = 128
  c.model.size = "tiny"
  c.model.dtype = "float32"      # bf16 matmuls are emulated (slow) on most CPUs
  c.optim.learning_rate = 2e-3
  c.optim.warmup_steps = 50
  c.optim.lr_schedule = "cosine"
  c.optim.ema_decay = 0.99
  c.train.batch_size = 32
  c.train.num_steps = 300
  c.train.log_every = 25
  c.train.eval_every = 100
  c.train.eval_batches = 8
  c.train.checkpoint_every = 100
  c.train.grad_noise_every = 25
  c.train.loss_profile_batches = 2
  c.eval.batch_size = 32
  return c
