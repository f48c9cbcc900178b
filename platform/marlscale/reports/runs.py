"""Run directories as two tables: one row per trial, and one row per trial x iteration.

`load(RUN_DIR, ...)` reads any mix of

* a `marlscale train` run (spec.json, metrics.jsonl, result.json),
* a `marlscale sweep` run (sweep.yaml; each trial's result.json while it runs, results.csv and
  trials.csv once it ends: a partial or interrupted sweep is read from what its trials wrote),
* a `marlscale league` run (a sweep with league.yaml, league.csv and the cross-play tables),

and resolves every trial's full configuration from its spec (defaults included), so that a
figure can ask "which algorithms, which N, which reward modes" without knowing how the run
was launched. Nothing here draws; `reports/figures.py` does.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from marlscale import keys, runfiles
from marlscale.algorithms.algorithm import (
    AGENT_STEPS_PER_S,
    ENV_STEPS,
    ENV_STEPS_PER_S,
    EPISODES,
    EVALUATION,
    RANDOM,
    SAMPLING_ENV_STEPS_PER_S,
    WALL_S,
)
from marlscale.algorithms.config import TeamQConfig
from marlscale.algorithms.settings import TeamQSettings
from marlscale.provenance import read as read_provenance
from marlscale.runspec.sweep import PAIR_AXIS, SHORTHAND_AXES, VARIANT_AXIS, SweepSpec
from marlscale.runspec.train import SPEC_KEYS, TrainSpec
from marlscale.sweeps import results as sweep_results

REWARD_MODE_AXIS = "env_config.reward_mode"
CURRICULUM_AXIS = "training.curriculum.schedule"
CONFIG = ["game", "algorithm", "opponent_algorithm", "n_agents", "reward_mode", "incremental"]
"""What a trial is, seed aside (plus any further grid axis of its sweep)."""
RESOLVED = "_resolved"
"""A trial row's resolved settings while loading (dropped once the axes are known)."""
ABLATION = "ablation"
"""The column of a sweep's `variant` axis (one-factor-at-a-time ablations): the variant's
name. Figures group by their own `variant` label, which this column feeds."""
CURVE_METRICS = {
    "train_return": f"{EPISODES}/{{team}}/{keys.RETURN_PER_AGENT}",
    "greedy_return": f"{EVALUATION}/{{team}}/{keys.RETURN_PER_AGENT}",
    "active_greedy_return": f"{EVALUATION}/{{team}}/{keys.ACTIVE_RETURN_PER_AGENT}",
    "random_return": f"{RANDOM}/{{team}}/{keys.RETURN_PER_AGENT}",
    "opponent_train_return": f"{EPISODES}/{{other}}/{keys.RETURN_PER_AGENT}",
    "reward_difference": f"{EPISODES}/{{team}}/{keys.REWARD_DIFFERENCE}",
    "n_active": "curriculum/n_active",
    "env_steps_per_s": ENV_STEPS_PER_S,
    "agent_steps_per_s": AGENT_STEPS_PER_S,
    "sampling_env_steps_per_s": SAMPLING_ENV_STEPS_PER_S,
    "wall_s": WALL_S,
    "time_total_s": "time_total_s",
}
"""Curve columns -> the result-row key they come from ({team}: the learning team)."""


@dataclass
class Runs:
    """What `load` found: trials (one row each), curves (one row per trial x iteration)."""

    paths: list[Path]
    kinds: dict[str, str]
    """run dir -> train | sweep | league"""
    names: dict[str, str]
    """run dir -> its experiment (sweeps, leagues) or folder name (train runs)"""
    trials: pd.DataFrame
    curves: pd.DataFrame
    missing: list[dict[str, str]] = field(default_factory=list)
    """Grid points with no trial directory, and trials that failed: run, trial, reason."""
    league: dict[str, pd.DataFrame] = field(default_factory=dict)
    """league.csv (and ratings.csv, episodes.csv) of league runs, with a `run` column."""
    extra_axes: list[str] = field(default_factory=list)
    """Grid axes beyond CONFIG that tell trials apart (e.g. training.lr, ablation)."""
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The sweeps' `variants`: ablation name -> the settings it changes."""
    provenance: list[dict[str, Any]] = field(default_factory=list)

    @property
    def game(self) -> str:
        return str(self.trials["game"].iloc[0])


