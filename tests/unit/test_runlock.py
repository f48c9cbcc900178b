"""One process per run directory (marlscale/runlock.py): a second one is refused in one line
naming the holder's pid and host, before Ray starts; a lock left by a killed process is taken
over, and the message says whose it was. No Ray here: the holders are plain processes."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys

import pytest
import yaml
from cli_helpers import ROOT
from conftest import record_ray_starts
from marlscale import runfiles, runlock
from marlscale.cli import main

HOLD = """
import sys, time
from marlscale import runlock
with runlock.hold(sys.argv[1], "a test holder"):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def held(tmp_path):
    """A run directory whose lock another live process holds (yields its Popen)."""
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE,
                              text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield run_dir, holder
    finally:
        holder.kill()
        holder.wait()


def test_a_second_holder_is_refused_with_the_first_ones_pid_and_host(held):
    run_dir, holder = held
    with pytest.raises(runlock.RunDirInUse) as refused, runlock.hold(run_dir, "second"):
        pass
    message = str(refused.value)
    assert f"in use by pid {holder.pid} on host {socket.gethostname()!r} (a test holder)" \
        in message
    assert "one process per run directory" in message


def test_a_killed_holders_lock_is_taken_over_and_the_message_says_whose(held):
    run_dir, holder = held
    holder.send_signal(signal.SIGKILL)  # no chance to release: the lock file stays
    holder.wait()
    assert runlock.holder(run_dir)["pid"] == holder.pid
    said = []
    with runlock.hold(run_dir, "next", log=said.append):
        assert runlock.holder(run_dir)["pid"] != holder.pid
        assert (run_dir / runfiles.RUN_LOCK).stat().st_mode & 0o077 == 0  # private
    assert len(said) == 1 and "taking over the stale lock" in said[0]
    assert f"of pid {holder.pid} on host {socket.gethostname()!r}" in said[0]
    assert not (run_dir / runfiles.RUN_LOCK).exists()  # released cleanly: no file left
    with runlock.hold(run_dir, "again", log=said.append):
        pass
    assert len(said) == 1  # nothing stale after a clean release


@pytest.mark.parametrize("command", ["train", "sweep", "league"])
def test_the_cli_refuses_a_run_dir_another_process_holds_before_ray(command, held, tmp_path,
                                                                    monkeypatch, capsys):
    """A new run into a folder that a live process is filling (here: only its lock so far)."""
    run_dir, holder = held
    started = record_ray_starts(monkeypatch)
    spec = tmp_path / "spec.yaml"
    if command == "train":
        spec.write_text(yaml.safe_dump({"env": "adversarial_pursuit",
                                        "env_config": {"n_agents": 3, "map_size": 16}}))
    elif command == "sweep":
        spec.write_text(yaml.safe_dump({"experiment": "x", "game": "adversarial_pursuit",
                                        "grid": {"seed": [0]}, "stop": {"iterations": 1}}))
    else:
        spec.write_text(yaml.safe_dump({"experiment": "x", "n_agents": 3,
                                        "algorithms": ["qmix", "mfq"],
                                        "stop": {"iterations": 1}}))
    assert main([command, str(spec), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"is in use by pid {holder.pid} on host {socket.gethostname()!r}" in err
    assert started == []  # refused before Ray
    assert json.loads((run_dir / runfiles.RUN_LOCK).read_text())["pid"] == holder.pid
    assert [p.name for p in run_dir.iterdir()] == [runfiles.RUN_LOCK]  # nothing written
