"""The main job and the CLI, run the way a user runs them."""

import json
import subprocess
import sys

import pytest
from marlscale import keys

pytestmark = pytest.mark.integration


def marlscale(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "marlscale.cli", *args],
        capture_output=True, text=True, timeout=timeout,
    )


def test_rollout_on_local_ray_prints_metrics_for_both_games():
    done = marlscale("rollout", "--n-agents", "6", "--episodes", "1", "--seeds", "2",
                     "--max-cycles", "40")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["game"] for r in rows) == ["adversarial_pursuit"] * 2 + ["battle"] * 2
    for row in rows:
        assert row["agent_steps_per_s"] > 0 and row[keys.LENGTH] == 40
        assert row[keys.RETURN_PER_AGENT] == pytest.approx(row[keys.RETURN] / 6, abs=1e-2)
        assert ("tags" if row["game"] == "adversarial_pursuit" else "kills") in row


@pytest.mark.parametrize(
    "args, expected",
    [
        (["rollout", "--n-agents", "0"], "--n-agents: 0 is invalid; allowed: an integer >= 1"),
        (["rollout", "--games", "tag"], "invalid choice: 'tag'"),
        (["rollout", "--n-agents", "200", "--map-size", "20"],
         "n_agents=200 is invalid; allowed: at most"),
    ],
)
def test_bad_arguments_fail_before_ray_starts(args, expected):
    done = marlscale(*args, timeout=120)
    assert done.returncode == 2
    assert expected in done.stderr
    assert "Ray" not in done.stderr  # nothing was started
