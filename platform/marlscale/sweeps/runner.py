"""`marlscale sweep`: a SweepSpec as one Ray Tune run, resumable.

Each grid point is a Tune trial of `SweepTrial` (the `TeamQ` Algorithm built from the point's
`TrainSpec`), with its own resources (CPUs, EnvRunners, GPUs). Trials checkpoint every
`checkpoint_every` iterations and at the end; a failed trial (its actor died, its node went
away) is retried from its last checkpoint up to `max_failures` times (Tune's FailureConfig);
an interrupted sweep continues with `marlscale sweep --resume RUN_DIR`, which re-runs no
finished trial and restarts unfinished ones from their last checkpoints.

    runner.py      the Tune run, its W&B callback and Ctrl-C (checkpoint, then stop)
    trial.py       the trainable, `SweepTrial`, and the repair of a deleted checkpoint
    resume.py      what --resume checks before Ray starts; the trials' saved statuses
    placement.py   whether a cluster has a node for every trial (a bounded wait)
    results.py     results.csv and trials.csv
    warm_start.py  a spec's `warm_start`: each trial's source trial, checked before Ray starts
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from ray import tune

from marlscale import interrupts, keys, provenance, runfiles, storage
from marlscale.runspec.sweep import SPEC_KEY, WARM_START_KEY, SweepSpec, WarmStartSpec
from marlscale.sweeps import results, warm_start
from marlscale.sweeps.placement import wait_until_fits
from marlscale.sweeps.resume import FINISHED, record_fingerprint, trial_statuses
from marlscale.sweeps.trial import SweepTrial

TUNE_STOP_KEYS = {"iterations": "training_iteration",
                  "env_steps": keys.ENV_STEPS,
                  "time_s": "time_total_s"}
SYNC_PERIOD_S = 60
"""How often results reach object storage while the sweep runs."""
INTERRUPT_TIMEOUT_S = 120.0
"""After a Ctrl-C, how long running trials get to checkpoint before the sweep stops anyway."""
TUNE_SIGINT = "TUNE_DISABLE_SIGINT_HANDLER"
SHOULD_CHECKPOINT = "should_checkpoint"  # ray.tune.result.SHOULD_CHECKPOINT


def trial_name(trial) -> str:
    spec, point = SweepSpec.of_trial(trial.config)
    return f"{spec.trial_name(point)}_{trial.trial_id}"


def wandb_group(config: dict[str, Any]) -> str:
    spec, point = SweepSpec.of_trial(config)
    return spec.group(point)


def param_space(spec: SweepSpec,
                sources: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The trials' Tune configs: the spec, each grid axis, and (`sources`: `warm_start.resolve`
    of a warm-started spec) each trial's source, picked by its `match` values."""
    space: dict[str, Any] = {SPEC_KEY: spec.to_dict()}
    for axis, values in spec.grid.items():
        space[axis] = tune.grid_search(values)
    if sources is not None:
        match = WarmStartSpec.of(spec.warm_start).match
        space[WARM_START_KEY] = tune.sample_from(warm_start.SourceOf(match, sources))
    return space


def callbacks(spec: SweepSpec) -> list:
    from marlscale.sweeps.wandb import SweepWandbLogger
    from marlscale.wandb_logging import DEFAULT_PROJECT, resolve_mode

    mode = resolve_mode(spec.wandb.get("mode", "auto"))
    if mode == "disabled":
        return []
    return [SweepWandbLogger(project=spec.wandb.get("project", DEFAULT_PROJECT), mode=mode,
                             group_of=wandb_group, entity=spec.wandb.get("entity"))]


