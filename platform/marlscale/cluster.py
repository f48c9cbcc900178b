"""Where a command's Ray comes from: a cluster it joins, or a local Ray it owns.

`connect(address, num_cpus)` is how every `marlscale` command that needs Ray gets it:

* **A cluster** (`--address`, else `RAY_ADDRESS`, which `ray job submit` sets): the address
  is probed first, so one that is unreachable, or that accepts TCP but does not answer as a
  Ray GCS (or, for `ray://`, as a Ray Client server), fails within `CONNECT_TIMEOUT_S` with its
  name and what to check, instead of Ray's endless reconnect warnings or a traceback.
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
    `/tmp/ray/marlscale-<random suffix>/ray/session_*`, so that a plain `ray.init()` elsewhere
    on the machine does not find this Ray and join it. `marlscale-<suffix>` is private (0700:
    Ray makes its own folders 0777) and removed when the command ends, unless
    `MARLSCALE_KEEP_RAY_LOGS=1` (then its path is printed).
  - The dashboard is off unless asked for (`dashboard=True`), and then binds to
    `dashboard_host`, 127.0.0.1 by default.
  - Token authentication follows Ray's default for a local `ray.init()`: on, with the
    token in `~/.ray/auth_token` (created if missing, 0600 in a 0700 `~/.ray`; an existing
    token readable by others is made 0600), unless `RAY_AUTH_MODE` says otherwise.

Either way, the empty folder RLlib's Algorithm makes in `~/ray_results` for each one built in
this process goes to the command's private folder instead, removed with it.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

CONNECT_TIMEOUT_S = 10.0
DASHBOARD_PORT = 8265  # Ray's
LOOPBACK = "127.0.0.1"
LOCAL_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # Ray's switch for a one-machine Ray
START_TIMEOUT_S = 120.0
RESOURCE_WAIT_S = 600.0  # on a cluster: how long to wait for CPUs that may yet join
AUTH = "authentication required"  # a GCS's answer without a valid token: it is Ray
KEEP_LOGS_ENV = "MARLSCALE_KEEP_RAY_LOGS"  # =1: keep the local Ray's folder (its logs)
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
    """A clear error, within about `timeout_s`, when no Ray cluster answers at `address`:
    nothing listens there, or something that is not Ray's GCS (a `ray://` address: not a Ray
    Client server) does. `auto` is left to Ray."""
    if address == "auto":
        return
    scheme, sep, rest = address.rpartition("://")
    if sep and scheme not in ("ray", "http", "https"):
        return  # another scheme Ray may know
    hostport = rest.rstrip("/")
    host, sep, port = hostport.rpartition(":")
    hint = ("allowed: the address of a running Ray cluster's head, as `ray start --head` "
            "prints it (HOST:6379), a Ray Client address (ray://HOST:10001), or leave out "
            "--address and RAY_ADDRESS for a local Ray")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{name} {address!r} is invalid; {hint}")
    deadline = time.monotonic() + timeout_s
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as error:
        reason = "timed out" if isinstance(error, TimeoutError) else \
            (error.strerror or type(error).__name__)
        raise ValueError(f"{name} {address!r} is unreachable ({reason} within "
                         f"{timeout_s:g} s); {hint}") from None
    if scheme in ("http", "https"):
        return  # a dashboard / job server address: Ray's own checks follow
    what = "a Ray Client server" if scheme == "ray" else "a Ray cluster's GCS"
    problem = _probe_grpc(hostport, client=scheme == "ray",
                          timeout_s=max(1.0, deadline - time.monotonic()))
    if problem == AUTH:
        if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
            return
        raise ValueError(f"{name} {address!r} is a Ray cluster with token authentication and "
                         "this process sends no token; allowed: RAY_AUTH_MODE=token and the "
                         "cluster's token (RAY_AUTH_TOKEN, or its ~/.ray/auth_token here)")
    if problem:
        check = ("the port is the head's Ray Client port (`ray start --head` serves it on "
                 "10001 with --ray-client-server-port)" if scheme == "ray" else
                 "the port is the head's GCS port (`ray start --head --port`, 6379 by "
                 "default), not the dashboard's or another server's")
        raise ValueError(f"{name} {address!r} accepts connections but does not answer as "
                         f"{what} ({problem}); check that {check}; {hint}")


def _probe_grpc(hostport: str, client: bool, timeout_s: float) -> str | None:
    """Why `hostport` is not a Ray GCS (`client`: a Ray Client server) within `timeout_s`, or
    None when it answers as one (AUTH when it asks for a token: it is Ray)."""
    import grpc

    if client:
        from ray.core.generated import ray_client_pb2, ray_client_pb2_grpc

        def call(channel):
            return ray_client_pb2_grpc.RayletDriverStub(channel).ClusterInfo(
                ray_client_pb2.ClusterInfoRequest(type=ray_client_pb2.ClusterInfoType.PING),
                timeout=timeout_s)
    else:
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

        def call(channel):
            return gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s)

    with grpc.insecure_channel(hostport) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            return f"no gRPC answer within {timeout_s:.0f} s"
        try:
            call(channel)
        except grpc.RpcError as error:
            if error.code() in (grpc.StatusCode.UNAUTHENTICATED,
                                grpc.StatusCode.PERMISSION_DENIED):
                return AUTH
            return f"gRPC {error.code().name}: {error.details()}"
    return None


def _loopback_only(address: str) -> bool:
    """Whether `address` is a loopback GCS that Ray, which connects to loopback addresses
    through this machine's IP, would not reach there (a Ray started with
    --node-ip-address=127.0.0.1, as this module's local Rays are): then join as a one-machine
    node, as for a local Ray, instead of Ray's endless "Failed to connect to GCS"."""
    from ray._private.services import get_node_ip_address, is_localhost

    if "://" in address:
        return False
    host, _, port = address.rpartition(":")
    if not is_localhost(host.strip("[]")):
        return False
    try:
        with socket.create_connection((get_node_ip_address(), int(port)), timeout=2.0):
            return False
    except OSError:
        return True


