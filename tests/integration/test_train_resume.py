"""`marlscale train --resume RUN_DIR` and `marlscale train --from-checkpoint CKPT[:team]`.

Tiny pursuit runs, through `marlscale.cli.main` in this process on the session's local Ray:
the CLI's own start of a Ray (`cluster.connect`) is recorded instead of made (test_cli.py
starts one for real in a subprocess), which also tells whether a failing call got as far as
starting Ray.
"""

import json
import shutil

import numpy as np
import pytest
from marlscale import train
from marlscale.algorithms import checkpoints
from marlscale.models.team_module import LEARNER_ONLY

pytestmark = pytest.mark.integration

TINY = {
    "env": "adversarial_pursuit",
    "env_config": {"n_agents": 4, "map_size": 14, "max_cycles": 30},
    "training": {"algorithm": "qmix", "rollout_length": 50, "learning_starts": 50,
                 "batch_size": 16, "hidden": 32, "replay_capacity": 500,
                 "epsilon_decay_steps": 1000},
    "resources": {"num_cpus": 1},
    "eval_episodes": 1,
    "seed": 1,
}
STEPS = TINY["training"]["rollout_length"]  # env steps per iteration (one env)


def spec_file(path, **changes):
    """TINY with top-level `changes` (and `training`/`env_config` merged), as a spec file."""
    values = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        values[key] = {**values[key], **value} if key in ("training", "env_config") else value
    path.write_text(json.dumps(values))
    return path


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def cli(ray_local, cli_in_process):
    """`cli(*args)`: run `marlscale` in-process on the session's Ray (conftest.py)."""
    return cli_in_process


@pytest.fixture(scope="module")
def source(ray_local, tmp_path_factory):
    """A pursuit qmix run (N=4, hidden 32) trained 2 iterations: its run directory."""
    run_dir = tmp_path_factory.mktemp("source") / "run"
    spec = train.TrainSpec.from_dict({**TINY, "stop": {"iterations": 2}, "seed": 7})
    train.run(spec, run_dir, log=lambda line: None)
    return run_dir


def module_state(checkpoint, team):
    """A checkpoint's module weights (numpy), read without the Algorithm."""
    return checkpoints.load(checkpoint).policies[team].load_module().get_state()


def assert_same_weights(state, expected):
    weights = [key for key in expected if key not in train.FRESH_BUFFERS]
    assert weights and all(key in state for key in weights)
    for key in weights:
        np.testing.assert_array_equal(np.asarray(state[key]), np.asarray(expected[key]), key)


# ---- --resume -------------------------------------------------------------------------------
def test_resume_from_a_relative_path_continues_iteration_epsilon_and_metrics(
        cli, tmp_path, monkeypatch):
    spec = spec_file(tmp_path / "spec.json", stop={"iterations": 2}, checkpoint_every=1)
    first = cli("train", spec, "--run-dir", tmp_path / "run")
    assert first.code == 0, first.err
    before = rows(tmp_path / "run")

    monkeypatch.chdir(tmp_path)
    done = cli("train", "--resume", "run", "--iterations", "4")
    assert done.code == 0, done.err
    assert "resuming" in done.out and "at iteration 2 from iter_000002" in done.out
    after = rows(tmp_path / "run")
    assert [r["training_iteration"] for r in after] == [1, 2, 3, 4]
    assert after[:2] == before
    epsilon = [r["epsilon"] for r in after]
    assert epsilon == sorted(epsilon, reverse=True) and epsilon[3] < epsilon[2] < epsilon[1] < 1
    assert [r["env_steps_sampled_lifetime"] for r in after] == [STEPS, 2 * STEPS, 3 * STEPS,
                                                              4 * STEPS]
    assert after[2]["time_total_s"] > after[1]["time_total_s"]  # total time goes on too
    saved = json.loads((tmp_path / "run" / "spec.json").read_text())
    assert saved["stop"] == {"iterations": 4} and saved["checkpoint_every"] == 1
    assert (tmp_path / "run" / "checkpoints" / "iter_000004").is_dir()
    assert len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) == 1 + 4
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["last"]["training_iteration"] == 4
    summary = done.out[done.out.index("{"):done.out.rindex("}") + 1]  # then the report line
    assert json.loads(summary)["run_dir"] == str(tmp_path / "run")

    again = cli("train", "--resume", "run")  # stop iterations=4 is reached: nothing to do
    assert again.code == 2 and not again.ray_started
    assert "has nothing to train: at its last checkpoint (iteration 4" in again.err
    assert "already reached its stop (iterations=4); allowed: a larger total stop" in again.err


