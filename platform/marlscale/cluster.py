"""Where a command's Ray comes from: a cluster it joins, or a local Ray it owns.

`connect(address, num_cpus)` is how every `marlscale` command that needs Ray gets it:

* **A cluster** (`--address`, else `RAY_ADDRESS`, which `ray job submit` sets): the address
  is probed first, so an unreachable one fails within `CONNECT_TIMEOUT_S` with its name and how
  to start a cluster, instead of Ray's endless reconnect warnings.
* **A local Ray** otherwise, started the way a user starts one (`ray start --head`) but private
  to this command and tied to it:

  - Every Ray listener is bound to 127.0.0.1. Ray binds its servers (GCS, raylet, workers,
    agents) to the node IP, and on Linux it turns "127.0.0.1" into the machine's address
    unless `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, which marks a single-machine Ray. That
    variable is set for the Ray processes; the driver joins as a 127.0.0.1 node too.
  - The Ray processes live in their own process group, led by Ray's own reaper
    (`ray/_private/ray_process_reaper.py`), which holds a pipe from this process. When this
    process ends in any way (SIGKILL included) the pipe closes and the reaper terminates the
    whole group: no `ray::DashboardAgent` or `RuntimeEnvAgent` outlives the command. The
    group is not the terminal's, so Ctrl-C reaches only this process, which stops cleanly.
  - Its files (logs, sockets, the session folder) go to a temp dir of its own,
    `/tmp/ray/marlscale-<random suffix>/session_*`, so that a plain `ray.init()` elsewhere on the
    machine does not find this Ray and join it.
  - The dashboard is off unless asked for (`dashboard=True`), and then binds to
    `dashboard_host`, 127.0.0.1 by default.
  - Token authentication follows Ray's default for a local `ray.init()`: on, with the
    token in `~/.ray/auth_token` (created if missing), unless `RAY_AUTH_MODE` says otherwise.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

CONNECT_TIMEOUT_S = 10.0
DASHBOARD_PORT = 8265  # Ray's
LOOPBACK = "127.0.0.1"
LOCAL_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # Ray's switch for a one-machine Ray
START_TIMEOUT_S = 120.0
OWN_PORTS = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
             "runtime-env-agent-port", "ray-client-server-port", "node-manager-port",
             "object-manager-port")


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports. Every probe stays bound until all are picked: a
    probe closed at once lets the OS hand the same port out again, and `ray start` refuses
    two components on one port (seen: the GCS and the metrics exporter both given 50889)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind((LOOPBACK, 0))
        return [probe.getsockname()[1] for probe in probes]


def check_reachable(address: str, name: str = "--address",
                    timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """A clear error, within `timeout_s`, when nothing answers at a cluster's GCS address.

    `auto` and `ray://` (Ray Client) addresses are left to Ray."""
    if address == "auto" or "://" in address and not address.startswith(("http://",
                                                                         "https://")):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    hint = ("allowed: the address of a running Ray cluster's head, as `ray start --head` "
            "prints it (HOST:6379), or leave out --address and RAY_ADDRESS for a local Ray")
    if not sep or not port.isdigit():
        raise ValueError(f"{name} {address!r} is invalid; {hint}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as error:
        reason = "timed out" if isinstance(error, TimeoutError) else \
            (error.strerror or type(error).__name__)
        raise ValueError(f"{name} {address!r} is unreachable ({reason} within "
                         f"{timeout_s:g} s); {hint}") from None


@dataclass
class LocalRay:
    """A `ray start --head` on 127.0.0.1 in its own process group, reaped with this process."""

    address: str
    reaper: subprocess.Popen
    dashboard_url: str | None = None

    @classmethod
    def start(cls, num_cpus: int | None = None, dashboard: bool = False,
              dashboard_host: str = LOOPBACK, dashboard_port: int = DASHBOARD_PORT) -> LocalRay:
        from ray._private import ray_process_reaper
        from ray._private.authentication import authentication_token_setup as auth
        from ray._raylet import AuthenticationTokenLoader

        env = dict(os.environ, **LOCAL_ENV)
        if "RAY_AUTH_MODE" not in os.environ:  # Ray's local default: token auth
            if not AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
                auth.generate_and_save_token()
            env["RAY_AUTH_MODE"] = "token"
        # Ray's reaper leads a new process group; it exits, killing the group, when the pipe
        # from this process closes. Every Ray process of this node joins that group.
        reaper = subprocess.Popen([sys.executable, "-u", ray_process_reaper.__file__],
                                  stdin=subprocess.PIPE, process_group=0)
        # Ports of its own: Ray's defaults (e.g. the dashboard agent's 52365) may be held by
        # another Ray on this machine.
        port, *own = free_ports(1 + len(OWN_PORTS))
        ports = [f"--{name}={number}" for name, number in zip(OWN_PORTS, own)]
        command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head",
                   f"--port={port}", f"--node-ip-address={LOOPBACK}", *ports,
                   "--disable-usage-stats", f"--include-dashboard={str(dashboard).lower()}"]
        if num_cpus is not None:
            command.append(f"--num-cpus={num_cpus}")
        if dashboard:
            command += [f"--dashboard-host={dashboard_host}", f"--dashboard-port={dashboard_port}"]
        # A temp dir of its own: `ray start` records its address in the temp dir, where a
        # later plain `ray.init()` on this machine would find it and join this private Ray.
        from ray._common.utils import get_default_ray_temp_dir

        os.makedirs(get_default_ray_temp_dir(), exist_ok=True)
        temp_dir = tempfile.mkdtemp(prefix="marlscale-", dir=get_default_ray_temp_dir())
        command.append(f"--temp-dir={temp_dir}")
        local = cls(address=f"{LOOPBACK}:{port}", reaper=reaper,
                    dashboard_url=f"http://{dashboard_host}:{dashboard_port}" if dashboard
                    else None)
        try:
            started = subprocess.run(command, env=env, process_group=reaper.pid,
                                     stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                     timeout=START_TIMEOUT_S)
            if started.returncode != 0:
                raise RuntimeError(f"`ray start --head` failed (exit {started.returncode}):\n"
                                   f"{started.stdout[-2000:]}{started.stderr[-2000:]}")
        except BaseException:
            local.stop()
            raise
        return local

    def stop(self, timeout_s: float = 15.0) -> None:
        """End every Ray process of this node: the reaper SIGTERMs its group, then SIGKILLs it."""
        if self.reaper.poll() is not None:
            return
        self.reaper.stdin.close()
        try:
            self.reaper.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.reaper.pid, 9)
            self.reaper.wait()


@contextlib.contextmanager
def _as_local_node() -> Iterator[None]:
    """Within: Ray takes this machine as a one-machine cluster, whose node IP is 127.0.0.1."""
    import ray._private.ray_constants as ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


@contextlib.contextmanager
def connect(address: str | None = None, num_cpus: int | None = None, *,
            dashboard: bool = False, dashboard_host: str = LOOPBACK,
            dashboard_port: int = DASHBOARD_PORT, log=None) -> Iterator[str | None]:
    """Ray for the block: the cluster at `address` (else RAY_ADDRESS), else a local Ray.

    Yields the cluster address, or None for a local Ray; shuts Ray down after the block (and
    ends the local Ray's processes)."""
    import ray

    name = "--address" if address else "RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address, name)
        ray.init(address=address)
        try:
            yield address
        finally:
            ray.shutdown()
        return
    from ray._private.authentication import authentication_token_setup as auth

    local = LocalRay.start(num_cpus, dashboard, dashboard_host, dashboard_port)
    try:
        with _as_local_node():
            if "RAY_AUTH_MODE" not in os.environ:
                auth.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
            ray.init(address=local.address, log_to_driver=True)
        if local.dashboard_url and log is not None:
            log(f"Ray dashboard: {local.dashboard_url}")
        yield None
    finally:
        ray.shutdown()
        local.stop()
