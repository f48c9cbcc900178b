"""#25, before Ray starts (no Ray here): requests a local Ray can never meet are refused, and
connections to something that is not Ray (a cluster address, a Ray Client address, an
object-store endpoint) end within a bounded time with one line naming the address."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest
from cli_helpers import ROOT, cli_env
from conftest import record_ray_starts
from marlscale import cluster, storage
from marlscale.cli import main

SPEC = ROOT / "tune_specs" / "smoke.yaml"
TRAIN = ROOT / "tune_specs" / "train" / "qmix_pursuit_small.yaml"


@pytest.fixture
def silent_server():
    """A TCP server on 127.0.0.1 that accepts every connection and never answers: its port."""
    server = socket.create_server(("127.0.0.1", 0))
    held = []

    def accept():
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:  # closed
                return

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for connection in held:
        connection.close()


# ---- 1. what a local Ray can never place ------------------------------------------------------
def league_spec(tmp_path, resources: str = "", evaluation: str = ""):
    path = tmp_path / "league.yaml"
    path.write_text("experiment: l\ngame: battle\nalgorithms: [qmix, mfq]\nn_agents: 4\n"
                    f"seeds: [0]\nstop: {{iterations: 1}}\n{resources}{evaluation}")
    return path


@pytest.mark.parametrize("command, expected", [
    (["train", str(TRAIN), "--num-env-runners", "8"],
     "--num-env-runners=8 is invalid: its EnvRunners (one CPU each) hold 8 CPUs at once and the "
     "local Ray has 2 (--num-cpus 2); allowed: at most 2 CPUs (or a larger --num-cpus, or a "
     "cluster: --address)"),
    (["train", str(TRAIN), "--num-env-runners", "3", "--num-cpus", "1"],
     "--num-env-runners=3 is invalid: its EnvRunners (one CPU each) hold 3 CPUs at once and the "
     "local Ray has 1 (--num-cpus 1)"),
    (["evaluate", "no/such/checkpoint", "--num-env-runners", "50"],
     "--num-env-runners=50 is invalid: its EnvRunners (one CPU each) hold 50 CPUs at once and "
     "the local Ray has 2 (--num-cpus 2)"),
    (["sweep", "{sweep}", "--num-cpus", "2"],
     "resources (num_cpus=1, num_env_runners=4) is invalid: each trial's process (num_cpus) and "
     "EnvRunners (one CPU each) hold 5 CPUs at once and the local Ray has 2 (--num-cpus 2)"),
    (["league", "{league}", "--num-cpus", "2"],
     "resources (num_cpus=2, num_env_runners=1) is invalid: each trial's process (num_cpus) and "
     "EnvRunners (one CPU each) hold 3 CPUs at once and the local Ray has 2 (--num-cpus 2)"),
    (["league", "{league_eval}", "--num-cpus", "2"],
     "evaluation.num_env_runners=9 is invalid: cross-play's EnvRunners (one CPU each) hold 9 "
     "CPUs at once and the local Ray has 2 (--num-cpus 2)"),
])
def test_what_a_local_ray_can_never_place_is_refused_before_ray_starts(command, expected,
                                                                       tmp_path, capsys,
                                                                       monkeypatch):
    started = record_ray_starts(monkeypatch)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(SPEC.read_text() + "\nresources: {num_cpus: 1, num_env_runners: 4}\n")
    names = {"sweep": sweep,
             "league": league_spec(tmp_path, "resources: {num_cpus: 2, num_env_runners: 1}\n"),
             "league_eval": league_spec(tmp_path / "..", evaluation="evaluation: "
                                        "{num_env_runners: 9}\n")}
    args = [arg.format(**names) for arg in command]
    if command[0] != "evaluate":
        args += ["--run-dir", str(tmp_path / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not started and not (tmp_path / "run").exists()


def test_a_local_ray_without_num_cpus_counts_this_machines_cpus(tmp_path, capsys, monkeypatch):
    from ray._private.utils import get_num_cpus

    started = record_ray_starts(monkeypatch)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    sweep = tmp_path / "sweep.yaml"
    many = get_num_cpus() + 1
    sweep.write_text(SPEC.read_text() + f"\nresources: {{num_cpus: {many}}}\n")
    assert main(["sweep", str(sweep), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert (f"hold {many} CPUs at once and the local Ray has {get_num_cpus()} (all of this "
            "machine's, as Ray counts them)") in err and not started


# ---- 2. addresses that accept TCP but are not Ray ---------------------------------------------
@pytest.mark.parametrize("scheme, what", [("", "a Ray cluster's GCS"),
                                          ("ray://", "a Ray Client server")])
def test_an_address_that_accepts_tcp_but_is_not_ray_fails_in_bounded_time(
        scheme, what, silent_server, capsys, monkeypatch):
    import ray

    inits = []
    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: inits.append(kwargs))
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 2.0)  # 10 s for users
    address = f"{scheme}127.0.0.1:{silent_server}"
    start = time.perf_counter()
    assert main(["rollout", "--address", address, "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert time.perf_counter() - start < 10
    assert (f"--address {address!r} accepts connections but does not answer as {what} (no "
            "gRPC answer within") in err, err
    assert err.count("\n") == 1 and "Traceback" not in err and not inits


def test_an_object_store_that_accepts_and_never_answers_fails_in_bounded_time(
        silent_server, tmp_path, capsys, monkeypatch):
    started = record_ray_starts(monkeypatch)
    endpoint = f"http://127.0.0.1:{silent_server}"
    for key, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test",
                       "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(storage, "TIMEOUT_S", 2.0)  # 10 s for users
    start = time.perf_counter()
    assert main(["sweep", str(SPEC), "--run-dir", "s3://bucket/run"]) == 2
    err = capsys.readouterr().err
    assert time.perf_counter() - start < 15
    assert "--run-dir 's3://bucket/run' cannot be reached (" in err, err
    assert f"check that the endpoint {endpoint} (AWS_ENDPOINT_URL) answers within 2 s" in err
    assert err.count("\n") == 1 and "Traceback" not in err and not started


# ---- 3. the auth token is private -------------------------------------------------------------
def token_setup(home) -> None:
    """`cluster._token_setup` as a local Ray's start runs it, in a process whose HOME is `home`
    (Ray's token loader caches what it found once per process)."""
    env = cli_env(HOME=str(home))
    for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        env.pop(key, None)
    subprocess.run([sys.executable, "-c", "from marlscale import cluster; "
                    "cluster._token_setup()"], env=env, check=True, timeout=120)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_auth_token_is_private_and_an_existing_one_is_made_private(tmp_path):
    new, old = tmp_path / "new", tmp_path / "old"
    token_setup(new)
    assert mode(new / ".ray") == 0o700 and mode(new / ".ray" / "auth_token") == 0o600
    assert len((new / ".ray" / "auth_token").read_text()) >= 32
    (old / ".ray").mkdir(parents=True)
    (old / ".ray" / "auth_token").write_text("a" * 64)
    os.chmod(old / ".ray" / "auth_token", 0o644)  # as Ray's own writer leaves it
    token_setup(old)
    assert mode(old / ".ray" / "auth_token") == 0o600
    assert (old / ".ray" / "auth_token").read_text() == "a" * 64  # the same token
