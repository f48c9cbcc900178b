"""A sweep whose run directory is on object storage (`--run-dir s3://...`), against a real
S3 API: moto's server on 127.0.0.1. The sweep writes there, is interrupted (Ctrl-C), resumes,
and is reported, as on a cluster that shares results through a bucket."""

from __future__ import annotations

import io
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import ROOT, cli_env, marlscale
from test_sweeps import small_spec, stop_group, sweep_cmd

pytestmark = pytest.mark.integration

BUCKET = "marlscale-runs"


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on a free loopback port, with one bucket; the environment that points
    pyarrow (and so Tune and marlscale) at it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H",
                               "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        import boto3

        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"],
                              aws_access_key_id="testing", aws_secret_access_key="testing",
                              region_name="us-east-1")
        deadline = time.time() + 60
        while True:
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception:  # noqa: BLE001 - the server is still starting
                assert time.time() < deadline and server.poll() is None, "moto did not start"
                time.sleep(0.5)
        yield client, env
    finally:
        server.terminate()
        server.wait()


def keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def read_csv(client, key: str) -> pd.DataFrame:
    body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return pd.read_csv(io.BytesIO(body))


def test_a_sweep_on_s3_is_interrupted_resumed_and_reported(s3, tmp_path):
    client, env = s3
    stop = 6
    spec = small_spec(tmp_path, "s3sweep", grid={"algorithm": ["qmix"], "n_agents": [3],
                                                 "seed": [0, 1]},
                      stop={"iterations": stop}, checkpoint_every=2, max_concurrent_trials=1,
                      wandb={"mode": "disabled"})
    uri = f"s3://{BUCKET}/sweeps/s3sweep"
    driver = subprocess.Popen(sweep_cmd(str(spec), "--run-dir", uri, "--num-cpus", "2"),
                              env=cli_env(**env), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True,
                              cwd=ROOT)
    try:
        deadline = time.time() + 300
        # until a trial's first checkpoint is in the bucket (trials upload them themselves)
        while not any("/checkpoint_" in key for key in keys(client, "sweeps/s3sweep/")):
            assert time.time() < deadline and driver.poll() is None, driver.stderr.read()[-3000:]
            time.sleep(0.5)
        driver.send_signal(signal.SIGINT)
        out, err = driver.communicate(timeout=180)
    finally:
        stop_group(driver)
    assert driver.returncode == 130, err[-3000:]
    assert f"marlscale sweep --resume {uri}" in err
    written = keys(client, "sweeps/s3sweep/")
    for name in ("sweep.yaml", "spec.fingerprint.json", "provenance.json", "tuner.pkl",
                 "trials.csv", "results.csv"):
        assert f"sweeps/s3sweep/{name}" in written, (name, written)
    assert "TERMINATED" not in read_csv(client, "sweeps/s3sweep/trials.csv")["status"].tolist()
    assert not (ROOT / "s3:").exists()  # nothing written locally under a path like the URI

    done = marlscale("sweep", "--resume", uri, "--num-cpus", "2", **env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"report: {uri}/report/report.md" in done.stdout
    trials = read_csv(client, "sweeps/s3sweep/trials.csv")
    assert trials["status"].tolist() == ["TERMINATED"] * 2
    assert trials["iterations"].tolist() == [stop] * 2
    results = read_csv(client, "sweeps/s3sweep/results.csv")
    assert sorted(results.groupby("trial")["training_iteration"].max()) == [stop, stop]
    assert all(len(group) == stop for _, group in results.groupby("trial"))  # none repeated
    written = keys(client, "sweeps/s3sweep/")
    assert "sweeps/s3sweep/report/report.md" in written
    assert any(key.endswith(".png") for key in written if "/report/" in key)

    out = tmp_path / "report"  # `marlscale report` from the bucket to a local folder
    report = marlscale("report", uri, "--out", out, timeout=300, **env)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (out / "report.md").is_file() and list(out.glob("*.png"))


@pytest.mark.parametrize("run_dir, expected", [
    (f"s3://{BUCKET}", "it names a bucket, not a folder in one"),
    ("s3://no-such-bucket/run", "bucket 'no-such-bucket' does not exist"),
    ("nosuch://x/y", "--run-dir 'nosuch://x/y' is invalid ("),
])
def test_a_bad_object_store_run_dir_is_refused_before_ray_starts(s3, run_dir, expected,
                                                                 tmp_path, monkeypatch,
                                                                 cli_in_process):
    """In-process (`cli_in_process`: a subprocess per case cost its imports), against the
    same moto server; the sweep above runs through real processes."""
    _, env = s3
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = small_spec(tmp_path, "bad", wandb={"mode": "disabled"})
    done = cli_in_process("sweep", spec, "--run-dir", run_dir)
    assert done.code == 2 and expected in done.err, done.err[-2000:]
    assert "Traceback" not in done.err and not done.ray_started
