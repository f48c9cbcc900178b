"""Failing well, run the way users run the CLI (a subprocess on a local Ray it starts):

* SIGTERM (and Ctrl-C, SIGINT, taken alike: tests/unit/test_interrupts.py) stops `train` at
  the end of its iteration with a checkpoint and the result files, exit 143 and the resume
  command; `--resume` then continues, alone: a second one at once is refused. A sweep and a
  league stop too, and the sweep's `--resume` finishes every trial.
* SIGKILL of the driver leaves no Ray process of its local Ray behind, and every one of those
  processes listens on 127.0.0.1 only (the dashboard included, when asked for).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from cli_helpers import ROOT, cli_command, cli_env, marlscale
from marlscale import runlock
from marlscale.sweeps.results import read_results
from test_sweeps import SMOKE, saved_state, small_spec, stop_group, trials
from test_train_resume import TINY

pytestmark = pytest.mark.integration

TRAIN = {**TINY, "stop": {"iterations": 100_000}, "wandb": {"mode": "disabled"}}  # until stopped


def train_cmd(*args) -> list[str]:
    return cli_command("train", *args)


def metric_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().split("\n")[:-1] if path.is_file() else []
    return [json.loads(line) for line in lines if line.strip()]


def wait_for(condition, process: subprocess.Popen, timeout_s: float = 240, what: str = ""):
    deadline = time.time() + timeout_s
    while not condition():
        assert process.poll() is None, f"the command ended before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_sigterm_stops_train_with_a_checkpoint_and_resume_continues_alone(tmp_path):
    """SIGTERM (Kubernetes, SLURM, `ray job stop`), taken as Ctrl-C is (`on_interrupt` handles
    both alike: tests/unit/test_interrupts.py). While the resume runs, a second `--resume` of
    the same run is refused: it would interleave its rows."""
    signum = signal.SIGTERM
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(TRAIN))
    run_dir = tmp_path / "run"
    driver = subprocess.Popen(train_cmd(spec, "--run-dir", run_dir, "--num-cpus", "1"),
                              env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True, cwd=ROOT)
    try:
        wait_for(lambda: len(metric_rows(run_dir)) >= 2, driver, what="two iterations")
        driver.send_signal(signum)  # SIGINT: what Ctrl-C sends the foreground process
        out, err = driver.communicate(timeout=120)
    finally:
        stop_group(driver)
    assert driver.returncode == 128 + signum, err[-3000:]  # 130, 143
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "SIGTERM received" not in err  # Ray's C++ handler's stack dump
    assert f"interrupted by {signum.name} at iteration" in err
    assert f"continue with: marlscale train --resume {run_dir}" in err
    rows = metric_rows(run_dir)
    last = rows[-1]["training_iteration"]
    assert [path.name for path in (run_dir / "checkpoints").iterdir()] == [f"iter_{last:06d}"]
    assert len(pd.read_csv(run_dir / "metrics.csv")) == len(rows) == last
    result = json.loads((run_dir / "result.json").read_text())
    assert result["interrupted"] and result["last"]["training_iteration"] == last
    assert result["signal"] == signum.name

    resume = train_cmd("--resume", run_dir, "--iterations", last + 2, "--num-cpus", "1",
                       "--no-report")
    first = subprocess.Popen(resume, env=cli_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=ROOT)
    try:
        wait_for(lambda: (runlock.holder(run_dir) or {}).get("pid") == first.pid, first,
                 what="the resume to take the run's lock")
        second = subprocess.run(resume, env=cli_env(), capture_output=True, text=True,
                                timeout=120, cwd=ROOT)
        out, err = first.communicate(timeout=300)
    finally:
        stop_group(first)
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr[-3000:]
    assert f"is in use by pid {first.pid} on host" in second.stderr
    assert first.returncode == 0, err[-3000:]
    assert [r["training_iteration"] for r in metric_rows(run_dir)] == list(range(1, last + 3))
    assert not json.loads((run_dir / "result.json").read_text())["interrupted"]
    assert runlock.holder(run_dir) is None  # released


def interrupt_sweep(tmp_path: Path, command: str, signum: int, stop: int):
    """Start a `command` (sweep or league) of two one-CPU QMIX trials, send `signum` once a
    trial is three iterations in, and check that it stopped as an interrupted run should:
    exit 128 + signum, the resume command, every trial that had started checkpointed by the
    interrupt (no periodic checkpoints: checkpoint_every is past the stop) and not finished.
    Returns the run dir and each trial's iteration at the signal."""
    spec = small_spec(tmp_path, command, grid={"algorithm": ["qmix"], "n_agents": [3],
                                               "seed": [0, 1]},
                      stop={"iterations": stop}, checkpoint_every=1000, max_concurrent_trials=2,
                      wandb={"mode": "offline"},  # its logging actors must not hold the exit
                      training={**yaml.safe_load(SMOKE.read_text())["training"],
                                "eval_interval": 0})  # no greedy episode per iteration
    if command == "league":  # its one trial: QMIX against MFQ in battle
        values = yaml.safe_load((ROOT / "tune_specs" / "league" / "smoke.yaml").read_text())
        spec.write_text(yaml.safe_dump({**values, "stop": {"iterations": stop},
                                        "checkpoint_every": 1000, "wandb": {"mode": "offline"}}))
    run_dir = tmp_path / command
    cmd = cli_command(command, spec, "--run-dir", run_dir, "--num-cpus", "2")
    driver = subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True, cwd=ROOT)
    try:
        wait_for(lambda: any(len(rows) >= 3 for rows in trials(run_dir).values()), driver,
                 what="a trial three iterations in")
        at_signal = {name: rows[-1]["training_iteration"]
                     for name, rows in trials(run_dir).items() if rows}
        driver.send_signal(signum)
        out, err = driver.communicate(timeout=180)
    finally:
        stop_group(driver)
    assert driver.returncode == 128 + signum, err[-3000:]
    assert f"interrupted by {signal.Signals(signum).name} with" in err
    assert f"marlscale {command} --resume {run_dir}" in err and "Traceback" not in err
    assert "SIGTERM received" not in err  # Ray's C++ handler's stack dump
    assert "running trial(s) checkpointed; stopping the sweep" in out + err
    state = saved_state(run_dir)  # what --resume reads: status and last checkpoint per trial
    assert all(status != "TERMINATED" for status, _ in state.values()), state
    assert all(state[name][1] is not None for name in at_signal), state  # the interrupt's
    assert "TERMINATED" not in pd.read_csv(run_dir / "trials.csv")["status"].tolist()
    for name in at_signal:  # each trial's W&B run was closed, not left to Ray's 30-min wait
        assert "finishing run" in (run_dir / name / "wandb" / "debug.log").read_text(), name
    assert runlock.holder(run_dir) is None  # the lock was released
    return run_dir, at_signal


