"""The autoregressive baseline and generative-perplexity judge for configs/lm1b_masking.py: the same
transformer, causal, trained with the next-token loss on the same data and tokenizer."""

from configs import lm1b_masking


def get_config():
  c = lm1b_masking.get_config()
  c.model.causal = True
  c.model.time_conditioning = False
  return c
