"""MDLM on OpenWebText: DiT-small, L = 1024 wrapped, batch 512, 1M steps (MDLM, arXiv 2406.07524).

Point data.train_pattern at OWT as .txt / .jsonl files (or use a prepared TFDS
build with data.source = "tfds"); the last 5% of documents are held out.
Tokenizer: GPT-2 BPE as in MDLM/Duo/SEDD (V = 50258 with PAD), from
data.tokenizer_path or the gpt2.tiktoken shipped by
`pip install --no-deps openai-whisper`.
"""

from configs import base


def get_config():
  c = base.get_config()
  c.data.source = "files"
  c.data.train_pattern = "data/openwebtext/*.jsonl"
  c.data.mode = "wrap"
  c.data.seq_len = 1024
  c.data.tokenizer = "gpt2"
  c.model.size = "small"
  c.model.variant = "mdlm"         # MDLM's DiT exactly: its checkpoints load and export
  c.model.dropout = 0.1
  c.optim.learning_rate = 3e-4
  c.optim.warmup_steps = 2500
  c.optim.lr_schedule = "constant"
  c.optim.ema_decay = 0.9999
  c.train.batch_size = 512
  c.train.num_steps = 1_000_000
  c.eval.batch_size = 32
  return c
