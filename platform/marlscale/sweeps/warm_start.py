"""Transfer as a sweep arm: a sweep spec's `warm_start` (runspec/sweep.py), checked against its
source sweep before Ray starts and handed to the trials.

    warm_start: {from: runs/smoke, match: [algorithm, seed], where: {n_agents: 5}}

Each trial starts from the final checkpoint of its source trial: the one trial of the finished
sweep in `from` (among those whose grid values `where` keeps) whose values of the `match` axes
equal the trial's. `resolve` checks, each failure one line naming the spec: that `from` is a
sweep run directory, that `match` and `where` name axes of both sweeps (and `where` values the
source swept), that each trial has exactly one source trial, that each source trial has a final
checkpoint (at its last result, which reached its stop), and that each checkpoint fits its
trial (game, algorithm, network sizes, observation shapes: train.py's `warm_start_teams`, from
the checkpoints' JSON, nothing unpickled). What it returns goes into the trials' configs (Tune's
`sample_from`, so params.json records it); a trial loads the weights with train.py's
`check_warm_start` when it starts afresh (trial.py), never when it restores its own checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from marlscale import keys, runfiles, storage
from marlscale.runspec.common import SpecError
from marlscale.runspec.sweep import SweepSpec, WarmStartSpec
from marlscale.runspec.train import should_stop
from marlscale.sweeps.results import read_results, trial_dirs

SHOWN_TRIALS = 6
"""The most candidate source trials an error lists."""


def match_key(values: list[Any]) -> str:
    """The lookup key of a trial's `match` values (JSON: lists and numbers compare as values)."""
    return json.dumps(values, sort_keys=True, default=str)


class SourceOf:
    """Tune's `sample_from` of a trial's WARM_START_KEY: its source, by its `match` values
    (picklable: Tune keeps it in tuner.pkl for trials it has not yet created)."""

    def __init__(self, match: list[str], sources: dict[str, dict[str, Any]]):
        self.match = list(match)
        self.sources = dict(sources)

    def __call__(self, spec) -> dict[str, Any]:
        config = spec["config"]
        return dict(self.sources[match_key([config[axis] for axis in self.match])])


