"""Every algorithm x game trains 2 iterations on a local 2-CPU Ray; checkpoints round-trip."""

import numpy as np
import pytest
import torch
from marlscale.algorithms import ALGORITHMS
from marlscale.algorithms.algorithm import ENV_STEPS, EVAL_EPISODES, UPDATES, TeamQ
from marlscale.runspec import TrainSpec

pytestmark = pytest.mark.integration

TINY = {"rollout_length": 20, "learning_starts": 20, "batch_size": 8, "hidden": 32,
        "updates_per_env_step": 0.25, "replay_capacity": 500}


def spec(game, algorithm, **extra):
    env_config = {"n_agents": 4, "max_cycles": 30}
    env_config.update(extra.pop("env_config", {}))
    return TrainSpec.from_dict({
        "env": game, "env_config": env_config,
        "training": {"algorithm": algorithm, **TINY, **extra}, "seed": 3,
    })


def q_values(algo):
    """Every learning team's Q-values on one fixed observation, from the learner's module."""
    from marlscale.envs import MagentTeamEnv

    env = MagentTeamEnv(algo.config.team_env_config)
    obs, _ = env.reset(seed=11)
    out = {}
    with torch.no_grad():
        for team, team_obs in obs.items():
            batch = {k: torch.as_tensor(v)[None] for k, v in team_obs.items()}
            out[team] = algo.learner_module(team).q_values(batch).numpy()
    return out


@pytest.mark.parametrize("game", ["adversarial_pursuit", "battle"])
@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_algorithm_trains_two_iterations(ray_local, algorithm, game):
    algo = spec(game, algorithm).algorithm_config().build_algo()
    try:
        for _ in range(2):
            result = algo.train()
        team = algo.config.team_algorithms()
        assert list(team) == [("predator" if game == "adversarial_pursuit" else "red")]
        assert result[ENV_STEPS] == 40 and result[UPDATES] == 10
        assert np.isfinite(result["learners"][next(iter(team))]["td_loss"])
        assert result["replay_bytes"] > 0
    finally:
        algo.stop()


def test_head_to_head_battle_trains_two_teams_with_their_own_algorithms(ray_local):
    algo = spec("battle", "mfqmix", opponent_algorithm="qmix",
                env_config={"opponent": "learned"}).algorithm_config().build_algo()
    try:
        for _ in range(2):
            result = algo.train()
        assert algo.learner_module("red").algorithm == "mfqmix"
        assert algo.learner_module("blue").algorithm == "qmix"
        assert set(algo.replays) == {"red", "blue"}
        for team in ("red", "blue"):
            assert np.isfinite(result["learners"][team]["td_loss"])
        for team in ("red", "blue"):  # one Adam per team, over its own parameters only
            ((_, adam),) = algo.optimizers(team)
            params = {id(p) for group in adam.param_groups for p in group["params"]}
            assert params == {id(p) for p in algo.learner_module(team).parameters()
                              if p.requires_grad}
    finally:
        algo.stop()


def test_checkpoint_round_trip_restores_q_values_counters_epsilon_and_replay(ray_local, tmp_path):
    config = spec("adversarial_pursuit", "mfqmix", checkpoint_replay=True,
                  epsilon_decay_steps=100).algorithm_config()
    algo = config.build_algo()
    try:
        for _ in range(3):
            algo.train()
        path = algo.save_to_path(str(tmp_path / "ckpt"))
        before = q_values(algo)
        counters, epsilon = dict(algo.counters), algo.epsilon
        replay_sample = algo.replays["predator"].sample(8, 0.9)
        continued = algo.train()
    finally:
        algo.stop()
    restored = TeamQ.from_checkpoint(path)
    try:
        after = q_values(restored)
        for team in before:
            np.testing.assert_array_equal(before[team], after[team])
        assert restored.counters == counters and restored.epsilon == epsilon
        module = restored.learner_module("predator")
        assert float(module.epsilon) == pytest.approx(epsilon)
        for p, t in zip(module.agent.parameters(), module.target_agent.parameters()):
            assert p.shape == t.shape
        resampled = restored.replays["predator"].sample(8, 0.9)
        for key in replay_sample:
            np.testing.assert_array_equal(replay_sample[key], resampled[key])
        # it continues from the same point: the next iteration's counters match
        again = restored.train()
        assert again[ENV_STEPS] == continued[ENV_STEPS]
        assert again[UPDATES] == continued[UPDATES]
        assert again["training_iteration"] == continued["training_iteration"]
    finally:
        restored.stop()