def wait_for_cpus(count: int, what: str, wait_s: float = RESOURCE_WAIT_S, log=print,
                  poll_s: float = 5.0) -> None:
    """On a cluster: a clear error, after at most `wait_s`, when its nodes cannot hold `count`
    one-CPU actors or tasks (`what`, e.g. "--num-env-runners=8") at once, instead of waiting
    for them forever. It waits first, saying so, since an autoscaler may add nodes."""
    import ray

    def capacity() -> tuple[int, list[float]]:
        cpus = [node["Resources"].get("CPU", 0.0) for node in ray.nodes() if node["Alive"]]
        return sum(math.floor(c + 1e-9) for c in cpus), cpus

    held, cpus = capacity()
    if held >= count:
        return

    def nodes() -> str:
        return ", ".join(f"CPU={c:g}" for c in cpus) or "none"

    log(f"marlscale: warning: the cluster's nodes can hold {held} of the {count} one-CPU "
        f"workers of {what} (nodes: {nodes()}); waiting up to {wait_s:g} s for CPUs to join "
        "(an autoscaler may add them)")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        held, cpus = capacity()
        if held >= count:
            log("marlscale: the cluster now has the CPUs")
            return
    raise ValueError(f"{what} is invalid on this cluster: its nodes can hold {held} one-CPU "
                     f"worker(s) of the {count} asked for, after {wait_s:g} s (nodes: "
                     f"{nodes()}); allowed: at most {held}, or a cluster with more CPUs "
                     "(--resource-wait-s to wait longer)")


def _private_dir() -> str:
    """A folder of this command's own under Ray's temp root, 0700 (mkdtemp's mode)."""
    from ray._common.utils import get_default_ray_temp_dir

    root = get_default_ray_temp_dir()
    os.makedirs(root, exist_ok=True)
    return tempfile.mkdtemp(prefix="marlscale-", dir=root)


def _token_setup() -> None:
    """Ray's local default, token authentication, with the token kept private: a new
    `~/.ray/auth_token` is written 0600 in a 0700 `~/.ray` (Ray's own writer leaves both
    world-readable), and an existing one readable by others is made 0600."""
    from ray._private.authentication import authentication_token_setup as auth
    from ray._private.authentication.authentication_token_generator import (
        generate_new_authentication_token,
    )
    from ray._raylet import AuthenticationTokenLoader

    path = auth._get_default_token_path()
    if not AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(generate_new_authentication_token())
    elif path.is_file() and path.stat().st_mode & 0o077:
        path.chmod(0o600)


