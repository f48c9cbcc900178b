"""`marlscale sweep --address` on a real multi-node Ray cluster on this machine: trials spread
over the nodes, every result and checkpoint lands in the one run directory, and a node removed
mid-sweep costs no trial (its trials are retried from their checkpoints on another node).

The cluster is Ray's own test harness (`ray.cluster_utils.Cluster`: a head and worker nodes,
each its own raylet, object store and workers) run by this file as a helper process
(`python test_multinode.py --serve-cluster TEMP_DIR`), so that the test process's own Ray (the
suite's `ray_local`) is left alone; the sweep runs through the CLI, as users run it. The head
has no CPUs: every trial runs on a worker node, and the driver, which joins the cluster on the
head's raylet, is never on a node that goes away.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml
from cli_helpers import ROOT, cli_env, marlscale
from test_sweeps import small_spec, stop_group, sweep_cmd, trials

pytestmark = pytest.mark.integration

SMOKE_TRAINING = yaml.safe_load((ROOT / "tune_specs" / "smoke.yaml").read_text())["training"]
WORKERS = 3  # one CPU each: two trials at a time, and a spare node for a retried one
READY = "cluster: "  # the helper's line with the cluster's address and node ids


# ---- the helper process: a Cluster, driven through its stdin ------------------------------------
def serve_cluster(temp_dir: str) -> None:
    """Start a head (0 CPUs) and WORKERS one-CPU worker nodes, print READY + {address, head,
    workers}, then obey stdin: `remove NODE_ID` removes that worker node (never the head) and
    answers `removed NODE_ID`; end of input shuts the whole cluster down."""
    import ray._common.utils
    import ray._private.utils
    from ray.cluster_utils import Cluster

    # The harness records its address in /tmp/ray/ray_current_cluster (and deletes that file at
    # shutdown), where any address-less `ray.init()` on this machine would find and join it.
    ray._private.utils.write_ray_address = lambda *args, **kwargs: None
    ray._common.utils.reset_ray_address = lambda *args, **kwargs: None
    node_args = {"temp_dir": temp_dir, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, **node_args})
    try:
        workers = {}
        for _ in range(WORKERS):
            node = cluster.add_node(num_cpus=1, **node_args)
            workers[node.node_id] = node
        cluster.wait_for_nodes()
        print(READY + json.dumps({"address": cluster.address, "head": cluster.head_node.node_id,
                                  "workers": list(workers)}), flush=True)
        for line in sys.stdin:
            command, _, node_id = line.strip().partition(" ")
            if command == "remove" and node_id in workers:
                cluster.remove_node(workers.pop(node_id))
                print(f"removed {node_id}", flush=True)
            else:
                print(f"refused {line.strip()}", flush=True)
    finally:
        cluster.shutdown()


@dataclass
class LocalCluster:
    """The test's handle on the helper process and its cluster."""

    process: subprocess.Popen
    address: str
    head: str
    workers: list[str]
    env: dict[str, str]

    def remove(self, node_id: str) -> None:
        self.process.stdin.write(f"remove {node_id}\n")
        self.process.stdin.flush()
        answer = ""
        while not answer.startswith(("removed ", "refused ")):  # past anything Ray printed
            answer = self.process.stdout.readline()
            assert answer, "the cluster's helper process died"
        assert answer.strip() == f"removed {node_id}", answer


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head and WORKERS worker nodes, all on this machine, with token auth of their own."""
    # Token auth, with a token of this cluster's own (Ray 2.60 turns auth on whenever it finds a
    # token, and ~/.ray/auth_token may exist); the sweep's driver gets the same two variables.
    env = cli_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
                  PYTHONPATH=os.pathsep.join([str(ROOT / "tests"),
                                              os.environ.get("PYTHONPATH", "")]))
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's unix socket paths
    log = tmp_path_factory.mktemp("cluster") / "helper.log"
    with open(log, "w") as stderr:
        helper = subprocess.Popen(
            [sys.executable, __file__, "--serve-cluster", temp_dir], env=env, cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
            start_new_session=True)  # its Ray processes join its process group
    try:
        line = ""
        while not line.startswith(READY):
            line = helper.stdout.readline()
            assert line, f"the cluster did not start:\n{log.read_text()[-4000:]}"
        info = json.loads(line[len(READY):])
        yield LocalCluster(helper, info["address"], info["head"], info["workers"], env)
    finally:
        helper.stdin.close()  # the helper shuts the cluster down
        try:
            helper.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        leftover = group_members(helper.pid)
        stop_group(helper)  # whatever is left of its process group, at once
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert helper.returncode == 0, log.read_text()[-4000:]
    assert not leftover, f"Ray processes outlived the cluster's shutdown: {leftover}"


def group_members(pgid: int) -> list[str]:
    """The command lines of the live processes in a process group."""
    members = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    members.append(handle.read().replace(b"\0", b" ").decode()[:120])
        except (OSError, IndexError, ValueError):
            continue
    return members


def spec_of(tmp_path: Path, name: str, stop: int, **changes) -> Path:
    """Two 1-CPU trials (qmix, N=3, seeds 0 and 1) of the smoke spec, checkpointed every 2
    iterations, no greedy evaluation, no W&B."""
    return small_spec(tmp_path, name, grid={"algorithm": ["qmix"], "n_agents": [3],
                                            "seed": [0, 1]},
                      training={**SMOKE_TRAINING, "eval_interval": 0},
                      resources={"num_cpus": 1, "num_env_runners": 0},
                      stop={"iterations": stop}, checkpoint_every=2, **changes)


def check_one_run_dir(run_dir: Path, stop: int) -> pd.DataFrame:
    """Both trials' results and checkpoints in RUN_DIR, whichever node wrote them; trials.csv."""
    per_trial = trials(run_dir)
    assert len(per_trial) == 2, sorted(per_trial)
    for name, rows in per_trial.items():
        assert rows[-1]["training_iteration"] == stop, (name, rows[-1])
        checkpoints = sorted((run_dir / name).glob("checkpoint_*"))
        assert checkpoints and all(any(c.iterdir()) for c in checkpoints), name
    results = pd.read_csv(run_dir / "results.csv")
    assert sorted(results.groupby("trial").size()) == [stop, stop]  # one row per iteration
    summary = pd.read_csv(run_dir / "trials.csv")
    assert list(summary["status"]) == ["TERMINATED"] * 2, summary.to_dict("records")
    assert list(summary["iterations"]) == [stop] * 2
    return summary


