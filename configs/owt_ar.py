"""The autoregressive baseline and generative-perplexity judge for configs/owt_masking.py: the same
transformer, causal, trained with the next-token loss on the same data and tokenizer."""

from configs import owt_masking


def get_config():
  c = owt_masking.get_config()
  c.model.causal = True
  c.model.time_conditioning = False
  return c