def _problem(path: Path, expected: str) -> ValueError:
    return ValueError(f"run directory {str(path)!r} {expected}; expected: a `marlscale train` "
                      f"run directory ({runfiles.TRAIN_SPEC} and {runfiles.METRICS_JSONL}), or a "
                      f"sweep or league run directory ({runfiles.SWEEP_SPEC} and its trials' "
                      f"{runfiles.RESULT_JSON}, {runfiles.RESULTS_CSV} or "
                      f"{runfiles.RESULTS_CSV_GZ})")


def _plain(value: Any) -> Any:
    """numpy scalars from pandas as Python values; a CSV's pair '[a, b]' as a list."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, str) and value.startswith("["):
        value = yaml.safe_load(value)
    return value


def trial_config(spec: TrainSpec, config: TeamQConfig) -> dict[str, Any]:
    """A trial's resolved configuration (defaults filled in: `config`, built from `spec`) and
    its budget in env steps."""
    env = config.team_env_config
    teams = config.team_algorithms()
    team, *others = list(teams)
    counts = dict(zip(env.game_spec.team_names, env.team_counts))
    other = others[0] if others else next(t for t in env.game_spec.team_names if t != team)
    per_iteration = (config.rollout_length * max(1, config.num_env_runners)
                     * config.num_envs_per_env_runner)
    if "env_steps" in spec.stop:
        budget = int(spec.stop["env_steps"])
        if "iterations" in spec.stop:
            budget = min(budget, int(spec.stop["iterations"]) * per_iteration)
    elif "iterations" in spec.stop:
        budget = int(spec.stop["iterations"]) * per_iteration
    else:
        budget = math.nan  # time_s only
    return {
        "game": env.game, "algorithm": teams[team],
        "opponent_algorithm": teams[others[0]] if others else "random",
        "n_agents": counts[team], "reward_mode": env.reward_mode,
        "incremental": config.curriculum_config().schedule, "seed": spec.seed,
        "team": team, "other": other, "learning_agents": sum(counts[t] for t in teams),
        "budget_env_steps": budget,
    }


def resolved_settings(config: TeamQConfig) -> dict[str, Any]:
    """Every setting a grid axis can name (training.<setting>, training.curriculum.<field>,
    env_config.<field>) with the value this trial ran with, defaults included: what a trial
    of a run without that axis is labelled with when another run of the report has it."""
    values = {f"training.{name}": getattr(config, name) for name in TeamQSettings.names()
              if hasattr(config, name) and name != "curriculum"}
    curriculum = config.curriculum_config()
    values.update({f"training.curriculum.{f.name}": getattr(curriculum, f.name)
                   for f in dataclasses.fields(curriculum)})
    env = config.team_env_config
    values.update({f"env_config.{f.name}": getattr(env, f.name) for f in dataclasses.fields(env)})
    return {path: _plain(value) for path, value in values.items()
            if value is None or isinstance(value, (str, int, float, bool))}


def curve_frame(rows: pd.DataFrame, team: str, other: str) -> pd.DataFrame:
    """A trial's result rows as curve columns (NaN where a row lacks the metric)."""
    if not len(rows):  # a trial that failed or has not reported yet
        return pd.DataFrame(columns=["iteration", "env_steps", *CURVE_METRICS, "date",
                                     "hostname"])
    frame = pd.DataFrame({
        "iteration": rows["training_iteration"].astype(int),
        "env_steps": rows[ENV_STEPS].astype(int),
    })
    for column, key in CURVE_METRICS.items():
        key = key.format(team=team, other=other)
        frame[column] = pd.to_numeric(rows[key], errors="coerce") if key in rows else math.nan
    for column in ("date", "hostname"):
        frame[column] = rows[column] if column in rows else None
    return frame.reset_index(drop=True)


def _trial(run: Path, trial: str, spec: TrainSpec, rows: pd.DataFrame,
           axes: dict[str, Any]) -> tuple[dict[str, Any], pd.DataFrame]:
    built = spec.algorithm_config()  # once per trial: building validates the whole config
    config = trial_config(spec, built)
    curves = curve_frame(rows, config["team"], config["other"])
    for column, value in {"run": str(run), "trial": trial, **config, **axes}.items():
        curves[column] = [value] * len(curves) if isinstance(value, list) else value
    reached = int(curves["env_steps"].max()) if len(curves) else 0
    iterations = int(curves["iteration"].max()) if len(curves) else 0
    stop = spec.stop
    complete = (reached >= stop.get("env_steps", math.inf)
                or iterations >= stop.get("iterations", math.inf))
    row = {"run": str(run), "trial": trial, **config, **axes, "iterations": iterations,
           "env_steps": reached, "status": "complete" if complete else "incomplete",
           RESOLVED: resolved_settings(built)}
    return row, curves


