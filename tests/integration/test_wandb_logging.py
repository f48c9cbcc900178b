"""`marlscale train` logs to W&B the way sweeps do, run the way users run it: offline without an
API key, one W&B run grouped per configuration, env steps as the x-axis, and `--resume`
continuing the same W&B run. The offline run files are read back with W&B's own protobufs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cli_helpers
import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "tune_specs" / "train" / "qmix_pursuit_small.yaml"
FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # W&B keys are 40 hex characters
TINY = ["--max-cycles", "30", "--set", "rollout_length=50", "--set", "learning_starts=50",
        "--num-cpus", "1"]


def marlscale(*args, **env) -> subprocess.CompletedProcess:
    """The CLI with no W&B variable of the caller's (no API key, no WANDB_MODE) but `env`."""
    return cli_helpers.marlscale(*args, without_wandb=True, **env)


def records(path: Path) -> list:
    """A W&B run file's records: a 7-byte header, then a LevelDB-style log (32 KiB blocks of
    chunks with a 7-byte header: CRC, length, type) of protobuf `Record`s."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, pos, chunk, found = path.read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's zero padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            found.append(Record.FromString(chunk))
            chunk = b""
    return found


def of_type(found: list, kind: str) -> list:
    return [getattr(record, kind) for record in found if record.WhichOneof("record_type") == kind]


def history(found: list) -> list[dict]:
    return [{"/".join(item.nested_key) or item.key: json.loads(item.value_json)
             for item in record.item} for record in of_type(found, "history")]


def summary(found: list) -> dict:
    values = {}
    for record in of_type(found, "summary"):
        for item in record.update:
            values["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
    return values


def test_train_logs_offline_by_default_and_resume_continues_the_same_wandb_run(tmp_path):
    run_dir = tmp_path / "run"
    done = marlscale("train", SPEC, "--iterations", "2", *TINY, "--run-dir", run_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    spec = json.loads((run_dir / "spec.json").read_text())
    run_id = spec["wandb_run_id"]
    (first,) = run_dir.glob("wandb/offline-run-*/")
    assert first.name.endswith(f"-{run_id}") and (first / f"run-{run_id}.wandb").is_file()
    found = records(first / f"run-{run_id}.wandb")

    (run,) = of_type(found, "run")
    assert (run.run_id, run.project) == (run_id, "marlscale")
    assert run.run_group == "train/qmix/adversarial_pursuit/N4"
    assert run.display_name == "qmix_N4_seed1"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    expected = yaml.safe_load(SPEC.read_text())
    assert config["env_config"] == {**expected["env_config"], "max_cycles": 30}
    assert config["training"] == {**expected["training"], "rollout_length": 50,
                                  "learning_starts": 50}
    assert config["stop"] == {"iterations": 2} and config["seed"] == 1
    assert config["wandb"] == {} and config["wandb_run_id"] == run_id

    # env steps are the x-axis of every metric
    metrics = {(m.name or m.glob_name, m.step_metric) for m in of_type(found, "metric")}
    assert {("env_steps_sampled_lifetime", ""), ("*", "env_steps_sampled_lifetime")} <= metrics
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = history(found)
    assert [r["training_iteration"] for r in logged] == [1, 2]
    assert [r["env_steps_sampled_lifetime"] for r in logged] == [50, 100]
    assert logged[1]["epsilon"] == pytest.approx(rows[1]["epsilon"])
    result = json.loads((run_dir / "result.json").read_text())
    final = summary(found)
    for kind in ("greedy_evaluation", "random_evaluation"):
        assert final[f"{kind}/predator/return_per_agent"] == pytest.approx(
            result[kind]["predator"]["return_per_agent"])
    (exit_record,) = of_type(found, "exit")
    assert exit_record.exit_code == 0

    # --resume logs on into the same W&B run (its id from spec.json); a key in the environment
    # with --wandb-mode offline stays offline and is never written
    done = marlscale("train", "--resume", run_dir, "--iterations", "3", "--wandb-mode",
                     "offline", "--num-cpus", "1", WANDB_API_KEY=FAKE_KEY)
    assert done.returncode == 0, done.stderr[-3000:]
    assert FAKE_KEY not in done.stdout + done.stderr
    resumed = json.loads((run_dir / "spec.json").read_text())
    assert resumed["wandb_run_id"] == run_id and resumed["wandb"] == {"mode": "offline"}
    second = [path for path in run_dir.glob("wandb/offline-run-*/") if path != first]
    assert len(second) == 1 and second[0].name.endswith(f"-{run_id}")
    found = records(second[0] / f"run-{run_id}.wandb")
    (run,) = of_type(found, "run")
    assert run.run_group == "train/qmix/adversarial_pursuit/N4"
    assert [r["training_iteration"] for r in history(found)] == [3]
    assert [r["env_steps_sampled_lifetime"] for r in history(found)] == [150]
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path


def test_wandb_mode_disabled_logs_nothing(tmp_path):
    run_dir = tmp_path / "run"
    done = marlscale("train", SPEC, "--iterations", "1", *TINY, "--wandb-mode", "disabled",
                     "--run-dir", run_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (run_dir / "wandb").exists() and (run_dir / "result.json").is_file()
    spec = json.loads((run_dir / "spec.json").read_text())
    assert spec["wandb"] == {"mode": "disabled"} and "wandb_run_id" not in spec