def test_remote_env_runner_samples_and_syncs_epsilon(ray_local):
    config = spec("adversarial_pursuit", "qmix", epsilon_decay_steps=40).algorithm_config()
    config.env_runners(num_env_runners=1)
    algo = config.build_algo()
    try:
        algo.train()
        result = algo.train()
        assert result[ENV_STEPS] == 40
        remote_eps = algo.env_runner_group.foreach_env_runner(
            lambda runner: float(runner.module["predator"].epsilon), local_env_runner=False)
        assert remote_eps == [pytest.approx(algo.epsilon)]
        assert algo.evaluate_greedy(1)["predator"]["length"] == 30
    finally:
        algo.stop()


def test_eval_max_cycles_sets_the_greedy_and_random_evaluation_episode_length(ray_local):
    """Ablations over episode length compare returns on evaluation episodes of one length."""
    algo = spec("adversarial_pursuit", "vdn", eval_max_cycles=12).algorithm_config().build_algo()
    try:
        algo.train()
        assert algo.evaluate_greedy(1)["predator"]["length"] == 12
        assert algo.evaluate_greedy(1, random=True)["predator"]["length"] == 12
        assert algo.env_runner.team_envs[0].max_cycles == 30  # training episodes: unchanged
    finally:
        algo.stop()


def test_greedy_evaluation_gives_the_same_figures_on_any_number_of_env_runners(ray_local,
                                                                              tmp_path):
    """Each evaluation episode has its own seed, from the run's count of them: the same weights
    give the same figures played locally and spread over 2 remote EnvRunners (the random level,
    on the latest evaluation's episodes, too), and the count goes on through a checkpoint, so
    the next evaluation plays new episodes."""
    def h2h(num_env_runners):
        config = spec("battle", "qmix", opponent_algorithm="vdn",
                      env_config={"opponent": "learned"}).algorithm_config()
        return config.env_runners(num_env_runners=num_env_runners).build_algo()

    def evaluations(algo):
        return [algo.evaluate_greedy(3), algo.evaluate_greedy(3, random=True),
                algo.evaluate_greedy(3), algo.evaluate_greedy(3, random=True),
                algo.counters[EVAL_EPISODES]]

    algo = h2h(0)
    try:
        algo.train()
        path = algo.save_to_path(str(tmp_path / "ckpt"))
        local = evaluations(algo)
    finally:
        algo.stop()
    spread_algo = h2h(2)
    try:
        spread_algo.restore_from_path(path)
        spread = evaluations(spread_algo)
    finally:
        spread_algo.stop()
    assert spread == local
    greedy, random, _, random_after, played = local
    assert set(greedy) == set(random) == {"red", "blue"} and played == 6
    # other maps (a barely trained greedy team may score the same on them; random play not)
    assert random_after != random
    assert greedy["red"]["n_active"] == 4 and greedy["red"]["length"] <= 30


def test_evaluation_leaves_training_as_it_was(ray_local):
    """Greedy evaluation between iterations (on the remote EnvRunner whose sample is in flight,
    in its own env) changes nothing of training: the same returns and weights as without."""
    def run(eval_interval):
        config = spec("adversarial_pursuit", "qmix", eval_interval=eval_interval,
                      eval_episodes=2).algorithm_config()
        algo = config.env_runners(num_env_runners=1).build_algo()
        try:
            results = [algo.train() for _ in range(3)]
            returns = [r["episodes"]["predator"]["return_per_agent"] for r in results
                       if "episodes" in r]
            epsilon = algo.env_runner_group.foreach_env_runner(
                lambda runner: float(runner.module["predator"].epsilon), local_env_runner=False)
            return results, returns, epsilon, q_values(algo)
        finally:
            algo.stop()

    evaluated, returns, epsilon, q = run(1)
    assert all("evaluation" in r for r in evaluated) and returns
    _, plain_returns, plain_epsilon, plain_q = run(0)
    assert returns == plain_returns and epsilon == plain_epsilon
    np.testing.assert_array_equal(q["predator"], plain_q["predator"])


