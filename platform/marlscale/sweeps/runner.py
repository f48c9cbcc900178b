"""`marlscale sweep`: a SweepSpec as one Ray Tune run, resumable.

Each grid point is a Tune trial of `SweepTrial` (the `TeamQ` Algorithm built from the point's
`TrainSpec`), with its own resources (CPUs, EnvRunners, GPUs). Trials checkpoint every
`checkpoint_every` iterations and at the end; a failed trial (its actor died, its node went
away) is retried from its last checkpoint up to `max_failures` times (Tune's FailureConfig);
an interrupted sweep continues with `marlscale sweep --resume RUN_DIR`, which re-runs no
finished trial and restarts unfinished ones from their last checkpoints.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from ray import tune

from marlscale import keys, provenance, storage
from marlscale.algorithms.algorithm import TeamQ
from marlscale.sweeps import results
from marlscale.sweeps.spec import SPEC_KEY, SweepSpec

logger = logging.getLogger(__name__)

SPEC_FILE = "sweep.yaml"
TUNE_STOP_KEYS = {"iterations": "training_iteration",
                  "env_steps": keys.ENV_STEPS,
                  "time_s": "time_total_s"}


def _algorithm_config(config):
    if isinstance(config, dict) and SPEC_KEY in config:
        spec, point = SweepSpec.of_trial(config)
        return spec.train_spec(point).algorithm_config()
    return config


class SweepTrial(TeamQ):
    """A Tune trainable: the TeamQ Algorithm of one grid point of a sweep."""

    def __init__(self, config=None, **kwargs):
        super().__init__(config=_algorithm_config(config), **kwargs)

    @classmethod
    def default_resource_request(cls, config):
        return super().default_resource_request(_algorithm_config(config))

    def restore(self, checkpoint_path):
        from ray import tune

        # Tune passes a _TrainingResult (checkpoint + metrics); callers a Checkpoint or a path.
        checkpoint = getattr(checkpoint_path, "checkpoint", checkpoint_path)
        if isinstance(checkpoint, (str, Path)):
            checkpoint = tune.Checkpoint.from_directory(str(checkpoint))
        refill_deleted_checkpoint(checkpoint.filesystem, checkpoint.path)
        return super().restore(checkpoint_path)


_CHECKPOINT_DIR = re.compile(r"checkpoint_(\d+)")


def refill_deleted_checkpoint(filesystem, path: str) -> str | None:
    """Put the trial's next surviving checkpoint where a deleted one is expected; its source.

    Tune keeps a trial's last `num_to_keep` checkpoints and deletes older ones as soon as a new
    one is registered, but writes the experiment state (what `--resume` reads) only every few
    seconds. A driver killed in between leaves a state that points at a deleted checkpoint,
    and Tune would fail that trial on every retry. The trial's later checkpoints from the
    same run are still there: the oldest of them holds the state the trial reached next (its
    iteration and counters come back with it), so it is copied into the expected place and
    the trial continues from there. Returns None when nothing was missing or nothing can
    replace it (Tune then raises its own error).
    """
    from pyarrow import fs

    path = path.rstrip("/")
    parent, name = posixpath.split(path)
    match = _CHECKPOINT_DIR.fullmatch(name)
    if not match or filesystem.get_file_info(path).type != fs.FileType.NotFound:
        return None
    later = []
    for info in filesystem.get_file_info(fs.FileSelector(parent, allow_not_found=True)):
        found = _CHECKPOINT_DIR.fullmatch(info.base_name)
        if found and info.type == fs.FileType.Directory and int(found[1]) > int(match[1]):
            later.append((int(found[1]), info.path))
    if not later:
        return None
    source = min(later)[1]
    fs.copy_files(source, path, source_filesystem=filesystem, destination_filesystem=filesystem)
    logger.warning("%s was deleted (Tune's num_to_keep) after the last saved experiment state "
                   "named it; continuing the trial from its next checkpoint, %s", path, source)
    return source


def trial_name(trial) -> str:
    spec, point = SweepSpec.of_trial(trial.config)
    return f"{spec.trial_name(point)}_{trial.trial_id}"


def wandb_group(config: dict[str, Any]) -> str:
    spec, point = SweepSpec.of_trial(config)
    return spec.group(point)


def param_space(spec: SweepSpec) -> dict[str, Any]:
    from ray import tune

    space: dict[str, Any] = {SPEC_KEY: spec.to_dict()}
    for axis, values in spec.grid.items():
        space[axis] = tune.grid_search(values)
    return space


def callbacks(spec: SweepSpec) -> list:
    from marlscale.sweeps.wandb import SweepWandbLogger
    from marlscale.wandb_logging import DEFAULT_PROJECT, resolve_mode

    mode = resolve_mode(spec.wandb.get("mode", "auto"))
    if mode == "disabled":
        return []
    return [SweepWandbLogger(project=spec.wandb.get("project", DEFAULT_PROJECT), mode=mode,
                             group_of=wandb_group, entity=spec.wandb.get("entity"))]


def check_resumable(run_dir: str | Path) -> SweepSpec:
    """The spec of an interrupted sweep, or a clear error when RUN_DIR is not one, when Tune's
    state in it is unreadable, or when its sweep.yaml is not the spec it started with. A URI
    is checked on a local copy of its small files."""
    if storage.is_uri(run_dir):
        with tempfile.TemporaryDirectory(prefix="marlscale-resume-") as mirror:
            try:
                return check_resumable(storage.fetch(str(run_dir), mirror, "--resume"))
            except ValueError as error:
                raise ValueError(str(error).replace(mirror, str(run_dir).rstrip("/"))) from None
    run_dir = Path(run_dir)
    if not (run_dir / SPEC_FILE).is_file() or not (run_dir / TUNER_FILE).is_file():
        raise ValueError(f"--resume {str(run_dir)!r} is invalid; allowed: the run directory "
                         f"of a sweep started by `marlscale sweep` ({SPEC_FILE} and tuner.pkl)")
    check_tuner_state(run_dir)
    spec = SweepSpec.load(run_dir / SPEC_FILE)
    check_unchanged(run_dir, spec.to_dict(), SPEC_FILE)
    return spec


TUNER_FILE = "tuner.pkl"
FINGERPRINT_FILE = "spec.fingerprint.json"


def check_tuner_state(run_dir: Path) -> None:
    """A clear error when Tune's tuner.pkl cannot be read (empty, cut short, not Tune's)."""
    import pickle

    path = run_dir / TUNER_FILE
    try:
        state = pickle.loads(path.read_bytes())
        if not isinstance(state, dict):
            raise TypeError(f"a {type(state).__name__}, not Tune's dict")
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same answer
        reason = "it is empty" if path.stat().st_size == 0 else \
            f"{type(error).__name__}: {error}"
        raise ValueError(f"--resume {str(run_dir)!r}: {str(path)!r} is unreadable ({reason}); "
                         "allowed: a run directory whose tuner.pkl Tune wrote (restore it "
                         "from a copy, or start the sweep again in a new --run-dir)") from None


def fingerprint(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def record_fingerprint(run_dir: Path, values: dict[str, Any]) -> None:
    """RUN_DIR/spec.fingerprint.json: the spec a sweep started with, and its SHA-256."""
    (run_dir / FINGERPRINT_FILE).write_text(json.dumps(
        {"sha256": fingerprint(values), "spec": values}, indent=2, default=str))


def check_unchanged(run_dir: Path, values: dict[str, Any], spec_file: str) -> None:
    """Refuse to resume a sweep whose spec file differs from the one it started with (Tune
    would resume the old trials while the driver reads the new grid). A run directory from
    before fingerprints were kept has nothing to compare with and passes."""
    path = run_dir / FINGERPRINT_FILE
    if not path.is_file():
        return
    started = json.loads(path.read_text())
    now = fingerprint(values)
    if now == started["sha256"]:
        return
    before = json.loads(json.dumps(started["spec"], default=str))
    after = json.loads(json.dumps(values, default=str))
    changed = [f"{key}: {before.get(key)!r} -> {after.get(key)!r}"
               for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]
    raise ValueError(
        f"--resume {str(run_dir)!r}: {spec_file} has changed since the sweep started "
        f"(started with sha256 {started['sha256'][:12]}, now {now[:12]}; "
        f"{'; '.join(changed)[:600]}); allowed: the spec the sweep started with (its copy is "
        f"in {FINGERPRINT_FILE}), or start the new spec in a new --run-dir")


RESOURCE_WAIT_S = 600.0


def trial_bundles(spec: SweepSpec) -> list[dict[str, float]]:
    """Every resource bundle any trial of the sweep asks for (Tune places each on one node),
    as the trials themselves compute them."""
    bundles = []
    for point in spec.points():
        request = SweepTrial.default_resource_request({SPEC_KEY: spec.to_dict(), **point})
        for bundle in request.bundles:
            wanted = {key: float(value) for key, value in bundle.items() if value}
            if wanted not in bundles:
                bundles.append(wanted)
    return bundles


def wait_until_fits(spec: SweepSpec, wait_s: float = RESOURCE_WAIT_S, log=print,
                    poll_s: float = 5.0) -> None:
    """On a cluster: a clear error, after at most `wait_s`, when no node can ever hold a
    trial's resources (e.g. GPUs on a cluster without GPU nodes), instead of trials that
    stay PENDING forever. It waits first, saying so, since an autoscaler may add a node."""
    import ray

    def misfits() -> tuple[list[dict[str, float]], list[dict[str, float]]]:
        nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
        return [bundle for bundle in trial_bundles(spec)
                if not any(all(node.get(key, 0.0) >= value for key, value in bundle.items())
                           for node in nodes)], nodes

    missing, nodes = misfits()
    if not missing:
        return
    deadline = time.monotonic() + wait_s

    def shown(resources: dict[str, float]) -> str:
        return ", ".join(f"{key}={value:g}" for key, value in sorted(resources.items())
                         if key in ("CPU", "GPU") or not key.startswith(("node:", "memory",
                                                                          "object_store")))

    log(f"marlscale: warning: no node of the cluster can hold a trial's {shown(missing[0])} "
        f"(nodes: {'; '.join(shown(n) for n in nodes) or 'none'}); waiting up to {wait_s:g} s "
        "for one to join (an autoscaler may add it)")
    while time.monotonic() < deadline:
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        missing, nodes = misfits()
        if not missing:
            log("marlscale: a node that holds every trial has joined")
            return
    raise ValueError(
        f"resources={shown(missing[0])} per trial is invalid on this cluster: no node can hold "
        f"it after {wait_s:g} s (nodes: {'; '.join(shown(n) for n in nodes) or 'none'}); "
        "allowed: per-trial resources that fit one node (resources.num_gpus, num_cpus, "
        "num_env_runners), or a cluster with such a node (--resource-wait-s to wait longer)")


def run(spec: SweepSpec, run_dir: str | Path, *, resume: bool = False,
        log=print, resource_wait_s: float | None = None) -> dict[str, Any]:
    """Run (or resume) the sweep into `run_dir`; Ray must be initialised. Returns a summary.

    `resource_wait_s` (on a cluster): how long to wait for a node that can hold every trial
    before failing (`wait_until_fits`); None: no check (a local Ray was checked before it
    started)."""
    from ray import tune

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
    own_files = [SPEC_FILE, FINGERPRINT_FILE, provenance.PROVENANCE_FILE]
    if resume:
        tuner = tune.Tuner.restore(target, trainable=SweepTrial, resume_unfinished=True,
                                   resume_errored=True)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / SPEC_FILE).write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
        record_fingerprint(run_dir, spec.to_dict())
        tuner = tune.Tuner(
            SweepTrial,
            param_space=param_space(spec),
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
                # how often results reach object storage while the sweep runs
                sync_config=tune.SyncConfig(sync_period=SYNC_PERIOD_S),
                callbacks=callbacks(spec),
                verbose=1,
            ),
        )
    provenance.record(run_dir)
    if remote:
        storage.push(run_dir, target, own_files)
    log(f"# sweep {spec.experiment}: {len(spec.points())} trials -> {target}")
    with _checkpoint_on_interrupt(tuner, log):
        grid = tuner.fit()
    statuses = trial_statuses(target)
    if remote:
        storage.fetch(target, run_dir)
    results_csv, trials_csv = results.write_tables(run_dir, spec.axes, grid, statuses)
    if remote:
        storage.push(run_dir, target, [results.RESULTS_CSV, results.TRIALS_CSV])
        results_csv, trials_csv = (f"{target}/{results.RESULTS_CSV}",
                                   f"{target}/{results.TRIALS_CSV}")
        shutil.rmtree(run_dir, ignore_errors=True)
    errors = sum(1 for r in grid if r.error)
    unfinished = sum(1 for status in statuses.values() if status not in FINISHED)
    return {"run_dir": target, "experiment": spec.experiment, "trials": len(grid),
            "errored": errors, "interrupted": unfinished, "results_csv": str(results_csv),
            "trials_csv": str(trials_csv)}


SYNC_PERIOD_S = 60
INTERRUPT_TIMEOUT_S = 120.0


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

    def request(self) -> None:
        self.requested_at = time.monotonic()
        self.log("interrupted: each running trial checkpoints at the end of its iteration, "
                 "then the sweep stops (Ctrl-C again to stop now, from the last checkpoints)")

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
    """Within (the main thread only): Ctrl-C as `CheckpointOnInterrupt` says; a second one
    stops Tune at once, a third raises KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    interrupt = CheckpointOnInterrupt(log)
    run_config = tuner._local_tuner.get_run_config()
    run_config.callbacks = [*(run_config.callbacks or []), interrupt]
    count = 0

    def on_interrupt(signum, frame):
        nonlocal count
        count += 1
        if count == 1:
            interrupt.request()
        elif count == 2 and not interrupt.stopping:
            interrupt.stop()
        else:
            raise KeyboardInterrupt

    before = signal.signal(signal.SIGINT, on_interrupt)
    disabled = os.environ.get(TUNE_SIGINT)
    os.environ[TUNE_SIGINT] = "1"  # Tune leaves SIGINT to us (and keeps SIGUSR1)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
        if disabled is None:
            os.environ.pop(TUNE_SIGINT, None)
        else:
            os.environ[TUNE_SIGINT] = disabled


TUNE_SIGINT = "TUNE_DISABLE_SIGINT_HANDLER"
SHOULD_CHECKPOINT = "should_checkpoint"  # ray.tune.result.SHOULD_CHECKPOINT
FINISHED = ("TERMINATED", "ERROR")


def trial_statuses(run_dir) -> dict[str, str]:
    """Trial directory name -> its status in the experiment state Tune saved last (Tune's
    public reader): TERMINATED, ERROR, or PENDING/RUNNING/PAUSED in an interrupted sweep."""
    from ray.tune import ExperimentAnalysis

    tune_logger = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = tune_logger.level
    tune_logger.setLevel(logging.ERROR)  # it warns about trials that never reported
    try:
        analysis = ExperimentAnalysis(str(run_dir))
    finally:
        tune_logger.setLevel(level)
    return {posixpath.basename(trial.path.rstrip("/")): trial.status
            for trial in analysis.trials}
