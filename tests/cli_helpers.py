"""Running `marlscale` as a user's shell does (tests/ is on sys.path: pytest puts the folder
of the root conftest.py there)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # W&B keys are 40 hex characters


def cli_env(*, without_wandb: bool = False, **extra) -> dict[str, str]:
    """The environment of a user's shell: the venv's bin first on PATH, no RAY_ADDRESS (and,
    `without_wandb`, no W&B variable of the caller's: no API key, no WANDB_MODE), plus
    `extra`."""
    bin_dir = Path(sys.executable).parent
    env = {key: value for key, value in os.environ.items()
           if not (without_wandb and key.startswith("WANDB_"))}
    env.update(PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", RAY_DEDUP_LOGS="0",
               **extra)
    env.pop("RAY_ADDRESS", None)
    return env


def cli_command(*args) -> list[str]:
    """The command line of `marlscale ARGS...`: this venv's Python running the CLI module."""
    return [sys.executable, "-m", "marlscale.cli", *map(str, args)]


def marlscale(*args, timeout: float = 600, env: dict[str, str] | None = None,
              **extra_env) -> subprocess.CompletedProcess:
    """`marlscale ARGS...` run to its end in a process of its own, from the repository root,
    in `env` (by default a user's shell: `cli_env(**extra_env)`); output captured as text."""
    return subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=cli_env(**extra_env) if env is None else env)