# ---- one run directory of each kind -------------------------------------------------------
def _train_run(path: Path):
    values = json.loads((path / runfiles.TRAIN_SPEC).read_text())
    spec = TrainSpec.from_dict({k: v for k, v in values.items() if k in SPEC_KEYS},
                               source=str(path / runfiles.TRAIN_SPEC))
    lines = (path / runfiles.METRICS_JSONL).read_text().split("\n")
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # blank, or the last line cut short by a kill
    rows = pd.DataFrame(records)
    if not len(rows):
        raise _problem(path, f"has no result rows yet ({runfiles.METRICS_JSONL} is empty)")
    row, curves = _trial(path, path.name, spec, rows, {})
    result_file = path / runfiles.RESULT_JSON
    if result_file.is_file():
        final = json.loads(result_file.read_text())
        team = row["team"]
        evaluation = final.get("greedy_evaluation", {}).get(team, {})
        random = final.get("random_evaluation", {}).get(team, {}).get(keys.RETURN_PER_AGENT)
        last = curves.index[-1]
        for column, key in (("greedy_return", keys.RETURN_PER_AGENT),
                            ("active_greedy_return", keys.ACTIVE_RETURN_PER_AGENT)):
            if evaluation.get(key) is not None and pd.isna(curves.at[last, column]):
                curves.at[last, column] = evaluation[key]  # the final greedy evaluation
        if random is not None:
            curves.loc[curves["random_return"].isna(), "random_return"] = random
        row["status"] = "complete"
    return [row], curves, [], {}


def _results_file(path: Path) -> Path | None:
    """A finished sweep's results.csv, or the gzipped one a committed study keeps."""
    return next((path / name for name in (runfiles.RESULTS_CSV, runfiles.RESULTS_CSV_GZ)
                 if (path / name).is_file()), None)


def _sweep_run(path: Path):
    spec = SweepSpec.load(path / runfiles.SWEEP_SPEC)
    trial_dirs = sweep_results.trial_dirs(path)
    if trial_dirs:
        rows = sweep_results.load_results(path, spec.axes)
        points = {d.name: SweepSpec.of_trial(json.loads((d / runfiles.PARAMS_JSON).read_text()))[1]
                  for d in trial_dirs}
    elif _results_file(path) is not None:
        # pandas reads a .gz as it is; each column typed over the whole file, not per chunk
        # (a column empty in early rows, e.g. should_checkpoint, would come out mixed)
        rows = pd.read_csv(_results_file(path), low_memory=False)
        points = {name: {axis: _plain(group[axis].iloc[0]) for axis in spec.axes}
                  for name, group in rows.groupby("trial", sort=True)}
    else:
        raise _problem(path, "has no trials yet")
    status = {}
    if (path / runfiles.TRIALS_CSV).is_file():
        listed = pd.read_csv(path / runfiles.TRIALS_CSV, keep_default_na=False)
        status = {r["trial"]: r for r in listed.to_dict("records")}
    trials, curves, missing = [], [], []
    for name, point in points.items():
        mine = rows[rows["trial"] == name] if len(rows) else rows
        extra = {(ABLATION if axis == VARIANT_AXIS else axis): _plain(value)
                 for axis, value in point.items() if axis not in SHORTHAND_AXES
                 and axis not in (PAIR_AXIS, REWARD_MODE_AXIS, CURRICULUM_AXIS)}
        row, curve = _trial(path, name, spec.train_spec(point), mine, extra)
        listed = status.get(name)
        if listed is not None and listed.get("status") == "ERROR":
            row["status"] = "failed"
            missing.append({"run": str(path), "trial": name,
                            "reason": f"failed: {listed.get('error') or 'error'}"})
        elif row["status"] == "incomplete":
            missing.append({"run": str(path), "trial": name, "reason":
                            f"incomplete: {row['env_steps']:,} of {row['budget_env_steps']:,} "
                            "env steps" if not math.isnan(row["budget_env_steps"]) else
                            f"incomplete: {row['iterations']} iterations"})
        trials.append(row)
        curves.append(curve)
    present = {repr(sorted(p.items())) for p in points.values()}
    for point in spec.points():
        if repr(sorted({k: _plain(v) for k, v in point.items()}.items())) not in present:
            missing.append({"run": str(path), "trial": spec.trial_name(point),
                            "reason": "missing: no trial directory or result rows"})
    return trials, pd.concat(curves, ignore_index=True), missing, spec.variants


