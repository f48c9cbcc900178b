"""`marlscale sweep` end to end, run the way users run it: the CLI on a local Ray, killed and
resumed, with a trial's actor killed, and through `ray job submit` on a `ray start --head`."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from cli_helpers import FAKE_KEY, ROOT, cli_command, cli_env, marlscale
from conftest import ray_sessions
from marlscale.sweeps.results import read_results

pytestmark = pytest.mark.integration

SMOKE = ROOT / "tune_specs" / "smoke.yaml"
BIN = Path(sys.executable).parent


def sweep_cmd(*args) -> list[str]:
    return cli_command("sweep", *args)


def small_spec(tmp_path: Path, name: str, **changes) -> Path:
    values = yaml.safe_load(SMOKE.read_text())
    values.update(changes)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def trials(run_dir: Path) -> dict[str, list[dict]]:
    """Every trial's result rows so far (complete lines only: trials may be writing)."""
    return {p.parent.name: read_results(p.parent) for p in run_dir.glob("*/params.json")}


def check_smoke_results(run_dir: Path, algorithms=("mfqmix", "qmix"), sizes=(3, 5),
                        seeds=(0, 1)) -> None:
    """One trial per (algorithm, N, seed) of the grid (smoke.yaml's 2 x 2 x 2 by default),
    each with its 3 iterations of results."""
    grid = [(a, n, s) for a in algorithms for n in sizes for s in seeds]
    per_trial = trials(run_dir)
    assert len(per_trial) == len(grid)
    for name, rows in per_trial.items():
        assert [r["training_iteration"] for r in rows] == [1, 2, 3], name
    results = pd.read_csv(run_dir / "results.csv")  # the documented one-line load
    assert len(results) == 3 * len(grid)
    assert sorted(results.groupby(["algorithm", "n_agents", "seed"]).size().index) == grid
    assert {"curriculum/stage", "curriculum/n_active", "episodes/predator/return_per_agent",
            "env_steps_sampled_lifetime"} <= set(results.columns)
    summary = pd.read_csv(run_dir / "trials.csv")
    assert list(summary["status"]) == ["TERMINATED"] * len(grid)
    assert list(summary["iterations"]) == [3] * len(grid)


