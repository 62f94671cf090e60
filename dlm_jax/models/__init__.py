"""Flax models: the DiT-style denoiser and its causal (AR) variant."""

from dlm_jax.models.transformer import Transformer, TransformerConfig, model_config  # noqa: F401
