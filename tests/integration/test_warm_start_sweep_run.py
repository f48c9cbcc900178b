"""Transfer as a sweep arm (issue #28), run as a user runs it: the session's smoke sweep
(qmix and mfqmix at N = 3 and 5, seeds 0 and 1, 3 iterations) is the source of a sweep at
N = 6 whose spec says `warm_start: {from: SMOKE_RUN, match: [algorithm, seed], where:
{n_agents: 5}}`. It is interrupted after its first iteration and resumed with the source gone."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess

import pandas as pd
import pytest
import torch
import yaml
from cli_helpers import ROOT, cli_env, marlscale
from conftest import record_ray_starts
from marlscale.algorithms import checkpoints
from marlscale.cli import main
from marlscale.sweeps.results import read_results
from test_failing_well import wait_for
from test_sweeps import SMOKE, stop_group, sweep_cmd, trials

pytestmark = pytest.mark.integration


STOP = 200
"""Iterations of the transfer sweep: enough that Ctrl-C stops it before its end (an iteration
without updates or evaluation takes a fraction of a second, and a busy driver may see the
signal dozens of iterations late)."""
NO_UPDATES = {"replay_capacity": 50 * STOP, "learning_starts": 50 * STOP, "eval_interval": 0}
"""No update before the replay holds the env steps of all STOP iterations (50 each): the
weights the trial checkpoints when interrupted are the ones it started with."""


def transfer_spec(tmp_path, source, name="transfer", training=None, **warm_start):
    """smoke.yaml's settings at N = 6, QMIX, seed 0, warm-started from `source`'s N = 5."""
    values = yaml.safe_load(SMOKE.read_text())
    values.update(experiment=name, grid={"algorithm": ["qmix"], "n_agents": [6], "seed": [0]},
                  stop={"iterations": STOP}, checkpoint_every=1000, wandb={"mode": "disabled"},
                  warm_start={"from": str(source), "match": ["algorithm", "seed"],
                              "where": {"n_agents": 5}, **warm_start})
    values["training"].update(**NO_UPDATES, **(training or {}))
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def predator(checkpoint):
    """The predator team's module of a checkpoint (or trial directory: its last one)."""
    return checkpoints.load(checkpoint).policies["predator"].load_module()


def shared_weights(module) -> dict[str, torch.Tensor]:
    """The agent network's weights that do not depend on N (all but the slot embeddings)."""
    return {k: v for k, v in module.agent.state_dict().items() if "embedding" not in k}


def test_a_warm_started_sweep_starts_from_its_source_trials_and_resumes_without_them(
        smoke_sweep, tmp_path, capsys, monkeypatch):
    smoke_dir, done = smoke_sweep
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    source = tmp_path / "smoke"  # a copy: it is removed before the resume below
    shutil.copytree(smoke_dir, source, ignore=shutil.ignore_patterns("wandb", "report"))
    (source_trial,) = source.glob("qmix_N5_seed0_*")
    source_checkpoint = checkpoints.load(source_trial).path

    # Refused before Ray starts, one line each, nothing written: two source trials per trial
    # (N = 3 and 5), and a network of another size than the source's.
    started = record_ray_starts(monkeypatch)
    for spec, expected in [
        (transfer_spec(tmp_path, source, "ambiguous", where={}),
         "warm_start: trial qmix_N6_seed0 has 2 source trials (qmix_N3_seed0_"),
        (transfer_spec(tmp_path, source, "wider", training={"hidden": 64}),
         f"warm_start: trial qmix_N6_seed0 from source trial {source_trial.name}: checkpoint "
         f"{str(source_checkpoint)!r}: its predator module is qmix, N=5, hidden=32,"),
    ]:
        run_dir = tmp_path / spec.stem
        assert main(["sweep", str(spec), "--run-dir", str(run_dir)]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1 and "Traceback" not in err, err
        assert not run_dir.exists() and not started
    assert "the run asks for qmix, N=6, hidden=64" in err
    monkeypatch.undo()

    # The sweep, interrupted (Ctrl-C) once its trial has a result: it checkpoints and stops.
    run_dir = tmp_path / "transfer"
    driver = subprocess.Popen(
        sweep_cmd(str(transfer_spec(tmp_path, source)), "--run-dir", str(run_dir), "--num-cpus",
                  "2", "--no-report"), env=cli_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=ROOT)
    try:
        wait_for(lambda: any(trials(run_dir).values()), driver, what="the trial's first result")
        driver.send_signal(signal.SIGINT)
        out, err = driver.communicate(timeout=180)
    finally:
        stop_group(driver)
    assert driver.returncode == 128 + signal.SIGINT, out[-3000:] + err[-3000:]
    (trial_dir,) = run_dir.glob("qmix_N6_seed0_*")
    params = json.loads((trial_dir / "params.json").read_text())
    assert params["warm_start"]["trial"] == source_trial.name
    assert params["warm_start"]["checkpoint"] == str(source_checkpoint)

    # It started from the source's final weights: the shared network as trained, the 5 trained
    # slot embeddings kept and the new 6th at their mean. (Training changed those weights:
    # the source's earlier checkpoint differs, so a trial that started afresh would not match.)
    mine, theirs = predator(trial_dir), predator(source_checkpoint)
    earlier = predator(sorted(source_trial.glob("checkpoint_*"))[0])
    assert mine.n_agents == 6 and theirs.n_agents == 5
    for name, weight in shared_weights(theirs).items():
        assert torch.equal(shared_weights(mine)[name], weight), name
    assert any(not torch.equal(shared_weights(earlier)[n], w)
               for n, w in shared_weights(theirs).items())
    slots, trained = mine.agent.embedding.weight, theirs.agent.embedding.weight
    assert torch.equal(slots[:5], trained)
    assert torch.allclose(slots[5], trained.mean(0))

    # Resumed with the source gone: the trial goes on from its own checkpoint.
    shutil.rmtree(source)
    done = marlscale("sweep", "--resume", run_dir, "--num-cpus", "2", "--no-report", timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = read_results(trial_dir)
    iterations = [r["training_iteration"] for r in rows]
    assert iterations[-1] == STOP
    restarts = [r["training_iteration"] for r in rows if r["iterations_since_restore"] == 1]
    assert restarts[0] == 1 and len(restarts) == 2 and restarts[1] > 1, iterations

    # The source's env steps count in the arm's budget, in every row of both tables.
    source_steps = pd.read_csv(smoke_dir / "results.csv").query(
        f"trial == '{source_trial.name}'")["env_steps_sampled_lifetime"].max()
    assert source_steps > 0 and params["warm_start"]["env_steps"] == source_steps
    results = pd.read_csv(run_dir / "results.csv")
    assert results["training_iteration"].tolist() == list(range(1, STOP + 1))
    assert (results["warm_start_env_steps"] == source_steps).all()
    assert (results["total_env_steps"]
            == results["env_steps_sampled_lifetime"] + source_steps).all()
    (summary,) = pd.read_csv(run_dir / "trials.csv").to_dict("records")
    assert summary["status"] == "TERMINATED" and summary["warm_start_env_steps"] == source_steps
    assert summary["total_env_steps"] == summary["env_steps"] + source_steps
