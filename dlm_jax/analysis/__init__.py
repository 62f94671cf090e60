"""Analysis and reporting commands."""
