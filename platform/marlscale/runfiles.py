"""The files of a run directory, named once (as `keys.py` names metrics): every writer and
reader of a `train`, `sweep` or `league` run directory, or of a checkpoint, spells a file
through these names.

    train run     TRAIN_SPEC (spec.json: the resolved TrainSpec and the run's extra keys),
                  METRICS_JSONL (one flattened row per iteration, appended as it goes),
                  METRICS_CSV (the same rows, at the end), RESULT_JSON (the last row, the final
                  greedy evaluation and the random policy's), PROVENANCE,
                  CHECKPOINTS/iter_NNNNNN/ (`train_checkpoint`), wandb/, REPORT_DIR/
    sweep run     SWEEP_SPEC (sweep.yaml: the validated spec, what --resume reads),
                  FINGERPRINT (the spec it started with and its SHA-256), PROVENANCE,
                  RESULTS_CSV, TRIALS_CSV, TUNER (Tune's state, for --resume),
                  <trial>/ (PARAMS_JSON: its Tune config; RESULT_JSON: Tune's result rows,
                  JSON lines; checkpoint_NNNNNN/), REPORT_DIR/,
                  ZERO_SHOT_DIR/ (`marlscale evaluate SWEEP_DIR --n-agents ...`: ZERO_SHOT_CSV,
                  one row per trial x N played; ZERO_SHOT_SUMMARY_CSV; ZERO_SHOT_MD)
    league run    a sweep run, plus LEAGUE_SPEC and the cross-play tables (`table_file`:
                  league, ratings, matchups, episodes, training_curves)
    any run       RUN_LOCK while a process runs it (marlscale/runlock.py)
    checkpoint    CHECKPOINT_MARKER, CHECKPOINT_CTOR, CHECKPOINT_STATE (RLlib's own files,
                  pickles), CHECKPOINT_META (marlscale's JSON, written last: what readers
                  decide on, and every other file's size; `algorithms/checkpoints.py`)
"""

from __future__ import annotations

TRAIN_SPEC, METRICS_JSONL, METRICS_CSV = "spec.json", "metrics.jsonl", "metrics.csv"
RESULT_JSON, PROVENANCE = "result.json", "provenance.json"
CHECKPOINTS, TRAIN_CHECKPOINT_GLOB = "checkpoints", "iter_*"

SWEEP_SPEC, FINGERPRINT, TUNER = "sweep.yaml", "spec.fingerprint.json", "tuner.pkl"
RESULTS_CSV, TRIALS_CSV, PARAMS_JSON = "results.csv", "trials.csv", "params.json"
RESULTS_CSV_GZ = RESULTS_CSV + ".gz"
"""A committed study's results.csv, gzipped (reports read either; docs/results.md)."""
TRIAL_CHECKPOINT_GLOB = "checkpoint_*"

LEAGUE_SPEC, LEAGUE_TABLE = "league.yaml", "league"
RUN_LOCK = ".marlscale.lock"  # held by the one process running a run dir (runlock.py)
REPORT_DIR, REPORT_MD = "report", "report.md"
ZERO_SHOT_DIR, ZERO_SHOT_CSV = "zero_shot", "zero_shot.csv"
ZERO_SHOT_SUMMARY_CSV, ZERO_SHOT_MD = "zero_shot_summary.csv", "zero_shot.md"

CHECKPOINT_MARKER = "rllib_checkpoint.json"
CHECKPOINT_CTOR, CHECKPOINT_STATE = "class_and_ctor_args.pkl", "algorithm_state.pkl"
CHECKPOINT_META = "marlscale_checkpoint.json"


def train_checkpoint(iteration: int) -> str:
    """The folder name of a train run's checkpoint at `iteration` (inside CHECKPOINTS)."""
    return f"iter_{iteration:06d}"


def table_file(name: str) -> str:
    """A cross-play table's file name (`league` -> league.csv)."""
    return f"{name}.csv"
