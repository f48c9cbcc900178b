"""Running `marlscale` as a user's shell does (tests/ is on sys.path: pytest puts the folder
of the root conftest.py there)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # W&B keys are 40 hex characters


def cli_env(**extra) -> dict[str, str]:
    """The environment of a user's shell: the venv's bin first on PATH, no RAY_ADDRESS."""
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
               RAY_DEDUP_LOGS="0", **extra)
    env.pop("RAY_ADDRESS", None)
    return env
