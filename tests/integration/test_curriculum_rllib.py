"""Incremental learning inside real RLlib training: on schedule in every EnvRunner, in every
result row, through a checkpoint restore, with embeddings started at the trained mean."""

import os
import signal
import time

import numpy as np
import pytest
import torch
from marlscale import keys
from marlscale.algorithms import replay
from marlscale.algorithms.algorithm import TeamQ
from marlscale.runspec import TrainSpec

pytestmark = pytest.mark.integration


def build(curriculum, num_env_runners=0):
    return TrainSpec.from_dict({
        "env_config": {"n_agents": 6, "map_size": 14, "max_cycles": 30},
        "training": {"algorithm": "mfqmix", "rollout_length": 20, "learning_starts": 20,
                     "batch_size": 8, "hidden": 32, "replay_capacity": 500,
                     "curriculum": curriculum},
        "resources": {"num_env_runners": num_env_runners},
        "seed": 5,
    }).algorithm_config().build_algo()


def active_counts(algo):
    """n_active of the predator team in every env of every EnvRunner (local or remote)."""
    if algo.config.num_env_runners == 0:
        return [env.get_active("predator") for env in algo.env_runner.team_envs]
    return [n for per_runner in algo.env_runner_group.foreach_env_runner(
        lambda r: [env.get_active("predator") for env in r.team_envs], local_env_runner=False)
        for n in per_runner]


def embeddings(algo):
    return algo.learner_module("predator").agent.embedding.weight


def test_linear_curriculum_grows_on_schedule_and_survives_a_restore(ray_local, tmp_path):
    algo = build({"schedule": "linear", "start": 2, "batch": 2, "every": 2,
                  "embedding_init": "mean"})
    try:
        assert active_counts(algo) == [2]
        rows = []
        for _ in range(3):
            result = algo.train()  # each row reports the stage its iteration trained with
            rows.append((result["curriculum"]["stage"], result["curriculum"]["n_active"]))
        assert rows == [(0, 2), (0, 2), (1, 4)]
        assert active_counts(algo) == [4] and algo.curriculum.stage == 1
        algo.save_to_path(str(tmp_path / "ckpt"))
        stage, state = algo.curriculum.stage, algo.curriculum.get_state()
    finally:
        algo.stop()
    restored = TeamQ.from_checkpoint(str(tmp_path / "ckpt"))
    try:
        assert restored.curriculum.stage == stage and restored.curriculum.get_state() == state
        assert active_counts(restored) == [4]  # the env runners follow the restored stage
        result = restored.train()  # iteration 4: stage 1 -> grows to stage 2 afterwards
        assert result["training_iteration"] == 4
        assert (result["curriculum"]["stage"], result["curriculum"]["n_active"]) == (1, 4)
        assert active_counts(restored) == [6] and restored.curriculum.stage == 2
    finally:
        restored.stop()


def test_new_agents_start_at_the_mean_embedding_of_the_trained_ones(ray_local):
    algo = build({"schedule": "linear", "start": 3, "batch": 3, "every": 1,
                  "embedding_init": "mean"})
    try:
        algo.train()  # stage 0 -> 1 after the first iteration
        weight = embeddings(algo).detach()
        expected = weight[:3].mean(dim=0)
        for slot in range(3, 6):
            assert torch.allclose(weight[slot], expected, atol=1e-6)
        target = algo.learner_module("predator").target_agent
        target_weight = target.embedding.weight.detach()  # the target net's own mean
        assert torch.allclose(target_weight[3], target_weight[:3].mean(dim=0), atol=1e-6)
    finally:
        algo.stop()


def test_initialised_embeddings_are_left_as_they_were(ray_local):
    algo = build({"schedule": "linear", "start": 3, "batch": 3, "every": 1})
    try:
        initial = embeddings(algo).detach().clone()
        algo.train()
        assert torch.equal(embeddings(algo).detach()[3:], initial[3:])
    finally:
        algo.stop()


def test_remote_env_runners_follow_the_curriculum(ray_local):
    algo = build({"schedule": "linear", "start": 1, "batch": 5, "every": 1}, num_env_runners=1)
    try:
        assert active_counts(algo) == [1]
        result = algo.train()
        assert result["curriculum"]["n_active"] == 1
        assert active_counts(algo) == [6]
        episodes = algo.evaluate_greedy(1)["predator"]
        assert episodes["n_active"] == 6  # the evaluation env follows the training envs
    finally:
        algo.stop()


