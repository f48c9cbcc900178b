"""Run specs: what a `train` run, a `sweep` and a `league` are, validated before Ray starts.

    common.py   the stop and resource sections, the keys a sweep and a league share
                (`ExperimentSpec`), section checks, `SpecError`, new-run-dir checks
    train.py    `TrainSpec` (one training run), `flatten` (a result as one row), `should_stop`
    sweep.py    `SweepSpec` (a grid of TrainSpecs, with ablation variants and an optional
                warm start from another sweep's trials, `WarmStartSpec`)
    league.py   `LeagueSpec` (head-to-head pairs x seeds, then cross-play settings)

Every key is a typed field (`specfile.setting`): adding one means adding its declaration (and
a line in its docs); the key lists, checks and messages derive from it. The file names of a
run directory are in `marlscale.runfiles`.
"""

from marlscale.curriculum.schedules import CurriculumConfig
from marlscale.runspec.common import (
    RESOURCE_KEYS,
    STOP_KEYS,
    ExperimentSpec,
    Resources,
    SpecError,
    Stop,
    check_new_run_dir,
    names,
)
from marlscale.runspec.league import LeagueEvaluation, LeagueSpec
from marlscale.runspec.sweep import SweepSpec, WarmStartSpec
from marlscale.runspec.train import TrainSpec, flatten, should_stop
from marlscale.specfile import markdown_table


def docs_tables() -> dict[str, str]:
    """docs/specs.md's tables, one per declaration (a test keeps the page equal to them)."""
    shared = names(ExperimentSpec)
    return {
        "train": markdown_table(TrainSpec, "key", source=False),
        "stop": markdown_table(Stop, "stop.<key>", source=False),
        "resources": markdown_table(Resources, "resources.<key>", source=False),
        "experiment": markdown_table(ExperimentSpec, "key", source=False),
        "sweep": markdown_table(SweepSpec, "key", source=False, leave_out=shared),
        # `from` is a Python keyword: its field is `from_`
        "sweep_warm_start": markdown_table(WarmStartSpec, "warm_start.<key>", source=False)
        .replace("| from_ |", "| from |"),
        "league": markdown_table(LeagueSpec, "key", source=False, leave_out=shared),
        "league_evaluation": markdown_table(LeagueEvaluation, "evaluation.<key>",
                                            source=False),
        "curriculum": markdown_table(CurriculumConfig, "training.curriculum.<key>",
                                     source=False),
    }


__all__ = ["ExperimentSpec", "LeagueSpec", "RESOURCE_KEYS", "STOP_KEYS", "SpecError",
           "SweepSpec", "TrainSpec", "check_new_run_dir", "docs_tables", "flatten",
           "should_stop"]
