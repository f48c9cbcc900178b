"""A sweep's results, in one table per run directory.

    RUN_DIR/
      sweep.yaml              the validated spec (what --resume reads)
      results.csv             every result row of every trial: trial_id, trial, the grid axes,
                              then the flattened metrics (training_iteration,
                              env_steps_sampled_lifetime, episodes/<team>/return_per_agent,
                              curriculum/stage, curriculum/n_active, learners/..., ...)
      trials.csv              one row per trial: trial_id, trial, axes, status, iterations,
                              env steps, the learning team's side (team), its last return per
                              agent (epsilon-greedy) and reward difference, each learning side's
                              algorithm and return per agent (<side>_algorithm,
                              <side>_return_per_agent), its last greedy evaluation return per
                              agent (greedy_return_per_agent; empty without eval_interval),
                              the Ray nodes it ran on (node_ids: the distinct node ids of its
                              result rows in order of first appearance, space-separated; a
                              trial retried on another node has two), error
                              A warm-started sweep's (a spec's `warm_start`) tables also have,
                              in every row, warm_start_env_steps (its source trial's env steps)
                              and total_env_steps (those plus the trial's own), the budget of
                              the transfer arm
      <trial>/                Tune's trial directory: params.json, result.json (JSON lines),
                              progress.csv, checkpoint_NNNNNN/, wandb/ (offline W&B runs)
      tuner.pkl, experiment_state-*.json   Tune's own state, for `marlscale sweep --resume`

Load it with pandas in one line: `pandas.read_csv("RUN_DIR/results.csv")`, or, while a sweep
is still running, `marlscale.sweeps.load_results("RUN_DIR")`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from marlscale import keys, runfiles
from marlscale.algorithms.algorithm import NODE_ID
from marlscale.runspec import SweepSpec, flatten
from marlscale.runspec.sweep import WARM_START_KEY

ID_COLUMNS = ("trial_id", "trial")
WARM_START_ENV_STEPS, TOTAL_ENV_STEPS = "warm_start_env_steps", "total_env_steps"
"""A warm-started trial's budget columns: its source's env steps, and those plus its own."""


def trial_dirs(run_dir: str | Path) -> list[Path]:
    return sorted(p.parent for p in Path(run_dir).glob(f"*/{runfiles.PARAMS_JSON}"))


def read_results(trial_dir: str | Path) -> list[dict[str, Any]]:
    """A trial's result rows from Tune's result.json; a line still being written is left out."""
    path = Path(trial_dir) / runfiles.RESULT_JSON
    if not path.is_file():
        return []
    complete = path.read_text().split("\n")[:-1]  # the last piece has no newline yet
    return [json.loads(line) for line in complete if line.strip()]


def _rows(trial_dir: Path, axes: list[str]) -> list[dict[str, Any]]:
    params = json.loads((trial_dir / runfiles.PARAMS_JSON).read_text())
    rows: dict[int, dict[str, Any]] = {}
    for result in read_results(trial_dir):
        row = {"trial_id": result.get("trial_id"), "trial": trial_dir.name}
        row.update({axis: params.get(axis) for axis in axes})
        row.update(flatten(result))
        row.update(budget_columns(params, row.get(keys.ENV_STEPS, 0)))
        # A trial restored from a checkpoint repeats the iterations after it: keep the last.
        rows[int(result["training_iteration"])] = row
    return [rows[i] for i in sorted(rows)]


def budget_columns(params: dict[str, Any], env_steps) -> dict[str, int]:
    """A warm-started trial's WARM_START_ENV_STEPS and TOTAL_ENV_STEPS at `env_steps` of its
    own; nothing for a trial that started from scratch."""
    source = params.get(WARM_START_KEY)
    if not source:
        return {}
    return {WARM_START_ENV_STEPS: int(source["env_steps"]),
            TOTAL_ENV_STEPS: int(source["env_steps"]) + int(env_steps)}


def load_results(run_dir: str | Path, axes: list[str] | None = None):
    """Every trial's result rows as one pandas DataFrame (see the module docstring)."""
    import pandas as pd

    if axes is None:
        axes = SweepSpec.load(Path(run_dir) / runfiles.SWEEP_SPEC).axes
    rows = [row for d in trial_dirs(run_dir) for row in _rows(d, axes)]
    frame = pd.DataFrame(rows)
    leading = [c for c in (*ID_COLUMNS, *axes) if c in frame.columns]
    return frame[leading + sorted(c for c in frame.columns if c not in leading)]


