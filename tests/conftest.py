"""Shared fixtures and helpers for the test tiers (unit: no Ray; integration: local Ray)."""

from __future__ import annotations

import numpy as np
import pytest
from cli_helpers import FAKE_KEY, ROOT, marlscale
from marlscale.envs import MagentTeamEnv
from marlscale.runspec import TrainSpec
from marlscale.train import run as train_run


def random_actions(env: MagentTeamEnv, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One uniformly random MultiDiscrete action per learning team."""
    return {name: rng.integers(0, env.action_spaces[name].nvec) for name in env.possible_agents}


def record_ray_starts(monkeypatch) -> list[dict]:
    """Record, instead of making, the calls that would start or join a Ray (the CLI's
    `cluster.connect`, and `ray.init` itself): in-process CLI calls then run on the session's
    Ray, and a test can tell whether a failing call got as far as starting Ray."""
    import contextlib

    import ray
    from marlscale import cluster

    started: list[dict] = []

    @contextlib.contextmanager
    def connect(address=None, num_cpus=None, **kwargs):
        started.append({"address": address, "num_cpus": num_cpus, **kwargs})
        yield address

    monkeypatch.setattr(cluster, "connect", connect)
    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: started.append(kwargs))
    return started


@pytest.fixture
def cli_in_process(monkeypatch, capsys):
    """`cli(*args)`: run `marlscale` in-process; returns code (the exit status a shell sees:
    argparse's errors exit through SystemExit), out, err and whether it would have started
    or joined a Ray (`record_ray_starts`: a call that gets that far runs on the session's
    Ray, if a test started one)."""
    import types

    from marlscale.cli import main

    started = record_ray_starts(monkeypatch)

    def call(*args):
        started.clear()
        try:
            code = main([str(arg) for arg in args])
        except SystemExit as exit_:
            code = exit_.code
        out, err = capsys.readouterr()
        return types.SimpleNamespace(code=code, out=out, err=err, ray_started=bool(started))

    return call


def ray_sessions() -> list[str]:
    """Ray's session folders on this machine (its logs live there), marlscale's local Rays'
    included (marlscale/cluster.py)."""
    import glob

    return sorted(glob.glob("/tmp/ray/session_2*") +
                  glob.glob("/tmp/ray/marlscale-*/ray/session_2*"))


@pytest.fixture(scope="session")
def ray_local():
    """A local 2-CPU Ray, started the way a test machine can: once per session."""
    import ray

    # address="local": a new Ray, never another one running on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory):
    """tune_specs/smoke.yaml (2 algorithms x 2 N x 2 seeds) swept once by the CLI on a local
    Ray with a (fake) W&B key set, as a user runs it: its run dir and the finished process.
    The CLI also writes RUN_DIR/report/ at the end."""
    run_dir = tmp_path_factory.mktemp("smoke") / "smoke"
    # Ray's session folders that exist before: the test then greps only the sweep's own.
    (run_dir.parent / "sessions_before.txt").write_text("\n".join(ray_sessions()))
    # its local Ray's logs kept (removed at the end otherwise), for the test to grep
    done = marlscale("sweep", ROOT / "tune_specs" / "smoke.yaml", "--run-dir", run_dir,
                     "--num-cpus", "2", timeout=900, WANDB_API_KEY=FAKE_KEY,
                     MARLSCALE_KEEP_RAY_LOGS="1")
    return run_dir, done


# ---- trained checkpoints shared by the integration tests (evaluation, export) ----------------
TINY = {"rollout_length": 30, "learning_starts": 30, "batch_size": 8, "hidden": 32,
        "replay_capacity": 500}


def _train(path, game, n_agents, iterations=2, env_config=None, **training):
    spec = TrainSpec.from_dict({
        "env": game, "env_config": {"n_agents": n_agents, "max_cycles": 30, **(env_config or {})},
        "training": {**TINY, **training}, "stop": {"iterations": iterations}, "seed": 1,
        "eval_episodes": 0,
    })
    train_run(spec, path, log=lambda line: None)
    return path


@pytest.fixture(scope="session")
def trained(ray_local, tmp_path_factory):
    """Real checkpoints, trained once per session (evaluation and export tests share them):
    head-to-head battle 4 v 4 (qmix red, mfq blue), battle 6 v 6 against random, pursuit 4
    predators, and an incremental-learning battle run at stage 0 (1 of 4)."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        "h2h": _train(root / "h2h", "battle", 4, env_config={"opponent": "learned"},
                      algorithm="qmix", opponent_algorithm="mfq"),
        "battle6": _train(root / "battle6", "battle", 6, algorithm="vdn"),
        "pursuit": _train(root / "pursuit", "adversarial_pursuit", 4, algorithm="iql",
                          env_config={"map_size": 14}),
        "incremental": _train(root / "incremental", "battle", 4, algorithm="qmix",
                              curriculum={"schedule": "linear", "start": 1, "every": 100}),
    }


# ---- trained runs shared by the learning tests: each trained once per session, on disk (a
# `marlscale train` run directory with its checkpoints), so that several tests read one run --
@pytest.fixture(scope="session")
def pursuit_run(ray_local, tmp_path_factory):
    """tune_specs/train/qmix_pursuit_small.yaml, `make run`'s: QMIX, 4 predators against 8
    random prey on an 18x18 map, 8,000 env steps. (run directory, final summary)."""
    spec = TrainSpec.load(ROOT / "tune_specs" / "train" / "qmix_pursuit_small.yaml")
    run_dir = tmp_path_factory.mktemp("learning") / "pursuit_n4"
    return run_dir, train_run(spec, run_dir, log=lambda line: None)


@pytest.fixture(scope="session")
def battle_run(ray_local, tmp_path_factory):
    """QMIX, battle 12 v 12 against a random blue team, 100-step episodes, 4,000 env steps
    (the pursuit spec's training settings, half as many updates per env step). (run
    directory, final summary: its greedy evaluation over 5 episodes)."""
    pursuit = TrainSpec.load(ROOT / "tune_specs" / "train" / "qmix_pursuit_small.yaml")
    spec = TrainSpec.from_dict({
        "env": "battle", "env_config": {"n_agents": 12, "max_cycles": 100},
        "training": {**pursuit.training, "updates_per_env_step": 0.5},
        "stop": {"iterations": 40}, "seed": 1,
    })
    run_dir = tmp_path_factory.mktemp("learning") / "battle_n12"
    return run_dir, train_run(spec, run_dir, log=lambda line: None)
