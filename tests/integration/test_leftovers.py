"""#25 on a real local Ray: a command leaves nothing behind (its Ray folder, a folder in
~/ray_results) and keeps what it makes private while it runs; on a cluster, CPUs it can never
have are refused after a bounded wait."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from cli_helpers import ROOT, cli_command, cli_env
from test_train_resume import TINY

pytestmark = pytest.mark.integration


def test_train_leaves_no_ray_folder_nor_ray_results_and_its_files_are_private(tmp_path):
    """HOME and Ray's temp root of the test's own (a short path: Ray's socket paths are
    limited to 107 characters)."""
    home = tmp_path / "home"
    home.mkdir()
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**TINY, "stop": {"iterations": 1},
                                "wandb": {"mode": "disabled"}}))
    ray_tmp = Path(tempfile.mkdtemp(prefix="ms-"))
    env = cli_env(HOME=str(home), RAY_TMPDIR=str(ray_tmp))
    for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        env.pop(key, None)
    driver = subprocess.Popen(cli_command("train", spec, "--run-dir", tmp_path / "run",
                                          "--num-cpus", "1", "--no-report"),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        modes, deadline = None, time.time() + 240
        while modes is None and driver.poll() is None and time.time() < deadline:
            sessions = list(ray_tmp.glob("ray/marlscale-*/ray/session_2*"))
            if sessions:  # the local Ray is up: its own folder is private
                folder = sessions[0].parents[1]
                modes = {"folder": stat.S_IMODE(folder.stat().st_mode),
                         "ray": stat.S_IMODE((folder / "ray").stat().st_mode)}
            time.sleep(0.1)
        out, err = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
        leftovers = sorted(str(p) for p in ray_tmp.glob("ray/*"))
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert driver.returncode == 0, err[-3000:]
    assert modes == {"folder": 0o700, "ray": 0o777}, modes  # Ray's 0777 inside our 0700
    assert leftovers == [], leftovers
    assert not (home / "ray_results").exists(), list((home / "ray_results").iterdir())
    assert stat.S_IMODE((home / ".ray").stat().st_mode) == 0o700
    assert stat.S_IMODE((home / ".ray" / "auth_token").stat().st_mode) == 0o600
    assert (tmp_path / "run" / "metrics.csv").is_file()


def test_on_a_cluster_cpus_it_can_never_have_are_refused_after_a_bounded_wait(ray_local):
    """The suite's 2-CPU Ray as the cluster: 2 one-CPU workers fit at once, 8 never do."""
    from marlscale import cluster

    lines = []
    cluster.wait_for_cpus(2, "--num-env-runners=2", wait_s=1, log=lines.append)
    assert lines == []
    start = time.perf_counter()
    with pytest.raises(ValueError) as error:
        cluster.wait_for_cpus(8, "--num-env-runners=8", wait_s=1, log=lines.append, poll_s=0.2)
    assert time.perf_counter() - start < 10
    assert lines == ["marlscale: warning: the cluster's nodes can hold 2 of the 8 one-CPU "
                     "workers of --num-env-runners=8 (nodes: CPU=2); waiting up to 1 s for "
                     "CPUs to join (an autoscaler may add them)"]
    assert str(error.value) == (
        "--num-env-runners=8 is invalid on this cluster: its nodes can hold 2 one-CPU worker(s) "
        "of the 8 asked for, after 1 s (nodes: CPU=2); allowed: at most 2, or a cluster with "
        "more CPUs (--resource-wait-s to wait longer)")
