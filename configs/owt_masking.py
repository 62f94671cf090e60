"""MDLM on OpenWebText: DiT-small, L = 1024 wrapped, batch 512, 1M steps (MDLM, arXiv 2406.07524).

Data as MDLM / Duo (data.convention = "mdlm", README "Data conventions"): the Hugging Face
`openwebtext` train split from the local cache (or a save_to_disk directory in
data.hf.name), the last 100k documents held out for validation; rows are
BOS + 1022 tokens of `doc EOS doc EOS ...` + EOS. Local .txt/.jsonl files instead:
data.source = "files", data.train_pattern = glob, data.validation_documents = 100000.
Tokenizer: GPT-2 BPE as in MDLM/Duo/SEDD (V = 50258 with PAD), from data.tokenizer_path or
the gpt2.tiktoken shipped by `pip install --no-deps openai-whisper`.
"""

from configs import base


def get_config():
  c = base.get_config()
  c.data.source = "hf"
  c.data.hf.name = "openwebtext"
  c.data.hf.train_split = "train[:-100000]"
  c.data.hf.validation_split = "train[-100000:]"
  c.data.convention = "mdlm"
  c.data.mode = "wrap"
  c.data.seq_len = 1024
  c.data.tokenizer = "gpt2"
  c.model.size = "small"
  c.model.variant = "mdlm"         # MDLM's DiT exactly: its checkpoints load and export
  c.model.dropout = 0.1
  c.model.logits_chunk = 128       # the loss never holds B x L x V logits (exact; elbo.py)
  c.optim.learning_rate = 3e-4
  c.optim.warmup_steps = 2500
  c.optim.lr_schedule = "constant"
  c.optim.ema_decay = 0.9999
  c.train.batch_size = 512
  c.train.num_steps = 1_000_000
  c.eval.batch_size = 32
  return c