@dataclass
class LocalRay:
    """A `ray start --head` on 127.0.0.1 in its own process group, reaped with this process."""

    address: str
    reaper: subprocess.Popen
    dashboard_url: str | None = None
    folder: str | None = None
    """Its private folder (0700): Ray's temp dir is `folder/ray`; removed by `stop`."""

    @classmethod
    def start(cls, num_cpus: int | None = None, dashboard: bool = False,
              dashboard_host: str = LOOPBACK, dashboard_port: int = DASHBOARD_PORT) -> LocalRay:
        from ray._private import ray_process_reaper

        env = dict(os.environ, **LOCAL_ENV)
        if "RAY_AUTH_MODE" not in os.environ:  # Ray's local default: token auth
            _token_setup()
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
        # Ray makes its temp dir 0777; inside a 0700 folder nobody else can reach it.
        folder = _private_dir()
        command.append(f"--temp-dir={os.path.join(folder, 'ray')}")
        local = cls(address=f"{LOOPBACK}:{port}", reaper=reaper,
                    dashboard_url=f"http://{dashboard_host}:{dashboard_port}" if dashboard
                    else None, folder=folder)
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

    def stop(self, timeout_s: float = 15.0, remove: bool = True) -> None:
        """End every Ray process of this node: the reaper SIGTERMs its group, then SIGKILLs it.
        Then remove its folder (its logs), unless not `remove`."""
        if self.reaper.poll() is None:
            self.reaper.stdin.close()
            try:
                self.reaper.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.reaper.pid, 9)
                self.reaper.wait()
        if remove and self.folder:
            _remove(self.folder)


def _remove(folder: str) -> None:
    """Remove a folder of ours; a Ray process still exiting may write into it meanwhile."""
    for _ in range(5):
        shutil.rmtree(folder, ignore_errors=True)
        if not os.path.exists(folder):
            return
        time.sleep(0.5)


@contextlib.contextmanager
def _trainable_logdirs_in(folder: str) -> Iterator[None]:
    """Within: an RLlib Algorithm built in this process (a Tune Trainable without storage)
    makes its log folder, which it leaves empty, in `folder` rather than in ~/ray_results."""
    from ray.tune.trainable import trainable

    before = trainable.DEFAULT_STORAGE_PATH
    trainable.DEFAULT_STORAGE_PATH = folder
    try:
        yield
    finally:
        trainable.DEFAULT_STORAGE_PATH = before


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
        check_reachable(address, name, CONNECT_TIMEOUT_S)
        from ray.exceptions import AuthenticationError

        try:
            with _as_local_node() if _loopback_only(address) else contextlib.nullcontext():
                ray.init(address=address)
        except (ConnectionError, AuthenticationError) as error:
            raise ValueError(f"{name} {address!r}: Ray could not connect ({error}); check the "
                             "address, the cluster's Ray version and, with token "
                             "authentication, RAY_AUTH_MODE=token and its token") from None
        folder = tempfile.mkdtemp(prefix="marlscale-")  # 0700, this process's scratch
        try:
            with _trainable_logdirs_in(folder):
                yield address
        finally:
            ray.shutdown()
            _remove(folder)
        return
    from ray._private.authentication import authentication_token_setup as auth

    keep = os.environ.get(KEEP_LOGS_ENV) == "1"
    local = LocalRay.start(num_cpus, dashboard, dashboard_host, dashboard_port)
    try:
        with _as_local_node():
            if "RAY_AUTH_MODE" not in os.environ:
                auth.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
            ray.init(address=local.address, log_to_driver=True)
        if local.dashboard_url and log is not None:
            log(f"Ray dashboard: {local.dashboard_url}")
        with _trainable_logdirs_in(os.path.join(local.folder, "results")):
            yield None
    finally:
        ray.shutdown()
        local.stop(remove=not keep)
        if keep and log is not None:
            log(f"the local Ray's logs are kept in {local.folder} ({KEEP_LOGS_ENV}=1)")
