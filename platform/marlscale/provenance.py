"""Where and from what code a run was made: RUN_DIR/provenance.json, for the reports.

Written by `marlscale train` and `marlscale sweep` (and so `league`) when a run starts, and
extended (`resumed`) when it is resumed: the commit of the marlscale source (and whether it
had uncommitted changes), the versions that matter, the machine and the date. In an image
without git metadata, MARLSCALE_COMMIT (set at build time) names the commit.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

from marlscale import runfiles, specfile

COMMIT_ENV_VAR = "MARLSCALE_COMMIT"


def commit() -> dict[str, Any]:
    """The git commit of the marlscale source this process runs, and whether it was dirty."""
    source = Path(__file__).resolve().parent
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=source, capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()

        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": os.environ.get(COMMIT_ENV_VAR, "unknown"), "dirty": None}


def machine() -> dict[str, Any]:
    """This machine: host name, CPU model and count, GPU names (none on a CPU machine)."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus: list[str] = []
    try:
        import torch

        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - provenance must never fail a run
        pass
    return {"hostname": socket.gethostname(), "cpu": cpu, "cpus": os.cpu_count(), "gpus": gpus}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("marlscale", "ray", "torch", "magent2"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def read(path: str | os.PathLike) -> dict[str, Any]:
    """A provenance.json's contents; a ValueError naming the file when it is not the mapping
    `record` writes (cut short, hand-edited)."""
    values = specfile.read_json(path, "provenance record", ALLOWED)
    if not isinstance(values.get("resumed", []), list):
        raise ValueError(f"{path}: the provenance record's resumed="
                         f"{specfile.shown(values['resumed'])} is invalid; allowed: {ALLOWED}")
    return values


ALLOWED = ("the JSON mapping marlscale wrote (restore it from a copy, or delete the file: "
           "it only records where the run was made)")


def check(run_dir: str | os.PathLike) -> None:
    """Before a run is resumed (before Ray starts): RUN_DIR/provenance.json, if there is one,
    can be extended; a ValueError naming the file otherwise."""
    path = Path(run_dir) / runfiles.PROVENANCE
    if path.exists():
        read(path)


def record(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Write RUN_DIR/provenance.json for a run that starts now, or add this resume to it."""
    path = Path(run_dir) / runfiles.PROVENANCE
    here = {**commit(), "machine": machine(), "versions": versions(), "started": now()}
    if path.exists():
        values = read(path)
        values.setdefault("resumed", []).append(here)
    else:
        values = here
    path.write_text(json.dumps(values, indent=2))
    return values