def test_sigterm_checkpoints_a_leagues_running_trial(tmp_path):
    run_dir, _ = interrupt_sweep(tmp_path, "league", signal.SIGTERM, stop=120)
    assert not (run_dir / "league.csv").exists()  # cross-play waits for every policy


def test_sigterm_checkpoints_a_sweeps_running_trials_and_resume_finishes_every_trial(tmp_path):
    """What a trial has trained when SIGTERM comes is kept only by the checkpoint the
    interrupt asks for, and `--resume` goes on from it."""
    stop = 120  # long enough that no trial can finish before the interrupt takes effect
    run_dir, at_signal = interrupt_sweep(tmp_path, "sweep", signal.SIGTERM, stop)

    done = marlscale("sweep", "--resume", run_dir, "--num-cpus", "2", "--no-report")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = pd.read_csv(run_dir / "trials.csv")
    assert summary["status"].tolist() == ["TERMINATED"] * 2
    assert summary["iterations"].tolist() == [stop] * 2
    results = pd.read_csv(run_dir / "results.csv")  # one row per iteration, none lost
    for _, rows in results.groupby("trial"):
        assert rows["training_iteration"].tolist() == list(range(1, stop + 1))
    for name, iteration in at_signal.items():  # resumed where Ctrl-C found it, or later
        (row,) = [r for r in read_results(run_dir / name) if r["iterations_since_restore"] == 1
                  and r["training_iteration"] > 1]
        assert row["training_iteration"] > iteration, (name, row["training_iteration"],
                                                       iteration)