def test_a_recreated_env_runner_gets_the_current_stage(ray_local):

    spec = TrainSpec.from_dict({
        "env_config": {"n_agents": 6, "map_size": 14, "max_cycles": 30},
        "training": {"algorithm": "qmix", "rollout_length": 20, "learning_starts": 20,
                     "batch_size": 8, "hidden": 32, "replay_capacity": 500,
                     "curriculum": {"schedule": "linear", "start": 2, "batch": 2,
                                    "every": 100}},
        "resources": {"num_env_runners": 1},
        "seed": 5,
    })
    config = spec.algorithm_config().fault_tolerance(restart_failed_env_runners=True)
    algo = config.build_algo()
    try:
        algo.train()
        assert active_counts(algo) == [2]
        pid_of = lambda runner: __import__("os").getpid()  # noqa: E731
        (old_pid,) = algo.env_runner_group.foreach_env_runner(pid_of, local_env_runner=False)
        os.kill(old_pid, signal.SIGKILL)  # Ray restarts it with a fresh env: all 6 active
        deadline = time.time() + 180  # the restart takes seconds; longer on a loaded machine
        new_pids = []
        while time.time() < deadline and new_pids in ([], [old_pid]):
            algo.train()  # RLlib's fault tolerance restores the runner between iterations
            new_pids = algo.env_runner_group.foreach_env_runner(pid_of, local_env_runner=False)
        assert len(new_pids) == 1 and new_pids != [old_pid]  # a new process, by RLlib
        assert algo.curriculum.stage == 0 and active_counts(algo) == [2]
    finally:
        algo.stop()


def build_with(algorithm, curriculum, **env):
    return TrainSpec.from_dict({
        "env_config": {"n_agents": 6, "map_size": 14, "max_cycles": 30, **env},
        "training": {"algorithm": algorithm, "rollout_length": 20, "learning_starts": 20,
                     "batch_size": 8, "hidden": 32, "replay_capacity": 500,
                     "curriculum": curriculum},
        "seed": 5,
    }).algorithm_config().build_algo()


def test_reward_scope_active_feeds_the_trained_agents_reward_to_the_replay(ray_local):
    """IQL on the agents' own rewards (`agent_reward`, stored with the next observation) with
    2 of 6 predators trained: every step's replay reward is the 2 trained agents' sum, while
    the episodes still log the whole team's return."""
    algo = build_with("iql", {"schedule": "linear", "start": 2, "batch": 2, "every": 100,
                              "reward_scope": "active"}, reward_mode="individual")
    try:
        assert algo.config.team_env_config.reward_scope == "active"
        sample = algo.env_runner.collect(300)
        for chunk in sample.chunks["predator"]:
            own = chunk["obs"][keys.AGENT_REWARD]  # [T + 1, >= 2]: row t + 1 holds step t's
            np.testing.assert_allclose(chunk[replay.REWARD], own[1:, :2].sum(axis=1),
                                       atol=1e-6)
        # The env leaves the random agents out (test_team_env.py checks it step by step);
        # the episodes still log the whole team, which their penalties pull apart.
        episodes = [e for e in sample.episodes if e["team"] == "predator"]
        assert any(e[keys.RETURN_PER_AGENT] * 6 != pytest.approx(
            e[keys.ACTIVE_RETURN_PER_AGENT] * 2) for e in episodes)
    finally:
        algo.stop()


def test_inactive_policy_agents_act_greedily_with_no_replay_columns_and_no_gradient(ray_local):
    algo = build_with("mfqmix", {"schedule": "linear", "start": 2, "batch": 2, "every": 100,
                                 "inactive": "policy"})
    try:
        env = algo.env_runner.team_envs[0]
        assert env.acting_slots("predator") == (6, 2)
        module = algo.env_runner.module["predator"]
        obs, _ = env.reset(seed=1)
        batch = {k: torch.from_numpy(np.repeat(v[None], 16, axis=0))
                 for k, v in obs["predator"].items()}
        module.epsilon.fill_(1.0)  # the trained slots always explore; the others never do
        acted = module.act(batch, True, torch.Generator().manual_seed(0), 6, 2)
        greedy = module.greedy_actions(batch)
        assert torch.equal(acted[:, 2:], greedy[:, 2:])
        assert not torch.equal(acted[:, :2], greedy[:, :2])
        initial = embeddings(algo).detach().clone()
        for _ in range(3):
            result = algo.train()
        assert result["curriculum"]["n_active"] == 2
        stored = algo.replays["predator"]
        assert stored.actions.width == stored.stored_width(2) == 2  # no columns for slots 2..5
        assert set(stored.width[:len(stored)].tolist()) <= {0, 2}
        weight = embeddings(algo).detach()
        assert torch.equal(weight[2:], initial[2:])  # no gradient reached the untrained slots
        assert not torch.equal(weight[:2], initial[:2])
    finally:
        algo.stop()