def resolve(spec: SweepSpec) -> dict[str, dict[str, Any]] | None:
    """Every trial's source as `match_key(values) -> {trial, checkpoint, env_steps}`, checked
    (see the module docstring); None without `warm_start`. No Ray, nothing written."""
    if spec.warm_start is None:
        return None
    from marlscale.train import warm_start_teams

    settings = WarmStartSpec.of(spec.warm_start)
    here = f"{spec.source}: warm_start"
    given = settings.from_
    allowed = (f"allowed: the run directory of a finished `marlscale sweep` (with "
               f"{runfiles.SWEEP_SPEC} and its trial directories), a local or shared folder")
    if storage.is_uri(given):
        raise SpecError(f"{here}.from={given!r} is invalid (an object-store URI); {allowed}")
    root = Path(given).expanduser().resolve()
    if not root.is_dir():
        problem = "is not a folder" if root.exists() else "does not exist"
        raise SpecError(f"{here}.from={given!r} {problem}; {allowed}")
    if not (root / runfiles.SWEEP_SPEC).is_file():
        raise SpecError(f"{here}.from={given!r} is not a sweep run directory (it has no "
                        f"{runfiles.SWEEP_SPEC}); {allowed}")
    try:
        source = SweepSpec.load(root / runfiles.SWEEP_SPEC)
    except SpecError as error:
        raise SpecError(f"{here}.from={given!r}: its {error}") from None
    both = [axis for axis in spec.axes if axis in source.axes]
    for axis in settings.match:
        if axis not in source.axes:
            raise SpecError(f"{here}.match names {axis!r}, which is not an axis of the source "
                            f"sweep {given!r} (its axes: {', '.join(source.axes)}); allowed: "
                            f"axes of both sweeps ({', '.join(both) or 'none'})")
    for axis, value in settings.where.items():
        if axis not in source.axes:
            raise SpecError(f"{here}.where names {axis!r}, which is not an axis of the source "
                            f"sweep {given!r}; allowed: its axes ({', '.join(source.axes)})")
        if not any(_same(value, v) for v in source.grid[axis]):
            raise SpecError(f"{here}.where.{axis}={value!r} is invalid: the source sweep "
                            f"{given!r} has no such trials; allowed: one of its values "
                            f"{source.grid[axis]!r}")

    candidates = []  # (trial directory, its grid point) of the source trials `where` keeps
    for trial_dir in trial_dirs(root):
        params = json.loads((trial_dir / runfiles.PARAMS_JSON).read_text())
        point = {axis: params.get(axis) for axis in source.axes}
        if all(_same(point[axis], value) for axis, value in settings.where.items()):
            candidates.append((trial_dir, point))

    pairs = []  # every trial's point and its source trial, then each pair's checkpoint
    for point in spec.points():
        trial = spec.trial_name(point)
        found = [(d, p) for d, p in candidates
                 if all(_same(p[axis], point[axis]) for axis in settings.match)]
        if len(found) != 1:
            wanted = ", ".join(f"{a}={point[a]!r}" for a in settings.match) or "any values"
            if settings.where:
                wanted += " and " + ", ".join(f"{a}={v!r}" for a, v in settings.where.items())
            shown = found or candidates
            listed = ", ".join(d.name for d, _ in shown[:SHOWN_TRIALS]) or "none"
            if len(shown) > SHOWN_TRIALS:
                listed += f" and {len(shown) - SHOWN_TRIALS} more"
            problem = (f"{len(found)} source trials ({listed})" if found else
                       f"no source trial (the source's trials: {listed})")
            raise SpecError(f"{here}: trial {trial} has {problem} with {wanted} in {given!r}; "
                            "allowed: exactly one per trial (add the axes that tell them apart "
                            "to warm_start.match, or keep one value with warm_start.where)")
        pairs.append((point, *found[0]))
    sources: dict[str, dict[str, Any]] = {}
    checked: dict[str, dict[str, Any]] = {}  # source trial directory -> its record
    for point, trial_dir, source_point in pairs:
        if str(trial_dir) not in checked:
            checked[str(trial_dir)] = _final(source, source_point, trial_dir, here, given)
        record = checked[str(trial_dir)]
        warm_start_teams(spec.train_spec(point), record["checkpoint"],
                         f"{here}: trial {spec.trial_name(point)} from source trial "
                         f"{trial_dir.name}: checkpoint")
        sources[match_key([point[axis] for axis in settings.match])] = record
    return sources


def _final(source: SweepSpec, point: dict[str, Any], trial_dir: Path, here: str,
           given: str) -> dict[str, Any]:
    """A source trial's record: its final checkpoint (at its last result, which reached its
    stop) and the env steps it had trained there; a SpecError naming it otherwise."""
    from marlscale.algorithms import checkpoints

    def refuse(problem: str) -> SpecError:
        return SpecError(f"{here}: source trial {trial_dir.name} in {given!r} has no final "
                         f"checkpoint ({problem}); allowed: a source sweep whose trials "
                         f"finished (continue it with: marlscale sweep --resume {given})")

    rows = read_results(trial_dir)
    if not rows:
        raise refuse("it has no results")
    last = rows[-1]
    stop = source.train_spec(point).stop
    if not should_stop(stop, last, float(last.get("time_total_s", 0.0))):
        raise refuse(f"it stopped at iteration {last['training_iteration']}, before its stop "
                     f"({', '.join(f'{k}={v}' for k, v in stop.items())})")
    try:
        checkpoint = checkpoints.load(trial_dir, "checkpoint")
    except ValueError as error:
        raise refuse(str(error)) from None
    if checkpoint.iteration != last["training_iteration"]:
        raise refuse(f"its last checkpoint is at iteration {checkpoint.iteration}, its last "
                     f"result at {last['training_iteration']}")
    return {"trial": trial_dir.name, "checkpoint": str(checkpoint.path),
            "env_steps": int(last[keys.ENV_STEPS])}


def _same(a: Any, b: Any) -> bool:
    """Grid values as equal as YAML and JSON let them be (5 == 5.0, [a, b] == [a, b])."""
    return a == b or match_key([a]) == match_key([b])