def test_a_sweep_on_a_multi_node_cluster_spreads_trials_and_writes_one_run_dir(cluster,
                                                                              tmp_path):
    stop = 4
    spec = spec_of(tmp_path, "spread", stop, max_failures=0, wandb={"mode": "disabled"})
    run_dir = tmp_path / "spread"
    done = marlscale("sweep", spec, "--run-dir", run_dir, "--address", cluster.address,
                     env=cluster.env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = check_one_run_dir(run_dir, stop)
    # Each trial on one worker node (one CPU each, the head has none): two nodes in all.
    nodes = [ids.split() for ids in summary["node_ids"]]
    assert all(len(ids) == 1 and ids[0] in cluster.workers for ids in nodes), nodes
    assert nodes[0] != nodes[1], nodes
    results = pd.read_csv(run_dir / "results.csv")  # the node of every row: the same ones
    per_row = results.groupby("trial")["node_id"].agg(lambda ids: " ".join(dict.fromkeys(ids)))
    assert per_row.to_dict() == summary.set_index("trial")["node_ids"].to_dict()


def test_a_node_removed_mid_sweep_moves_its_trial_and_loses_none(cluster, tmp_path):
    stop = 30  # iterations take a fraction of a second: room to remove the node mid-trial
    spec = spec_of(tmp_path, "move", stop, max_failures=1, wandb={"mode": "disabled"})
    run_dir, log = tmp_path / "move", tmp_path / "driver.log"
    with open(log, "w") as output:  # a file, not a pipe: the driver never blocks on it
        driver = subprocess.Popen(sweep_cmd(str(spec), "--run-dir", str(run_dir),
                                            "--address", cluster.address),
                                  env=cluster.env, stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True, cwd=ROOT)
    try:
        # A trial past its first checkpoint (iteration 2; its third result is only recorded
        # after the checkpoint was), still running on a worker node.
        deadline = time.time() + 180
        while True:
            running = [(name, rows) for name, rows in trials(run_dir).items()
                       if 3 <= len(rows) and list((run_dir / name).glob("checkpoint_*"))]
            if running:
                break
            assert time.time() < deadline and driver.poll() is None, \
                f"no trial to move:\n{log.read_text()[-4000:]}"
            time.sleep(0.1)
        name, rows = running[0]
        victim = rows[-1]["node_id"]
        assert victim in cluster.workers and len(rows) < stop, rows[-1]
        cluster.remove(victim)  # the node's raylet, object store and workers all go
        driver.wait(timeout=300)
    finally:
        stop_group(driver)
    assert driver.returncode == 0, log.read_text()[-4000:]
    summary = check_one_run_dir(run_dir, stop)  # no trial lost, each ran to the end
    moved = summary.set_index("trial")["node_ids"].to_dict()
    (other,) = [trial for trial in moved if trial != name]
    assert victim not in moved[other].split(), moved  # the other trial never ran there
    first, second = moved[name].split()  # the moved trial ran on two nodes, in that order
    assert first == victim and second in cluster.workers, moved
    rows = trials(run_dir)[name]
    restarts = [i for i, r in enumerate(rows) if r["iterations_since_restore"] == 1]
    assert len(restarts) == 2, [r["training_iteration"] for r in rows]
    # Restarted on the other node right after a checkpoint (every 2 iterations), not anew.
    restart = rows[restarts[1]]["training_iteration"]
    assert restart >= 3 and restart % 2 == 1, [r["training_iteration"] for r in rows]
    assert {r["node_id"] for r in rows[:restarts[1]]} == {victim}
    assert {r["node_id"] for r in rows[restarts[1]:]} == {second}
    assert "its node has died" in (run_dir / name / "error.txt").read_text()  # Tune's reason


if __name__ == "__main__" and sys.argv[1:2] == ["--serve-cluster"]:
    signal.signal(signal.SIGTERM, lambda *args: sys.exit(1))
    serve_cluster(sys.argv[2])
