"""Reverse-process samplers, each a whole loop inside one jit."""