def kind_of(path: Path) -> str:
    if (path / runfiles.SWEEP_SPEC).is_file():
        return "league" if (path / runfiles.LEAGUE_SPEC).is_file() else "sweep"
    if (path / runfiles.TRAIN_SPEC).is_file() and (path / runfiles.METRICS_JSONL).is_file():
        return "train"
    if not path.exists():
        raise _problem(path, "does not exist")
    if not path.is_dir():
        raise _problem(path, "is not a folder")
    raise _problem(path, "holds no results")


def load(*paths: str | Path) -> Runs:
    """Every trial of every run directory; checks that they belong in one report."""
    trials, curves, missing, kinds, names, league, provenance = [], [], [], {}, {}, {}, []
    variants: dict[str, dict[str, Any]] = {}
    for given in paths:
        path = Path(given).expanduser()
        kind = kind_of(path)
        kinds[str(path)] = kind
        names[str(path)] = (SweepSpec.load(path / runfiles.SWEEP_SPEC).experiment if kind != "train"
                            else path.name)
        try:
            found = _train_run(path) if kind == "train" else _sweep_run(path)
        except (OSError, KeyError, json.JSONDecodeError, pd.errors.ParserError) as error:
            raise _problem(path, f"could not be read ({type(error).__name__}: {error})") \
                from None
        trials += found[0]
        curves.append(found[1])
        missing += found[2]
        for name, settings in found[3].items():
            if variants.setdefault(name, settings) != settings:
                raise ValueError(f"runs whose axes conflict: the variant {name!r} sets "
                                 f"{variants[name]} in one run and {settings} in "
                                 f"{str(path)!r}; expected: one meaning per variant name "
                                 "(report them separately)")
        if kind == "league" and (path / runfiles.table_file(runfiles.LEAGUE_TABLE)).is_file():
            for name in ("league", "ratings", "episodes"):
                if (path / runfiles.table_file(name)).is_file():
                    table = pd.read_csv(path / runfiles.table_file(name))
                    table.insert(0, "run", str(path))
                    league.setdefault(name, []).append(table)
        if (path / runfiles.PROVENANCE).is_file():
            provenance.append({"run": str(path),
                               **read_provenance(path / runfiles.PROVENANCE)})
    trial_table = pd.DataFrame(trials)
    extra_axes = [c for c in trial_table.columns if "." in c or c == ABLATION]
    curves = pd.concat(curves, ignore_index=True)
    for axis in extra_axes:  # a run without the axis: the value its trials ran with
        resolved = trial_table[RESOLVED].map(lambda values, a=axis: values.get(a, ""))
        trial_table[axis] = trial_table[axis].astype(object).where(trial_table[axis].notna(),
                                                                   resolved)
        curves = curves.drop(columns=axis, errors="ignore").merge(
            trial_table[["run", "trial", axis]], on=["run", "trial"], how="left")
    trial_table = trial_table.drop(columns=RESOLVED)
    runs = Runs(paths=[Path(p) for p in paths], kinds=kinds, names=names, trials=trial_table,
                curves=curves, missing=missing,
                league={name: pd.concat(tables, ignore_index=True)
                        for name, tables in league.items()},
                extra_axes=extra_axes, variants=variants, provenance=provenance)
    check_consistent(runs)
    return runs


def check_consistent(runs: Runs) -> None:
    """Runs whose axes conflict: two games, or one trial configuration in two run dirs."""
    games = runs.trials.groupby("game")["run"].first()
    if len(games) > 1:
        where = "; ".join(f"{run!r} holds {game}" for game, run in games.items())
        raise ValueError(f"runs whose axes conflict: {where}; expected: run directories of "
                         "one game (report each game on its own)")
    key = [*CONFIG, *runs.extra_axes, "seed"]
    repeated = runs.trials[runs.trials.duplicated(key, keep=False)]
    if len(repeated) and repeated["run"].nunique() > 1:
        first = repeated.iloc[0]
        same = repeated[(repeated[key] == first[key]).all(axis=1)]
        what = ", ".join(f"{k}={first[k]}" for k in key if first[k] != "")
        raise ValueError(f"runs whose axes conflict: the trial ({what}) is in both "
                         f"{' and '.join(repr(r) for r in same['run'].unique())}; expected: "
                         "run directories whose trials differ (report them separately)")