# ---- SIGKILL and listeners --------------------------------------------------------------------
def processes() -> dict[int, tuple[int, int, str, str]]:
    """pid -> (ppid, pgid, state, command line) of every process, from `ps`."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,pgid=,stat=,args="],
                         capture_output=True, text=True, check=True).stdout
    table = {}
    for line in out.splitlines():
        pid, ppid, pgid, stat, *args = line.split(None, 4)
        table[int(pid)] = (int(ppid), int(pgid), stat, args[0] if args else "")
    return table


def local_ray_of(driver_pid: int) -> set[int]:
    """The driver's local Ray: the process group of Ray's reaper (the driver's child), and
    every descendant of those processes (workers lead process groups of their own)."""
    table = processes()
    (reaper,) = [pid for pid, (ppid, _, _, args) in table.items()
                 if ppid == driver_pid and "ray_process_reaper" in args]
    members = {pid for pid, (_, pgid, _, _) in table.items() if pgid == reaper}
    while True:
        more = {pid for pid, (ppid, _, _, _) in table.items() if ppid in members} - members
        if not more:
            return members
        members |= more


def alive(pids: set[int]) -> dict[int, str]:
    """Those of `pids` still running (zombies, already dead, are left out), with their whole
    command lines: a checkout's path can be long, so no prefix of them is enough to match."""
    table = processes()
    return {pid: table[pid][3] for pid in pids if pid in table
            and not table[pid][2].startswith("Z")}


def short(commands: dict[int, str]) -> list[str]:
    """Each command line's program (its path's last part) and a little of its arguments."""
    return [" ".join([Path(args.split(" ", 1)[0]).name, *args.split(" ", 1)[1:]])[:100]
            for args in commands.values()]


def listening(pids: set[int]) -> dict[str, int]:
    """'address:port' -> pid of every TCP socket in LISTEN state the processes hold (from
    /proc: their socket inodes, looked up in /proc/net/tcp and tcp6)."""
    inodes = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes[link[8:-1]] = pid
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    found = {}
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            hexip, hexport = local.split(":")
            raw = bytes.fromhex(hexip)
            # /proc prints the address as 32-bit words in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found[f"{socket.inet_ntop(family, raw)}:{int(hexport, 16)}"] = inodes[inode]
    return found


def test_sigkill_of_the_driver_leaves_no_ray_process_and_ray_listens_on_loopback_only(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(TRAIN))
    run_dir = tmp_path / "run"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dashboard_port = probe.getsockname()[1]
    driver = subprocess.Popen(
        train_cmd(spec, "--run-dir", run_dir, "--num-cpus", "1", "--dashboard",
                  "--dashboard-port", dashboard_port),
        env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True, cwd=ROOT)
    try:
        wait_for(lambda: len(metric_rows(run_dir)) >= 1, driver, what="a first iteration")
        ray_pids = local_ray_of(driver.pid)
        running = alive(ray_pids)
        names = " ".join(running.values())
        for expected in ("gcs_server", "raylet", "DashboardAgent", "RuntimeEnv", "dashboard"):
            assert expected in names, (expected, short(running))
        sockets = listening(ray_pids)
        assert f"127.0.0.1:{dashboard_port}" in sockets, sockets
        elsewhere = [address for address in sockets
                     if not address.startswith(("127.0.0.1:", "::ffff:127.0.0.1:"))]
        assert not elsewhere, elsewhere
        driver.kill()  # SIGKILL: no handler, no atexit
        driver.wait()
        deadline = time.time() + 30
        while alive(ray_pids) and time.time() < deadline:
            time.sleep(0.5)
        assert not alive(ray_pids), short(alive(ray_pids))
    finally:
        stop_group(driver)
        for pid in alive(locals().get("ray_pids", set())):
            os.kill(pid, signal.SIGKILL)


# ---- resources no node can hold, on a cluster --------------------------------------------------
def test_a_cluster_without_a_node_for_a_trials_gpus_warns_then_fails_clearly(ray_local,
                                                                             tmp_path):
    """The session's Ray stands for a cluster (2 CPUs, no GPU): a sweep asking 1 GPU per trial
    is warned about at once and refused after the wait, instead of PENDING forever."""
    from marlscale.runspec import SweepSpec
    from marlscale.sweeps import placement, runner

    spec = SweepSpec.load(small_spec(tmp_path, "gpu", resources={"num_gpus": 1},
                                     wandb={"mode": "disabled"}))
    lines = []
    start = time.monotonic()
    with pytest.raises(ValueError) as error:
        runner.run(spec, tmp_path / "run", log=lines.append, resource_wait_s=2)
    assert time.monotonic() - start < 30
    assert lines[0].startswith("marlscale: warning: no node of the cluster can hold a trial's "
                               "CPU=1, GPU=1 (nodes: CPU=2") and "waiting up to 2 s" in lines[0]
    assert "resources=CPU=1, GPU=1 per trial is invalid on this cluster: no node can hold it " \
           "after 2 s" in str(error.value)
    assert not (tmp_path / "run").exists()  # nothing written
    placement.wait_until_fits(SweepSpec.load(small_spec(tmp_path, "cpu")), 0, lines.append)
    assert len(lines) == 1  # a sweep that fits goes on without a word