def team_columns(params: dict[str, Any], last) -> dict[str, Any]:
    """A trial's sides in its last result row, the learning team first: `team` (its side),
    `return_per_agent` and `reward_difference` (its), then `<side>_algorithm` and
    `<side>_return_per_agent` for every side that learns (both in a head-to-head run)."""
    spec, point = SweepSpec.of_trial(params)
    teams = spec.train_spec(point).algorithm_config().team_algorithms()
    first = next(iter(teams))

    def metric(team: str, key: str) -> float | None:
        value = last.get(f"episodes/{team}/{key}") if len(last) else None
        return None if value is None or value != value else float(value)

    columns = {"team": first, "return_per_agent": metric(first, keys.RETURN_PER_AGENT),
               "reward_difference": metric(first, keys.REWARD_DIFFERENCE)}
    for team, algorithm in teams.items():
        columns[f"{team}_algorithm"] = algorithm
        columns[f"{team}_return_per_agent"] = metric(team, keys.RETURN_PER_AGENT)
    return columns


def _last_greedy(rows, team: str) -> float | None:
    """The team's last greedy evaluation return per agent (None if never evaluated)."""
    column = f"evaluation/{team}/{keys.RETURN_PER_AGENT}"
    values = rows[column].dropna() if len(rows) and column in rows else ()
    return float(values.iloc[-1]) if len(values) else None


def node_ids(trial_dir: str | Path) -> str:
    """The Ray nodes a trial ran on: the distinct node ids of all its result rows (those a
    retry repeated included), in order of first appearance, joined with spaces."""
    ids = (row.get(NODE_ID) for row in read_results(trial_dir))
    return " ".join(dict.fromkeys(i for i in ids if i))


def write_tables(run_dir: str | Path, axes: list[str], result_grid=None,
                 statuses: dict[str, str] | None = None) -> tuple[Path, Path]:
    """Write results.csv and trials.csv from the trial directories (and Tune's ResultGrid,
    and each trial's status as Tune saved it: trial directory name -> status)."""
    import pandas as pd

    run_dir = Path(run_dir)
    results = load_results(run_dir, axes)
    results.to_csv(run_dir / runfiles.RESULTS_CSV, index=False)
    errors = {}
    if result_grid is not None:
        for result in result_grid:
            errors[Path(result.path).name] = repr(result.error) if result.error else ""
    trials = []
    for trial_dir in trial_dirs(run_dir):
        mine = results[results["trial"] == trial_dir.name] if len(results) else results
        last = mine.iloc[-1] if len(mine) else {}
        params = json.loads((trial_dir / runfiles.PARAMS_JSON).read_text())
        error = errors.get(trial_dir.name, "")
        columns = team_columns(params, last)
        trials.append({
            "trial_id": last.get("trial_id") if len(mine) else None,
            "trial": trial_dir.name,
            **{axis: params.get(axis) for axis in axes},
            "status": "ERROR" if error else (statuses or {}).get(
                trial_dir.name, "TERMINATED" if result_grid is not None else "UNKNOWN"),
            "iterations": int(last["training_iteration"]) if len(mine) else 0,
            "env_steps": int(last[keys.ENV_STEPS]) if len(mine) else 0,
            **budget_columns(params, last[keys.ENV_STEPS] if len(mine) else 0),
            **columns,
            "greedy_return_per_agent": _last_greedy(mine, columns["team"]),
            "node_ids": node_ids(trial_dir),
            "error": error,
        })
    pd.DataFrame(trials).to_csv(run_dir / runfiles.TRIALS_CSV, index=False)
    return run_dir / runfiles.RESULTS_CSV, run_dir / runfiles.TRIALS_CSV
