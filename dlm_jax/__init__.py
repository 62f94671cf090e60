"""dlm_jax: discrete diffusion language models in JAX/Flax."""
