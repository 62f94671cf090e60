"""Experiment drivers: research runs that combine the shipped configs (configs/) with the
library; run from the repository root, e.g. `python -m experiments.planted`."""
