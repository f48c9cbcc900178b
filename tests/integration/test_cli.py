"""The main job and the CLI, run the way a user runs them."""

import json

import pytest
from cli_helpers import marlscale
from marlscale import keys

pytestmark = pytest.mark.integration


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
        (["train", "--set", "lr=-1"], "lr=-1 is invalid; allowed: a finite number > 0"),
        (["train", "--set", "learning_rate=0.1"],
         "key 'training.learning_rate' is unknown; allowed: algorithm"),
        (["train", "--algorithm", "implicit_ql"], "invalid choice: 'implicit_ql'"),
        (["train", "--set", "opponent_algorithm=qmix"],
         "opponent_algorithm='qmix' is invalid with env opponent='random'"),
        (["train", "no/such/spec.yaml"], "no/such/spec.yaml: the spec file does not exist"),
        (["train", "--n-agents", "500", "--map-size", "18"], "n_agents=500 is invalid"),
    ],
)
def test_bad_arguments_fail_before_ray_starts(args, expected, cli_in_process):
    """In-process (a subprocess per case cost its imports, ~5 s each); the next test runs one
    bad input the way a user's shell does."""
    done = cli_in_process(*args)
    assert done.code == 2
    assert expected in done.err and "Traceback" not in done.err
    assert not done.ray_started and "Ray" not in done.err  # nothing was started


def test_bad_spec_keys_name_the_file_and_key(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("env: battle\nstop: {iterations: 2, episodes: 3}\n")
    done = marlscale("train", str(spec), "--run-dir", str(tmp_path / "run"), timeout=120)
    assert done.returncode == 2
    assert f"{spec}: key 'stop.episodes' is unknown; allowed: iterations, env_steps, time_s" \
        in done.stderr
    assert "Traceback" not in done.stderr and "Ray" not in done.stderr
    assert not (tmp_path / "run").exists()  # nothing written


def test_train_writes_metrics_checkpoints_and_evaluation(tmp_path):
    run_dir = tmp_path / "run"
    done = marlscale("train", "--game", "battle", "--n-agents", "4", "--max-cycles", "30",
                     "--iterations", "3", "--algorithm", "mfqmix", "--set", "rollout_length=20",
                     "--set", "learning_starts=20", "--set", "batch_size=8",
                     "--run-dir", str(run_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    progress = [line for line in done.stdout.splitlines() if line.startswith("iter")]
    assert len(progress) == 3
    assert "env-steps/s" in progress[-1] and "eps" in progress[-1] and "MiB" in progress[-1]
    assert "agent-steps/s (sampling " in progress[-1]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["training_iteration"] for r in rows] == [1, 2, 3]
    for row in rows:  # end to end (learning included) is slower than sampling alone
        assert 0 < row["env_steps_per_s"] < row["sampling_env_steps_per_s"]
        assert row["agent_steps_per_s"] == pytest.approx(4 * row["env_steps_per_s"])
    assert rows[-1]["wall_s_lifetime"] > rows[0]["wall_s_lifetime"] > 0
    assert "env_steps_sampled_lifetime" in (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert (run_dir / "checkpoints" / "iter_000003").is_dir()
    result = json.loads((run_dir / "result.json").read_text())
    assert result["greedy_evaluation"]["red"][keys.LENGTH] == 30
    # the random policy moves every agent (the one episode loop, as `marlscale evaluate` does)
    assert result["random_evaluation"]["red"][keys.N_ACTIVE] == 0  # every agent random
    assert result["random_evaluation"]["red"][keys.LENGTH] == 30
