"""CPU quickstart: a tiny masking DLM on Gutenberg Shakespeare that visibly learns in minutes
on 2 cores (README "Quickstart" has its measured numbers).

Chosen for learning per CPU second: 256 SentencePiece pieces (with 2048 the model sits at the
unigram plateau for the whole budget: 8.83 bits at step 450 against a unigram of 8.81), rows of
64 tokens, learning rate 3e-3 (5e-3 learns slower), and no gradient-noise or per-t diagnostics
during training. tests/test_aot.py pins its compute budget."""

from configs import base


def get_config():
  c = base.get_config()
  c.data.source = "quickstart"
  c.data.vocab_size = 256
  c.data.seq_len = 64
  c.model.size = "tiny"
  c.model.dtype = "float32"      # bf16 matmuls are emulated (slow) on most CPUs
  c.optim.learning_rate = 3e-3
  c.optim.warmup_steps = 20
  c.optim.lr_schedule = "cosine"
  c.optim.ema_decay = 0.99
  c.train.batch_size = 32
  c.train.num_steps = 1200
  c.train.log_every = 100
  c.train.eval_every = 300
  c.train.eval_batches = 8
  c.train.checkpoint_every = 300
  c.eval.batch_size = 32
  return c