def run(spec: SweepSpec, run_dir: str | Path, *, resume: bool = False,
        log=print, resource_wait_s: float | None = None,
        sources: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run (or resume) the sweep into `run_dir`; Ray must be initialised. Returns a summary.

    `resource_wait_s` (on a cluster): how long to wait for a node that can hold every trial
    before failing (`wait_until_fits`); None: no check (a local Ray was checked before it
    started). `sources`: a warm-started spec's `warm_start.resolve(spec)` (resolved here if
    not given; a resumed sweep's trials keep the sources they started with)."""
    if spec.warm_start is not None and sources is None and not resume:
        sources = warm_start.resolve(spec)
    if resource_wait_s is not None:  # on a cluster: before anything is written or waits
        wait_until_fits(spec, resource_wait_s, log)
    # On object storage, Tune writes the trials to the URI; marlscale's own files are written
    # in a local mirror and uploaded (marlscale/storage.py).
    remote = storage.is_uri(run_dir)
    if remote:
        target = str(run_dir).rstrip("/")
        storage_path, name = storage.split(target)
        run_dir = Path(tempfile.mkdtemp(prefix="marlscale-sweep-"))
        if resume:
            storage.fetch(target, run_dir)
    else:
        run_dir = Path(run_dir).resolve()
        target, storage_path, name = str(run_dir), str(run_dir.parent), run_dir.name
    own_files = [runfiles.SWEEP_SPEC, runfiles.FINGERPRINT, runfiles.PROVENANCE]
    if resume:
        tuner = tune.Tuner.restore(target, trainable=SweepTrial, resume_unfinished=True,
                                   resume_errored=True)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / runfiles.SWEEP_SPEC).write_text(yaml.safe_dump(spec.to_dict(),
                                                                  sort_keys=False))
        record_fingerprint(run_dir, spec.to_dict())
        tuner = tune.Tuner(
            SweepTrial,
            param_space=param_space(spec, sources),
            tune_config=tune.TuneConfig(
                max_concurrent_trials=spec.max_concurrent_trials,
                trial_name_creator=trial_name,
                trial_dirname_creator=trial_name,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage_path,
                stop={TUNE_STOP_KEYS[k]: v for k, v in spec.stop.items()},
                checkpoint_config=tune.CheckpointConfig(
                    checkpoint_frequency=spec.checkpoint_every, checkpoint_at_end=True,
                    num_to_keep=2,
                ),
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                sync_config=tune.SyncConfig(sync_period=SYNC_PERIOD_S),
                callbacks=callbacks(spec),
                verbose=1,
            ),
        )
    provenance.record(run_dir)
    if remote:
        storage.push(run_dir, target, own_files)
    log(f"# sweep {spec.experiment}: {len(spec.points())} trials -> {target}")
    with _checkpoint_on_interrupt(tuner, log) as received:
        grid = tuner.fit()
    statuses = trial_statuses(target)
    if remote:
        storage.fetch(target, run_dir)
    results_csv, trials_csv = results.write_tables(run_dir, spec.axes, grid, statuses)
    if remote:
        storage.push(run_dir, target, [runfiles.RESULTS_CSV, runfiles.TRIALS_CSV])
        results_csv, trials_csv = (f"{target}/{runfiles.RESULTS_CSV}",
                                   f"{target}/{runfiles.TRIALS_CSV}")
        shutil.rmtree(run_dir, ignore_errors=True)
    errors = sum(1 for r in grid if r.error)
    unfinished = sum(1 for status in statuses.values() if status not in FINISHED)
    return {"run_dir": target, "experiment": spec.experiment, "trials": len(grid),
            "errored": errors, "interrupted": unfinished, "signal": received.name or None,
            "results_csv": str(results_csv),
            "trials_csv": str(trials_csv)}


class CheckpointOnInterrupt(tune.Callback):
    """A Tune callback for a clean Ctrl-C: once `request()`ed, every running trial's next
    result asks Tune for a checkpoint (`should_checkpoint`, which Tune reads after its
    callbacks); when each has one (or after `timeout_s`), Tune is stopped the way its own
    Ctrl-C stops it (SIGUSR1): experiment state saved, unfinished trials resumable from the
    checkpoints just written."""

    def __init__(self, log=print, timeout_s: float = INTERRUPT_TIMEOUT_S):
        self.log = log
        self.timeout_s = timeout_s
        self.requested_at: float | None = None
        self.saved: set[str] = set()
        self.stopping = False

    def request(self, why: str = "") -> None:
        self.requested_at = time.monotonic()
        self.log(f"interrupted{f' ({why})' if why else ''}: each running trial checkpoints at "
                 "the end of its iteration, then the sweep stops (Ctrl-C or SIGTERM again to "
                 "stop now, from the last checkpoints)")

    def stop(self) -> None:
        self.stopping = True
        os.kill(os.getpid(), signal.SIGUSR1)  # Tune's own graceful stop

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.requested_at is not None and trial.trial_id not in self.saved:
            result[SHOULD_CHECKPOINT] = True

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if self.requested_at is not None:
            self.saved.add(trial.trial_id)

    def on_step_end(self, iteration, trials, **info):
        if self.requested_at is None or self.stopping:
            return
        running = {t.trial_id for t in trials if t.status == "RUNNING"}
        late = time.monotonic() - self.requested_at > self.timeout_s
        if running <= self.saved or late:
            self.log(f"interrupted: {len(self.saved)} running trial(s) checkpointed"
                     + ("" if not late else f", others not within {self.timeout_s:g} s")
                     + "; stopping the sweep")
            self.stop()


@contextlib.contextmanager
def _checkpoint_on_interrupt(tuner, log):
    """Within (the main thread only): Ctrl-C or SIGTERM as `CheckpointOnInterrupt` says; a
    second one stops Tune at once, a third raises Interrupted (marlscale/interrupts.py).
    Yields what was received."""
    interrupt = CheckpointOnInterrupt(log)
    run_config = tuner._local_tuner.get_run_config()
    run_config.callbacks = [*(run_config.callbacks or []), interrupt]

    def second() -> None:
        if not interrupt.stopping:
            interrupt.stop()

    disabled = os.environ.get(TUNE_SIGINT)
    os.environ[TUNE_SIGINT] = "1"  # Tune leaves SIGINT to us (and keeps SIGUSR1)
    try:
        with interrupts.on_interrupt([lambda: interrupt.request(received.name),
                                      second]) as received:
            yield received
    finally:
        if disabled is None:
            os.environ.pop(TUNE_SIGINT, None)
        else:
            os.environ[TUNE_SIGINT] = disabled