def test_resume_of_a_killed_run_trains_the_rows_after_its_last_checkpoint_once(cli, tmp_path):
    run_dir = tmp_path / "run"
    spec = spec_file(tmp_path / "spec.json", stop={"iterations": 3}, checkpoint_every=2)
    assert cli("train", spec, "--run-dir", run_dir).code == 0
    # Killed after iteration 3's row, before its checkpoint, in the middle of a write:
    shutil.rmtree(run_dir / "checkpoints" / "iter_000003")
    (run_dir / "result.json").unlink()
    with (run_dir / "metrics.jsonl").open("a") as handle:
        handle.write('{"training_iteration": 4, "epsil')

    done = cli("train", "--resume", run_dir)  # the spec's stop: iterations=3
    assert done.code == 0, done.err
    after = rows(run_dir)
    assert [r["training_iteration"] for r in after] == [1, 2, 3]
    assert after[2]["env_steps_sampled_lifetime"] == 3 * STEPS
    assert (run_dir / "checkpoints" / "iter_000003").is_dir()
    assert json.loads((run_dir / "result.json").read_text())["last"]["training_iteration"] == 3


def test_a_curriculum_run_resumes_at_its_stage(cli, tmp_path):
    run_dir = tmp_path / "run"
    curriculum = {"schedule": "linear", "start": 1, "batch": 1, "every": 1}
    spec = spec_file(tmp_path / "spec.json", stop={"iterations": 2}, checkpoint_every=1,
                     training={"curriculum": curriculum})
    assert cli("train", spec, "--run-dir", run_dir).code == 0
    assert checkpoints.load(run_dir).n_active == {"predator": 3}  # stage 2 after iteration 2

    done = cli("train", "--resume", run_dir, "--iterations", "4")
    assert done.code == 0, done.err
    after = rows(run_dir)
    assert [r["curriculum/stage"] for r in after] == [0, 1, 2, 3]
    assert [r["curriculum/n_active"] for r in after] == [1, 2, 3, 4]


@pytest.mark.parametrize("args, expected", [
    (["--resume", "{tmp}/nowhere"], "--resume '{tmp}/nowhere' does not exist; allowed: the run "
     "directory of a `marlscale train` run with a checkpoint"),
    (["--resume", "{tmp}"], "is not a `marlscale train` run directory (it has no spec.json)"),
    (["--resume", "{tmp}/fresh"], "--resume '{tmp}/fresh' has no checkpoint (no "
     "checkpoints/iter_*/ with rllib_checkpoint.json): the run was killed before its first "
     "checkpoint; allowed: a run with a checkpoint (set checkpoint_every"),
    (["--resume", "{tmp}/fresh", "--n-agents", "3", "--set", "lr=0.1"],
     "--resume '{tmp}/fresh' is invalid with --n-agents, --set; allowed: --resume RUN_DIR with "
     "a stop flag"),
    (["{tmp}/fresh/spec.json", "--resume", "{tmp}/fresh"],
     "is invalid with spec '{tmp}/fresh/spec.json'"),
    (["--resume", "{tmp}/fresh", "--from-checkpoint", "{tmp}/fresh"],
     "is invalid with --from-checkpoint"),
    (["--resume", "{tmp}/fresh", "--iterations", "0"], "--iterations: 0 is invalid"),
])
def test_resume_errors_name_the_problem_before_ray_starts(cli, tmp_path, args, expected):
    (tmp_path / "fresh").mkdir()  # a run killed before its first checkpoint
    spec_file(tmp_path / "fresh" / "spec.json", stop={"iterations": 2})
    done = cli("train", *[arg.format(tmp=tmp_path) for arg in args])
    assert done.code == 2 and not done.ray_started
    assert expected.format(tmp=tmp_path) in done.err and "Traceback" not in done.err
    if done.err.startswith("usage: "):  # argparse's own errors: its usage, then one line
        assert done.err.splitlines()[-1].startswith("marlscale train: error: argument ")
    else:
        assert done.err.startswith("marlscale: error: ") and done.err.count("\n") == 1
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir()) == ["spec.json"]


