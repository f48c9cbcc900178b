"""Fixtures of the integration tier that several modules share."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cli_helpers import FAKE_KEY, ROOT, cli_env


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory):
    """tune_specs/smoke.yaml (2 algorithms x 2 N x 2 seeds) swept once by the CLI on a local
    Ray with a (fake) W&B key set, as a user runs it: its run dir and the finished process.
    The CLI also writes RUN_DIR/report/ at the end."""
    run_dir = tmp_path_factory.mktemp("smoke") / "smoke"
    done = subprocess.run(
        [sys.executable, "-m", "marlscale.cli", "sweep", str(ROOT / "tune_specs" / "smoke.yaml"),
         "--run-dir", str(run_dir), "--num-cpus", "2"],
        env=cli_env(WANDB_API_KEY=FAKE_KEY), capture_output=True, text=True, timeout=900,
        cwd=ROOT)
    return run_dir, done
