"""Shared fixtures and helpers for the test tiers (unit: no Ray; integration: local Ray)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import FAKE_KEY, ROOT, cli_env
from marlscale.envs import MagentTeamEnv


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
    """`cli(*args)`: run `marlscale` in-process; returns code, out, err and whether it would
    have started or joined a Ray (`record_ray_starts`: a call that gets that far runs on the
    session's Ray, if a test started one)."""
    import types

    from marlscale.cli import main

    started = record_ray_starts(monkeypatch)

    def call(*args):
        started.clear()
        code = main([str(arg) for arg in args])
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
    done = subprocess.run(
        [sys.executable, "-m", "marlscale.cli", "sweep", str(ROOT / "tune_specs" / "smoke.yaml"),
         "--run-dir", str(run_dir), "--num-cpus", "2"],
        # its local Ray's logs kept (removed at the end otherwise), for the test to grep
        env=cli_env(WANDB_API_KEY=FAKE_KEY, MARLSCALE_KEEP_RAY_LOGS="1"), capture_output=True,
        text=True, timeout=900,
        cwd=ROOT)
    return run_dir, done
