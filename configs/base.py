"""The shared defaults every config starts from: `dlm_jax/config_schema.py` (the schema
lives in the library; this module re-exports it for the config files)."""

from dlm_jax.config_schema import get_config, use_kernel  # noqa: F401
