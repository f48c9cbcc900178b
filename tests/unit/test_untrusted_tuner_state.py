"""`sweep --resume`'s check of Tune's tuner.pkl reads the file without unpickling it (#25): a
crafted tuner.pkl that the resume refuses runs none of its code (no Ray: all before it)."""

import pickle

import pytest
from cli_helpers import ROOT
from conftest import record_ray_starts
from marlscale import runfiles
from marlscale.cli import main

SMOKE = ROOT / "tune_specs" / "smoke.yaml"


class Payload:
    """Unpickled, it creates `marker` (any code could run there)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def sweep_dir(tmp_path, tuner: bytes):
    """A sweep run directory as `marlscale sweep` leaves it when stopped, with `tuner`."""
    from marlscale.runspec import SweepSpec
    from marlscale.sweeps import resume

    run_dir = tmp_path / "sweep"
    run_dir.mkdir()
    (run_dir / runfiles.SWEEP_SPEC).write_text(SMOKE.read_text())
    resume.record_fingerprint(run_dir, SweepSpec.load(SMOKE).to_dict())
    (run_dir / runfiles.TUNER).write_bytes(tuner)
    return run_dir


@pytest.mark.parametrize("case", ["payload", "payload_in_a_dict", "cut_short"])
def test_a_crafted_tuner_pkl_is_refused_without_running_it(tmp_path, capsys, monkeypatch,
                                                           case):
    started = record_ray_starts(monkeypatch)
    marker = tmp_path / "marker"
    tuner = {"payload": pickle.dumps(Payload(marker)),
             "payload_in_a_dict": pickle.dumps({"_tune_config": Payload(marker)}),
             "cut_short": pickle.dumps({"_tune_config": list(range(50))})[:-3]}[case]
    run_dir = sweep_dir(tmp_path, tuner)
    path = run_dir / runfiles.TUNER
    if case == "payload_in_a_dict":  # Tune's shape: the check passes it; the spec is refused
        (run_dir / runfiles.SWEEP_SPEC).write_text(
            SMOKE.read_text().replace("experiment: smoke", "experiment: other"))
    assert main(["sweep", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    reason = {
        "payload": "TypeError: it starts with SHORT_BINUNICODE, not with a dict, as Tune's does",
        "cut_short": "UnpicklingError: pickle exhausted before seeing STOP",
    }.get(case)
    if reason:
        assert err.strip() == (
            f"marlscale: error: --resume {str(run_dir)!r}: {str(path)!r} is unreadable "
            f"({reason}); allowed: a run directory whose tuner.pkl Tune wrote (restore it from "
            "a copy, or start the sweep again in a new --run-dir)")
    else:
        assert "sweep.yaml has changed since the sweep started" in err
    assert len(err.strip().splitlines()) == 1 and not started
    assert not marker.exists()
    if case != "cut_short":  # the payload is live: unpickled, it does what it says
        pickle.loads(path.read_bytes())
        assert marker.exists()
