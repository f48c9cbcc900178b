"""Sweeps: tune_specs/*.yaml grids of training runs on Ray Tune, with W&B and resume."""

from marlscale.runspec import SpecError, SweepSpec
from marlscale.sweeps.results import load_results

__all__ = ["SpecError", "SweepSpec", "load_results"]
