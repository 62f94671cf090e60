"""Text sources, tokenizers and grain input pipelines."""