# ---- --from-checkpoint ----------------------------------------------------------------------
def test_from_checkpoint_starts_learner_and_env_runner_from_its_weights(source):
    spec = train.TrainSpec.from_dict({**TINY, "seed": 3})
    warm = train.check_warm_start(spec, str(source))
    assert warm.teams == {"predator": "predator"}
    assert warm.checkpoint == source / "checkpoints" / "iter_000002"
    expected = module_state(warm.checkpoint, "predator")
    algo = spec.algorithm_config().build_algo()
    try:
        learner = algo.learner_module("predator")
        fresh = learner.get_state()
        assert not np.array_equal(fresh["agent.embedding.blocks.0"],
                                  expected["agent.embedding.blocks.0"])
        warm.apply(algo)
        state = learner.get_state()
        assert_same_weights(state, expected)
        assert any(key.startswith("target_") for key in state)  # targets come along
        assert float(state["epsilon"]) == 1.0 and int(state["num_updates"]) == 0  # fresh
        assert float(expected["epsilon"]) < 1.0 and int(expected["num_updates"]) > 0
        runner = algo.env_runner.module["predator"].get_state()  # syncs the agent network
        assert_same_weights(runner, {k: v for k, v in expected.items()
                                     if not k.startswith(tuple(LEARNER_ONLY))})
    finally:
        algo.stop()


def test_train_from_a_relative_checkpoint_and_team_records_its_source(cli, source, tmp_path,
                                                                      monkeypatch):
    run_dir = tmp_path / "run"
    monkeypatch.chdir(source.parent)
    # learning_starts beyond iteration 1: its checkpoint holds the starting weights
    spec = spec_file(tmp_path / "spec.json", stop={"iterations": 1},
                     training={"learning_starts": 500}, seed=4)
    done = cli("train", spec, "--from-checkpoint", "run:predator", "--run-dir", run_dir)
    assert done.code == 0, done.err
    saved = json.loads((run_dir / "spec.json").read_text())
    assert saved["from_checkpoint"] == {
        "checkpoint": str(source / "checkpoints" / "iter_000002"),
        "teams": {"predator": "predator"}}
    assert_same_weights(module_state(run_dir, "predator"),
                        module_state(source, "predator"))
    assert rows(run_dir)[0]["epsilon"] > rows(source)[-1]["epsilon"]  # epsilon starts fresh

    assert cli("train", "--resume", run_dir, "--iterations", "2").code == 0
    resumed = json.loads((run_dir / "spec.json").read_text())
    assert resumed == {**saved, "stop": {"iterations": 2}}  # still says where it started


@pytest.fixture(scope="module")
def battle_checkpoint(ray_local, tmp_path_factory):
    """An untrained battle checkpoint (red team, qmix N=4, hidden 32)."""
    path = tmp_path_factory.mktemp("battle") / "ckpt"
    spec = train.TrainSpec.from_dict({**TINY, "env": "battle"})
    algo = spec.algorithm_config().build_algo()
    try:
        algo.save_to_path(str(path))
    finally:
        algo.stop()
    return path


ASKS = "the run asks for {}, hidden=32, embedding_dim=16, mean_action_hidden=32, " \
       "mixing_embed_dim=32, hypernet_embed=64"
HAS = "its predator module is qmix, N=4, hidden=32, embedding_dim=16, mean_action_hidden=32, " \
      "mixing_embed_dim=32, hypernet_embed=64; "
SAME = "; allowed: a checkpoint of the same algorithm and network sizes"


