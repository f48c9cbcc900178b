"""Run specs: what a `train` run, a `sweep` and a `league` are, validated before Ray starts.

    common.py   the stop and resource sections, the keys a sweep and a league share
                (`ExperimentSpec`), section checks, `SpecError`, new-run-dir checks
    train.py    `TrainSpec` (one training run), `flatten` (a result as one row), `should_stop`
    sweep.py    `SweepSpec` (a grid of TrainSpecs, with ablation variants)
    league.py   `LeagueSpec` (head-to-head pairs x seeds, then cross-play settings)

Every key is a typed field (`specfile.setting`): adding one means adding its declaration (and
a line in its docs); the key lists, checks and messages derive from it. The file names of a
run directory are in `marlscale.runfiles`.
"""

from marlscale.runspec.common import (
    RESOURCE_KEYS,
    STOP_KEYS,
    ExperimentSpec,
    SpecError,
    check_new_run_dir,
)
from marlscale.runspec.league import LeagueSpec
from marlscale.runspec.sweep import SweepSpec
from marlscale.runspec.train import TrainSpec, flatten, should_stop

__all__ = ["ExperimentSpec", "LeagueSpec", "RESOURCE_KEYS", "STOP_KEYS", "SpecError",
           "SweepSpec", "TrainSpec", "check_new_run_dir", "flatten", "should_stop"]
