"""The autoregressive baseline and generative-perplexity judge for configs/quickstart.py: the same
transformer, causal, trained with the next-token loss on the same data and tokenizer."""

from configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.model.causal = True
  c.model.time_conditioning = False
  return c