def test_sampling_alongside_learning_is_one_iteration_behind_and_deterministic(ray_local):
    """sample_ahead: the remote EnvRunner samples iteration i+1 while the learner trains on
    iteration i, so its samples miss exactly one iteration's updates; the update ratio stays
    the configured one, and two runs with the same seed train the same weights."""
    def run(ahead):
        config = spec("adversarial_pursuit", "qmix", sample_ahead=ahead).algorithm_config()
        config.env_runners(num_env_runners=1)
        algo = config.build_algo()
        try:
            lags = [algo.train()["sample_policy_lag"] for _ in range(5)]
            assert algo.counters[ENV_STEPS] == 100 and algo.counters[UPDATES] == 25
            return lags, q_values(algo)
        finally:
            algo.stop()

    lags, q = run(True)
    assert lags == [0, 5, 5, 5, 5]  # 20 steps x 0.25 updates per iteration, from the first
    again_lags, again_q = run(True)
    assert again_lags == lags
    np.testing.assert_array_equal(again_q["predator"], q["predator"])
    turns, _ = run(False)
    assert turns == [0, 0, 0, 0, 0]


def test_the_compute_limit_probe_times_the_bare_network_at_the_learners_shapes(ray_local):
    """`marlscale bench train`'s probe: the learner and the bare agent network timed in the
    same process, the probe's work that of one update's three Q passes and one backward."""
    from marlscale.bench.train import compute_limit

    algo = spec("adversarial_pursuit", "qmix").algorithm_config().build_algo()
    try:
        while algo.counters[UPDATES] == 0:
            algo.train()
        updates = algo.counters[UPDATES]
        limit = compute_limit(algo, rounds=2)
        assert algo.counters[UPDATES] == updates + 2 * 16  # the learner's rounds really ran
        assert limit["agent_samples_per_update"] == 8 * 4
        assert limit["torch_threads"] == torch.get_num_threads()
        # FLOPs of one probe update per agent-sample (views 10x10x5, hidden 32, embedding 16,
        # 13 actions): three forward passes, then the backward pass's weight gradients of
        # the three layers and the input gradients of the two upper ones (the views take none).
        v, h, e, a = 500, 32, 16, 13
        forward = 2 * (v * h + (h + e) * h + h * a)
        backward = 2 * (v * h + 2 * (h + e) * h + 2 * h * a)
        gflop = (3 * forward + backward) * 8 * 4 / 1e9
        seconds = 1 / limit["compute_limit_updates_per_s"]
        assert limit["compute_limit_gflop_per_s"] == pytest.approx(gflop / seconds, rel=0.06)
        assert limit["learner_vs_compute_limit"] == pytest.approx(
            limit["learner_updates_per_s"] / limit["compute_limit_updates_per_s"], rel=0.06)
    finally:
        algo.stop()


def test_bench_changes_turn_each_change_off_and_back_on(ray_local):
    """`marlscale bench train --changes`: each change undone on the live learner trains, and
    leaving the scope restores the change."""
    from marlscale.bench.learner_changes import CHANGES, turned_off

    algo = spec("adversarial_pursuit", "qmix").algorithm_config().build_algo()
    try:
        while algo.counters[UPDATES] == 0:
            algo.train()
        learner = algo.learner_group._learner
        module = learner.module["predator"].unwrapped()
        for change in CHANGES:
            before = {n: p.detach().clone() for n, p in module.agent.named_parameters()}
            with turned_off(change, algo):
                algo.learn(2)
            after = dict(module.agent.named_parameters())
            assert any(not torch.equal(before[n], after[n]) for n in before), change
            assert "online_and_target_q_values" not in vars(module)
            assert not {"postprocess_gradients", "apply_gradients"} & set(vars(learner))
    finally:
        algo.stop()