def test_from_checkpoint_at_another_n_keeps_the_network_and_grows_or_cuts_the_slots(
        cli, source, tmp_path):
    """`--n-agents N2` continues the N=4 policy at N2: the shared network as trained, slots
    0..min(4, N2)-1 as trained, new slots at the mean of the trained ones (online and target)."""
    expected = checkpoints.load(source).policies["predator"].load_module()
    for n in (9, 2):
        run_dir = tmp_path / f"n{n}"
        done = cli("train", spec_file(tmp_path / "spec.json", stop={"iterations": 1},
                                      training={"learning_starts": 500}),
                   "--from-checkpoint", source, "--n-agents", n, "--run-dir", run_dir)
        assert done.code == 0, done.err
        module = checkpoints.load(run_dir).policies["predator"].load_module()
        assert module.n_agents == n
        for net in ("agent", "target_agent"):
            ours, theirs = getattr(module, net), getattr(expected, net)
            table, trained = ours.embedding.weight.detach(), theirs.embedding.weight.detach()
            keep = min(n, 4)
            np.testing.assert_array_equal(table[:keep], trained[:keep])
            if n > 4:
                np.testing.assert_allclose(table[4:], trained.mean(0).expand(n - 4, -1),
                                           rtol=1e-6)
            np.testing.assert_array_equal(ours.view_encoder.weight.detach(),
                                          theirs.view_encoder.weight.detach())
        w1 = module.mixer.w1_weight.weight.detach()
        np.testing.assert_array_equal(w1[:min(n, 4)],
                                      expected.mixer.w1_weight.weight.detach()[:min(n, 4)])


@pytest.mark.parametrize("args, expected", [
    (["--n-agents", "300"], ["n_agents=300 is invalid"]),  # map 14 cannot hold them
    (["--algorithm", "vdn"], [HAS + ASKS.format("vdn, N=4") + SAME]),
    (["--set", "hidden=64"], [HAS, "the run asks for qmix, N=4, hidden=64", SAME]),
    (["--algorithm", "mfqmix"], [HAS, "the run asks for mfqmix, N=4, hidden=32",
                                 "mean_action=neighbour" + SAME]),
    (["--from-checkpoint", "{battle}"],
     ["--from-checkpoint '{battle}' is a checkpoint of battle; allowed: a checkpoint of "
      "adversarial_pursuit"]),
    (["--from-checkpoint", "{source}:prey"],
     ["--from-checkpoint '{ckpt}':prey is invalid: the checkpoint holds no team 'prey'; "
      "allowed: predator"]),
    (["--opponent", "learned"],
     ["--from-checkpoint '{ckpt}' holds no team 'prey' (it holds predator); allowed: a "
      "checkpoint with every team the run trains (predator, prey)"]),
    (["--from-checkpoint", "{tmp}"], ["--from-checkpoint '{tmp}' is not a checkpoint"]),
    (["--from-checkpoint", "{tmp}/nowhere"], ["--from-checkpoint '{tmp}/nowhere' does not "
                                              "exist"]),
    (["{tmp}/grid.json"], ["--from-checkpoint '{ckpt}': its predator module takes state of "
                           "shape (8, 8, ", "the run's predator team has (4, 4, "]),
])
def test_from_checkpoint_that_does_not_fit_fails_before_ray_naming_both_sides(
        cli, source, battle_checkpoint, tmp_path, args, expected):
    spec_file(tmp_path / "spec.json")
    spec_file(tmp_path / "grid.json", env_config={"state_grid": 4})
    names = {"tmp": tmp_path, "source": source, "battle": battle_checkpoint,
             "ckpt": source / "checkpoints" / "iter_000002"}
    args = [arg.format(**names) for arg in args]
    if not args[0].endswith(".json"):
        args = [tmp_path / "spec.json", *args]
    if "--from-checkpoint" not in args:
        args += ["--from-checkpoint", source]
    done = cli("train", *args, "--run-dir", tmp_path / "run")
    assert done.code == 2 and not done.ray_started, done.err
    assert done.err.startswith("marlscale: error: ") and done.err.count("\n") == 1
    for text in expected:
        assert text.format(**names) in done.err
    assert "Traceback" not in done.err and "size mismatch" not in done.err
    assert not (tmp_path / "run").exists()
