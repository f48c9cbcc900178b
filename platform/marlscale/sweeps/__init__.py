"""Sweeps: tune_specs/*.yaml grids of training runs on Ray Tune, with W&B and resume."""

from marlscale.sweeps.results import load_results
from marlscale.sweeps.spec import SpecError, SweepSpec

__all__ = ["SpecError", "SweepSpec", "load_results"]
