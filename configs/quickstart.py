"""CPU quickstart: a tiny masking DLM on Gutenberg Shakespeare that learns in minutes on 2 cores
and writes samples made of real words (README "Quickstart" has its measured numbers).

Chosen by measurement (README "Quickstart": the real-word rate of 16 ancestral T = 128 samples
and the training time on 2 cores): 2048 SentencePiece pieces, rows of 64 tokens, 2000 steps,
learning rate 3e-3. With 256 pieces most words take several pieces and samples stay mostly
non-words (0.53 of words real after 1200 steps); 1024 pieces reach 0.71 after 3000 steps, 2048
pieces 0.83 after 2000; 4096 pieces run 25% slower per step. No gradient-noise or per-t
diagnostics during training. tests/test_aot.py pins its compute budget."""

from configs import base


def get_config():
  c = base.get_config()
  c.data.source = "quickstart"
  c.data.vocab_size = 2048
  c.data.seq_len = 64
  c.model.size = "tiny"
  c.model.dtype = "float32"      # bf16 matmuls are emulated (slow) on most CPUs
  c.optim.learning_rate = 3e-3
  c.optim.warmup_steps = 20
  c.optim.lr_schedule = "cosine"
  c.optim.ema_decay = 0.99
  c.train.batch_size = 32
  c.train.num_steps = 2000
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.eval_batches = 8
  c.train.checkpoint_every = 500
  c.eval.batch_size = 32
  return c
