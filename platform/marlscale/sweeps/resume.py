"""Resuming a sweep (`marlscale sweep --resume RUN_DIR`, and a league's): the checks made
before Ray starts (Tune's state readable, the spec unchanged since the sweep started: its
fingerprint), and the trials' statuses as Tune saved them."""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import tempfile
from pathlib import Path
from typing import Any

from marlscale import runfiles, storage
from marlscale.runspec.sweep import SweepSpec

FINISHED = ("TERMINATED", "ERROR")


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
    if not all((run_dir / name).is_file() for name in (runfiles.SWEEP_SPEC, runfiles.TUNER)):
        raise ValueError(f"--resume {str(run_dir)!r} is invalid; allowed: the run directory "
                         f"of a sweep started by `marlscale sweep` ({runfiles.SWEEP_SPEC} and "
                         f"{runfiles.TUNER})")
    check_tuner_state(run_dir)
    spec = SweepSpec.load(run_dir / runfiles.SWEEP_SPEC)
    check_unchanged(run_dir, spec.to_dict(), runfiles.SWEEP_SPEC)
    return spec


def check_tuner_state(run_dir: Path) -> None:
    """A clear error when Tune's tuner.pkl cannot be read (empty, cut short, not Tune's).

    Read without unpickling it (a pickle runs code when loaded; Tune unpickles it only once
    the resume is accepted): its opcodes are parsed (`pickletools.genops`, which executes
    nothing) to the final STOP, and the object it builds first must be a dict, Tune's."""
    import pickle
    import pickletools

    path = run_dir / runfiles.TUNER
    try:
        data = path.read_bytes()
        try:
            ops = [op.name for op, _, _ in pickletools.genops(data)]
        except ValueError as error:  # cut short, or not a pickle
            raise pickle.UnpicklingError(str(error)) from None
        if not ops or ops[-1] != "STOP":
            raise pickle.UnpicklingError("it does not end where a pickle ends")
        first = next((name for name in ops if name not in ("PROTO", "FRAME")), None)
        if first != "EMPTY_DICT":
            raise TypeError(f"it starts with {first}, not with a dict, as Tune's does")
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
    (run_dir / runfiles.FINGERPRINT).write_text(json.dumps(
        {"sha256": fingerprint(values), "spec": values}, indent=2, default=str))


def check_unchanged(run_dir: Path, values: dict[str, Any], spec_file: str) -> None:
    """Refuse to resume a sweep whose spec file differs from the one it started with (Tune
    would resume the old trials while the driver reads the new grid). A run directory from
    before fingerprints were kept has nothing to compare with and passes."""
    from marlscale import provenance, specfile

    provenance.check(run_dir)  # resuming extends it: a corrupt one is named before Ray
    path = run_dir / runfiles.FINGERPRINT
    if not path.is_file():
        return
    started = specfile.read_json(path, "spec fingerprint", "the JSON mapping of sha256 and "
                                 "spec `marlscale sweep` wrote (restore it from a copy)")
    if not isinstance(started.get("sha256"), str) or not isinstance(started.get("spec"), dict):
        raise ValueError(f"{path}: the spec fingerprint has no sha256 and spec; allowed: the "
                         "JSON mapping of sha256 and spec `marlscale sweep` wrote (restore it "
                         "from a copy)")
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
        f"in {runfiles.FINGERPRINT}), or start the new spec in a new --run-dir")


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
