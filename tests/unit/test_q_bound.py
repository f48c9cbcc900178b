"""The divergence check's bound on the agents' Q-values (algorithms/q_bound.py), from the
env's reward settings: per game, team, reward mode and team reward; and the learner's check
on real modules and batches (no Ray)."""

import math

import pytest
import torch
from marlscale import keys
from marlscale.algorithms import replay as rp
from marlscale.algorithms.learner import Q_ABS_MAX, Q_MEAN, split_obs, td_loss
from marlscale.algorithms.q_bound import FACTOR, agent_reward_bound, q_bound
from marlscale.envs.config import TeamEnvConfig
from test_learners import make_module, synthetic_batch


def env(**values) -> TeamEnvConfig:
    return TeamEnvConfig.from_dict(values)


@pytest.mark.parametrize(
    "config, team, team_reward, mixer, reward",
    [
        # pursuit predators: a tag that hits earns 1 + tag_penalty (0.8), one that misses -0.2
        ({"n_agents": 4, "map_size": 18}, 0, "sum", True, 4 * 0.8),
        ({"n_agents": 4, "map_size": 18}, 0, "mean", True, 0.8),
        ({"n_agents": 4, "map_size": 18, "reward_mode": "individual"}, 0, "sum", False, 0.8),
        ({"n_agents": 4, "rewards": {"tag_penalty": -3.0}}, 0, "sum", True, 4 * 3.0),
        ({"n_agents": 4, "rewards": {"tag_penalty": 0.5}}, 0, "sum", True, 4 * 1.5),
        # prey: -1 per tag, and the 4 predators tag at most 4 times a step, one prey or all 8
        ({"n_agents": 4, "map_size": 18, "opponent": "learned"}, 1, "sum", True, 4.0),
        ({"n_agents": 4, "map_size": 18, "opponent": "learned"}, 1, "mean", True, 4 / 8),
        ({"n_agents": 4, "map_size": 18, "opponent": "learned", "reward_mode": "individual"},
         1, "sum", False, 4.0),
        # battle: step -0.005, attack -0.1 + hit 0.2 + kill 5 = 5.095 (dying: -0.1 more)
        ({"game": "battle", "n_agents": 12}, 0, "sum", True, 12 * 5.095),
        ({"game": "battle", "n_agents": 12, "opponent": "learned"}, 1, "mean", True, 5.095),
        ({"game": "battle", "n_agents": 12, "reward_mode": "individual"}, 0, "sum", False,
         5.095),
        ({"game": "battle", "n_agents": 12, "rewards": {"dead_penalty": -20.0}}, 0, "sum",
         True, 12 * 20.105),  # step + attack + dying: -20.105
    ],
)
def test_the_bound_is_the_largest_reward_per_step_the_learner_regresses(
        config, team, team_reward, mixer, reward):
    bound = q_bound(env(**config), team, gamma=0.95, team_reward=team_reward, mixer=mixer)
    assert bound.reward == pytest.approx(reward)
    assert bound.value == pytest.approx(FACTOR * reward / 0.05)
    # individual rewards reach a learner without a mixer only; a mixer regresses the team's
    what = "own reward" if config.get("reward_mode") == "individual" and not mixer else (
        "team reward / N" if team_reward == "mean" else "team reward")
    assert str(bound) == (f"{bound.value:.3g} = 10 x max|{what} per step| {reward:.3g} / "
                          f"(1 - gamma 0.95)")


def test_no_bound_without_discount():
    assert q_bound(env(n_agents=4), 0, gamma=1.0).value == math.inf


def test_the_per_agent_bound_holds_on_played_steps():
    """Random play at high density: every reward an agent gets is within its bound."""
    import numpy as np
    from marlscale.envs import MagentTeamEnv

    for config in ({"n_agents": 6, "map_size": 12, "opponent": "learned", "seed": 0},
                   {"game": "battle", "n_agents": 12, "opponent": "learned", "seed": 0,
                    "max_cycles": 60}):
        config["reward_mode"] = "individual"
        environment, rng, seen = MagentTeamEnv(config), np.random.default_rng(0), [0.0, 0.0]
        environment.reset()
        bounds = [agent_reward_bound(env(**config), team) for team in (0, 1)]
        for _ in range(60):
            actions = {t: rng.integers(0, environment.action_spaces[t].nvec)
                       for t in environment.possible_agents}
            obs, _, _, truncated, _ = environment.step(actions)
            for team, name in enumerate(environment.possible_agents):
                seen[team] = max(seen[team], float(np.abs(obs[name]["agent_reward"]).max()))
            if truncated["__all__"]:
                break
        assert all(0 < s <= b + 1e-6 for s, b in zip(seen, bounds)), (config, seen, bounds)


@pytest.mark.parametrize("algorithm", ["qmix", "iql"])
def test_the_learner_reports_the_largest_q_of_the_agents_in_the_batch(algorithm):
    """q_abs_max: the largest |Q_i(o_i, a_i)| over the agents the loss trains (alive and
    active), not the mixed value: the value the divergence check bounds."""
    module, environment, team = make_module(algorithm)
    batch = synthetic_batch(environment, team, batch_size=16)
    obs, _ = split_obs(batch)
    with torch.no_grad():
        q = module.q_values(obs).gather(-1, batch[rp.ACTIONS].unsqueeze(-1)).squeeze(-1)
    mask = (obs[keys.ALIVE] * obs[keys.ACTIVE]).bool()
    _, stats = td_loss(module, batch, temperature=0.1)
    assert float(stats[Q_ABS_MAX]) == pytest.approx(float(q[mask].abs().max()), rel=1e-6)
    if algorithm == "iql":  # the per-agent mean is the same masked values
        assert float(stats[Q_MEAN]) == pytest.approx(float(q[mask].mean()), rel=1e-5)
