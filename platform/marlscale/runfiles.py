"""The files of a run directory, named once (as `keys.py` names metrics): every writer and
reader of a `train`, `sweep` or `league` run directory, or of a checkpoint, spells a file
through these names.

    train run     spec.json  metrics.jsonl  metrics.csv  result.json  provenance.json
                  checkpoints/iter_NNNNNN/   wandb/   report/
    sweep run     sweep.yaml  spec.fingerprint.json  provenance.json  results.csv  trials.csv
                  tuner.pkl  experiment_state-*.json (Tune's)  <trial>/ (params.json,
                  result.json, checkpoint_NNNNNN/)   report/
    league run    a sweep run, plus league.yaml and the cross-play tables (LEAGUE_TABLES)
    checkpoint    rllib_checkpoint.json  class_and_ctor_args.pkl  algorithm_state.pkl
"""

from __future__ import annotations

# ---- a `marlscale train` run ----------------------------------------------------------------
TRAIN_SPEC = "spec.json"
"""The resolved TrainSpec, with the run's extra keys (warm start, W&B id)."""
METRICS_JSONL = "metrics.jsonl"
"""One flattened result row per iteration, appended as the run goes."""
METRICS_CSV = "metrics.csv"
"""The same rows, written at the end."""
RESULT_JSON = "result.json"
"""The last row, the final greedy evaluation and the random policy's (a train run's); in a
sweep trial's folder, Tune's result rows (JSON lines)."""
CHECKPOINTS = "checkpoints"
"""A train run's checkpoints folder: CHECKPOINTS/iter_NNNNNN/."""
TRAIN_CHECKPOINT_GLOB = "iter_*"


def train_checkpoint(iteration: int) -> str:
    """The folder name of a train run's checkpoint at `iteration` (inside CHECKPOINTS)."""
    return f"iter_{iteration:06d}"


# ---- a `marlscale sweep` run ----------------------------------------------------------------
SWEEP_SPEC = "sweep.yaml"
"""The validated sweep spec (what --resume reads)."""
FINGERPRINT = "spec.fingerprint.json"
"""The spec a sweep started with and its SHA-256 (a changed spec is not resumed)."""
TUNER = "tuner.pkl"
"""Tune's own state, for --resume."""
RESULTS_CSV = "results.csv"
TRIALS_CSV = "trials.csv"
PARAMS_JSON = "params.json"
"""A trial's Tune config (its grid point and the spec), in its trial folder."""
TRIAL_CHECKPOINT_GLOB = "checkpoint_*"

# ---- a `marlscale league` run ---------------------------------------------------------------
LEAGUE_SPEC = "league.yaml"
LEAGUE_TABLE = "league"
"""The cross-play tables, each written as <name>.csv: league, ratings, matchups, episodes,
training_curves."""
LEAGUE_TABLES = ("league", "ratings", "matchups", "episodes", "training_curves")


def table_file(name: str) -> str:
    """A cross-play table's file name (`league` -> league.csv)."""
    return f"{name}.csv"


# ---- every run ------------------------------------------------------------------------------
PROVENANCE = "provenance.json"
"""The commit, versions and machine of a run (and its resumes)."""
REPORT_DIR = "report"
"""`marlscale report`'s default output folder inside the first run."""
REPORT_MD = "report.md"
WANDB_DIR = "wandb"

# ---- a checkpoint (RLlib's files) -----------------------------------------------------------
CHECKPOINT_MARKER = "rllib_checkpoint.json"
CHECKPOINT_CTOR = "class_and_ctor_args.pkl"
CHECKPOINT_STATE = "algorithm_state.pkl"