def check_wandb_offline(run_dir: Path) -> None:
    """One offline W&B run per trial, grouped experiment/algorithm/game/N, no API key."""
    for trial_dir in (p.parent for p in run_dir.glob("*/params.json")):
        params = json.loads((trial_dir / "params.json").read_text())
        runs = list((trial_dir / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(runs) == 1, trial_dir
        group = f"smoke/{params['algorithm']}/adversarial_pursuit/N{params['n_agents']}"
        assert group.encode() in runs[0].read_bytes()
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path


def test_smoke_sweep_on_a_local_ray_writes_results_and_offline_wandb(smoke_sweep):
    run_dir, done = smoke_sweep
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert FAKE_KEY not in done.stdout + done.stderr
    # Nor in Ray's own logs of the sweep's session (Ray's W&B callback used to put the key
    # into a runtime_env, which the runtime-env agent logs in plain text).
    before = set((run_dir.parent / "sessions_before.txt").read_text().split())
    sessions = [Path(s) for s in ray_sessions() if s not in before]
    assert sessions, "the sweep's Ray session folder was not found"
    logs = [p for s in sessions for p in s.rglob("*") if p.is_file() and not p.is_symlink()]
    assert any(p.name.startswith("runtime_env_agent") for p in logs)
    leaks = [p for p in logs if FAKE_KEY.encode() in p.read_bytes()]
    assert not leaks, leaks
    summary = json.loads(done.stdout[done.stdout.rindex("{\n"):done.stdout.rindex("}") + 1])
    assert summary["trials"] == 8 and summary["errored"] == 0
    check_smoke_results(run_dir)
    check_wandb_offline(run_dir)


def saved_state(run_dir: Path) -> dict[str, tuple[str, int | None]]:
    """What `--resume` reads: each trial's status and last checkpoint's index in the
    experiment state Tune has saved to the run dir (through Tune's public reader)."""
    from ray.tune import ExperimentAnalysis

    # it also reads each trial's results, which trials that have not started lack
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    if not list(run_dir.glob("experiment_state-*.json")):
        return {}
    try:
        analysis = ExperimentAnalysis(str(run_dir))
    except (OSError, ValueError):  # a state file being copied in
        return {}
    return {Path(t.path).name: (t.status, int(Path(t.checkpoint.path).name.split("_")[1])
                                if t.checkpoint else None) for t in analysis.trials}


def test_a_killed_driver_resumes_without_losing_or_rerunning_trials(tmp_path):
    stop = 12
    spec = small_spec(tmp_path, "resume", grid={"algorithm": ["qmix", "mfqmix"],
                                                "n_agents": [3], "seed": [0, 1]},
                      stop={"iterations": stop}, checkpoint_every=2, wandb={"mode": "disabled"})
    run_dir = tmp_path / "resume"
    driver = subprocess.Popen(sweep_cmd(str(spec), "--run-dir", str(run_dir), "--num-cpus", "2"),
                              env=cli_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True, cwd=ROOT)
    deadline = time.time() + 300
    try:  # until the saved state has a finished trial and an unfinished one past a checkpoint
        while time.time() < deadline:
            state = saved_state(run_dir)
            if (any(status == "TERMINATED" for status, _ in state.values())
                    and any(status != "TERMINATED" and index is not None
                            for status, index in state.values())):
                break
            assert driver.poll() is None, "the sweep finished before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail(f"no trial state to interrupt in time: {saved_state(run_dir)}")
    finally:
        stop_group(driver)  # the driver and its local Ray, at once
    state = saved_state(run_dir)  # Tune may have saved once more before it died
    before = {name: [r["training_iteration"] for r in rows]
              for name, rows in trials(run_dir).items()}

    done = marlscale("sweep", "--resume", run_dir, "--num-cpus", "2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    after = trials(run_dir)
    assert len(after) == 4  # no trial lost
    for name, rows in after.items():
        iterations = [r["training_iteration"] for r in rows]
        assert iterations[-1] == stop, (name, iterations)
        status, checkpoint = state.get(name, ("PENDING", None))
        if status == "TERMINATED":  # not re-run: not a single new result
            assert iterations == before[name], name
        elif checkpoint is not None:  # restarted from its checkpoint (or a later one), not anew
            restarts = [r["training_iteration"] for r in rows if r["iterations_since_restore"] == 1]
            assert len(restarts) == 2 and restarts[1] >= 2 * (checkpoint + 1) + 1, iterations
            assert restarts[1] % 2 == 1, iterations  # right after a checkpoint (every 2)
    results = pd.read_csv(run_dir / "results.csv")
    assert sorted(results.groupby("trial").size()) == [stop] * 4  # one row per iteration


def test_a_checkpoint_deleted_after_the_last_saved_state_is_refilled_from_the_next_one(tmp_path):
    """The state --resume reads can name a checkpoint Tune's num_to_keep has since deleted
    (the driver died between the two); the trial goes on from its next checkpoint."""
    import torch
    from marlscale.runspec.sweep import SweepSpec
    from marlscale.sweeps.runner import SPEC_KEY, SweepTrial
    from ray import tune

    spec = SweepSpec.load(small_spec(tmp_path, "refill", grid={"algorithm": ["qmix"],
                                                               "n_agents": [3], "seed": [0]}))
    config = {SPEC_KEY: spec.to_dict(), **spec.points()[0]}
    trial_dir = tmp_path / "trial"
    algo = SweepTrial(config=config)
    try:
        for index in range(3):  # iterations 1, 2, 3 -> checkpoint_000000..000002
            algo.train()
            algo.save_to_path(str(trial_dir / f"checkpoint_{index:06d}"))
            if index == 1:
                expected = {k: v.clone() for k, v in
                            algo.learner_module("predator").state_dict().items()}
    finally:
        algo.stop()
    shutil.rmtree(trial_dir / "checkpoint_000000")
    resumed = SweepTrial(config=config)
    try:
        resumed.restore(tune.Checkpoint.from_directory(str(trial_dir / "checkpoint_000000")))
        assert resumed.iteration == 2  # checkpoint_000001's, with its weights
        weights = resumed.learner_module("predator").state_dict()
        assert all(torch.equal(weights[k], v) for k, v in expected.items())
        assert resumed.train()["training_iteration"] == 3
    finally:
        resumed.stop()
    assert (trial_dir / "checkpoint_000000").is_dir()  # where Tune will look (and delete) next
    shutil.rmtree(trial_dir)  # nothing to refill from: Tune's own error stays
    fresh = SweepTrial(config=config)
    try:
        with pytest.raises(ValueError, match="does not exist"):
            fresh.restore(str(trial_dir / "checkpoint_000000"))
    finally:
        fresh.stop()


def actor_pids(name: str) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if handle.read().startswith(f"ray::{name}".encode()):
                    pids.append(int(pid))
        except OSError:
            continue
    return pids


def test_a_diverging_trial_ends_as_error_with_its_message_and_the_report_names_it(tmp_path):
    values = yaml.safe_load(SMOKE.read_text())
    spec = small_spec(tmp_path, "diverge", grid={"algorithm": ["qmix"], "n_agents": [3]},
                      training={**values["training"], "lr": 1e6, "mixer_lr": 1e6,
                                "updates_per_env_step": 0.5,
                                "eval_interval": 0},
                      max_failures=1, wandb={"mode": "disabled"})
    run_dir = tmp_path / "run"
    done = marlscale("sweep", spec, "--run-dir", run_dir, "--num-cpus", "2")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    (trial,) = pd.read_csv(run_dir / "trials.csv").to_dict("records")
    assert trial["status"] == "ERROR"
    assert re.search(r"(=(nan|inf)|q_abs_max=\S+) at iteration \d+ \(team predator, qmix\): "
                     r"training diverged\..* This is deterministic", trial["error"]), trial["error"]
    assert "Gradients" not in done.stdout + done.stderr  # RLlib's tensor dump never comes
    report = (run_dir / "report" / "report.md").read_text()
    assert "| failed: " in report and "training diverged" in report


def test_a_trial_whose_actor_dies_is_retried_from_its_checkpoint(tmp_path):
    spec = small_spec(tmp_path, "die", grid={"algorithm": ["qmix"], "n_agents": [3],
                                             "seed": [0]},
                      stop={"iterations": 8}, checkpoint_every=2, max_failures=1,
                      wandb={"mode": "disabled"})
    run_dir = tmp_path / "die"
    driver = subprocess.Popen(sweep_cmd(str(spec), "--run-dir", str(run_dir), "--num-cpus", "2"),
                              env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True, cwd=ROOT)
    try:
        deadline = time.time() + 300
        while not any(len(rows) >= 3 for rows in trials(run_dir).values()):
            assert time.time() < deadline and driver.poll() is None
            time.sleep(0.1)
        # The trial's own actor, by the pid its result rows carry (never another sweep's).
        (rows,) = [rows for rows in trials(run_dir).values() if len(rows) >= 3]
        victim = int(rows[-1]["pid"])
        assert victim in actor_pids("SweepTrial")
        os.kill(victim, signal.SIGKILL)  # the trial's Algorithm actor dies
        output, _ = driver.communicate(timeout=600)
    finally:
        stop_group(driver)
    assert driver.returncode == 0, output[-4000:]
    (rows,) = trials(run_dir).values()
    iterations = [r["training_iteration"] for r in rows]
    restarts = [r["training_iteration"] for r in rows if r["iterations_since_restore"] == 1]
    assert iterations[-1] == 8
    assert len(restarts) == 2 and restarts[1] in (3, 5, 7), iterations  # after a checkpoint
    assert pd.read_csv(run_dir / "trials.csv")["status"].tolist() == ["TERMINATED"]


def stop_group(process: subprocess.Popen) -> None:
    """SIGKILL a process started with start_new_session=True, with everything it started."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ray_job_submit_against_a_local_head_runs_a_sweep(tmp_path):
    """`ray start --head`, then `ray job submit --working-dir . -- marlscale sweep ...`, on
    smoke.yaml cut to one algorithm and N (2 trials): the whole grid is the smoke_sweep
    fixture's; this test is about the way the job gets to the cluster."""
    spec = yaml.safe_load((ROOT / "tune_specs" / "smoke.yaml").read_text())
    spec["grid"].update(algorithm=["mfqmix"], n_agents=[3])
    spec_path = tmp_path / "job-smoke.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    gcs, dashboard = free_port(), free_port()
    # Every port of its own: another Ray on this machine (the test session's) holds the
    # defaults, e.g. the dashboard agent's 52365, and the job server needs that agent.
    ports = [f"--{name}={free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "ray-client-server-port", "node-manager-port",
        "object-manager-port")]
    # Token auth, with a token of this test's own: Ray 2.60 turns auth on whenever a token
    # exists (a local ray.init() writes ~/.ray/auth_token), and then clients need it too.
    env = cli_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's unix socket paths
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         "--disable-usage-stats", f"--temp-dir={temp_dir}", *ports],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    run_dir = tmp_path / "job-smoke"
    try:
        deadline = time.time() + 180
        while subprocess.run([str(BIN / "ray"), "job", "list", "--address", address],
                             env=env, capture_output=True).returncode != 0:
            assert time.time() < deadline and head.poll() is None, "the head did not start"
            time.sleep(1)
        while True:
            done = subprocess.run(
                [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".",
                 "--", "marlscale", "sweep", str(spec_path), "--run-dir", str(run_dir)],
                env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
            # The job server answers before its agent is up; nothing was submitted yet then.
            if "No available agent to submit job" not in done.stderr or time.time() > deadline:
                break
            time.sleep(2)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        job_id = next(line.split("'")[1] for line in done.stdout.splitlines()
                      if "Job '" in line and "succeeded" in line)
        status = subprocess.run(  # the job's status as Ray's job SDK reports it
            [sys.executable, "-c", "import sys; from ray.job_submission import "
             "JobSubmissionClient as C; print(C(sys.argv[1]).get_job_status(sys.argv[2]).value)",
             address, job_id], env=env, capture_output=True, text=True)
        assert status.stdout.strip().splitlines()[-1] == "SUCCEEDED", status.stderr[-2000:]
    finally:
        stop_group(head)
        shutil.rmtree(temp_dir, ignore_errors=True)
    check_smoke_results(run_dir, algorithms=("mfqmix",), sizes=(3,))
