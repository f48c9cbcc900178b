"""Where a sweep's trials can run: every resource bundle its trials ask for, and on a cluster
a bounded wait for a node that can hold them (instead of trials PENDING forever)."""

from __future__ import annotations

import time

from marlscale.runspec.sweep import SPEC_KEY, SweepSpec
from marlscale.sweeps.trial import SweepTrial

RESOURCE_WAIT_S = 600.0


def trial_bundles(spec: SweepSpec) -> list[dict[str, float]]:
    """Every resource bundle any trial of the sweep asks for (Tune places each on one node),
    as the trials themselves compute them."""
    bundles = []
    for point in spec.points():
        request = SweepTrial.default_resource_request({SPEC_KEY: spec.to_dict(), **point})
        for bundle in request.bundles:
            wanted = {key: float(value) for key, value in bundle.items() if value}
            if wanted not in bundles:
                bundles.append(wanted)
    return bundles


def wait_until_fits(spec: SweepSpec, wait_s: float = RESOURCE_WAIT_S, log=print,
                    poll_s: float = 5.0) -> None:
    """On a cluster: a clear error, after at most `wait_s`, when no node can ever hold a
    trial's resources (e.g. GPUs on a cluster without GPU nodes), instead of trials that
    stay PENDING forever. It waits first, saying so, since an autoscaler may add a node."""
    import ray

    def misfits() -> tuple[list[dict[str, float]], list[dict[str, float]]]:
        nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
        return [bundle for bundle in trial_bundles(spec)
                if not any(all(node.get(key, 0.0) >= value for key, value in bundle.items())
                           for node in nodes)], nodes

    missing, nodes = misfits()
    if not missing:
        return
    deadline = time.monotonic() + wait_s

    def shown(resources: dict[str, float]) -> str:
        return ", ".join(f"{key}={value:g}" for key, value in sorted(resources.items())
                         if key in ("CPU", "GPU") or not key.startswith(("node:", "memory",
                                                                          "object_store")))

    log(f"marlscale: warning: no node of the cluster can hold a trial's {shown(missing[0])} "
        f"(nodes: {'; '.join(shown(n) for n in nodes) or 'none'}); waiting up to {wait_s:g} s "
        "for one to join (an autoscaler may add it)")
    while time.monotonic() < deadline:
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        missing, nodes = misfits()
        if not missing:
            log("marlscale: a node that holds every trial has joined")
            return
    raise ValueError(
        f"resources={shown(missing[0])} per trial is invalid on this cluster: no node can hold "
        f"it after {wait_s:g} s (nodes: {'; '.join(shown(n) for n in nodes) or 'none'}); "
        "allowed: per-trial resources that fit one node (resources.num_gpus, num_cpus, "
        "num_env_runners), or a cluster with such a node (--resource-wait-s to wait longer)")
