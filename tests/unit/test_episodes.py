"""The one episode loop (`marlscale.episodes`), no Ray: seeding, epsilon, random sides, hooks,
and how games are split over EnvRunners."""

import numpy as np
import pytest
import torch
from marlscale import keys
from marlscale.algorithms.config import module_config
from marlscale.algorithms.settings import TeamQSettings
from marlscale.envs import MagentTeamEnv
from marlscale.episodes import Game, episode_seed, play_episode, play_spread, share
from marlscale.models.team_module import TeamQModule

ENV = {"game": "battle", "n_agents": 4, "map_size": 14, "max_cycles": 12,
       "opponent": "learned", "seed": 0}


def env():
    return MagentTeamEnv(ENV)


def module(env, team="red"):
    torch.manual_seed(0)
    return TeamQModule(observation_space=env.observation_spaces[team],
                       action_space=env.action_spaces[team],
                       model_config=module_config("qmix", TeamQSettings()))


def trajectory(env, game, policies, n_active):
    """Every step's positions of both teams, and the episode."""
    steps = []

    def record(env, step, infos):
        steps.append([team["positions"].tolist() for team in env.snapshot()["teams"]])

    return steps, play_episode(env, game, policies, n_active, on_step=record)


def test_episode_seeds_are_distinct_reproducible_and_in_range():
    seeds = [episode_seed(3, i) for i in range(100)]
    assert seeds == [episode_seed(3, i) for i in range(100)]
    assert len(set(seeds)) == 100 and all(0 <= s < 2**31 - 1 for s in seeds)
    assert episode_seed(4, 0) != episode_seed(3, 0)


def test_the_same_seed_plays_the_same_episode_in_any_env_and_another_seed_another():
    first = env()
    policy = module(first)
    policies, n_active = {"red": policy}, {"red": 4}
    game = Game(index=0, sides={"red": "red", "blue": None}, seed=11, epsilon=0.3)
    steps, episode = trajectory(first, game, policies, n_active)
    trajectory(first, Game(index=1, sides=game.sides, seed=5), policies, n_active)
    # again in the used env, and in a fresh env built with another default seed
    again_steps, again = trajectory(first, game, policies, n_active)
    other_env = MagentTeamEnv({**ENV, "seed": 99})
    fresh_steps, fresh = trajectory(other_env, game, policies, n_active)
    assert again_steps == steps == fresh_steps
    assert again.metrics == episode.metrics == fresh.metrics
    other_steps, _ = trajectory(first, Game(index=0, sides=game.sides, seed=12, epsilon=0.3),
                                policies, n_active)
    assert other_steps != steps


def test_exploration_leaves_the_modules_own_epsilon_as_it_was():
    """On an EnvRunner the module's epsilon is training's: an evaluation must not change it."""
    played = env()
    policy = module(played)
    policy.epsilon.fill_(0.7)
    seen = []
    act = policy.act
    policy.act = lambda *args, **kwargs: seen.append(float(policy.epsilon)) or act(*args, **kwargs)
    episode = play_episode(played, Game(index=0, sides={"red": "red", "blue": "red"}, seed=1,
                                        epsilon=0.25), {"red": policy}, {"red": 4})
    assert float(policy.epsilon) == pytest.approx(0.7)
    # both sides explored with the game's epsilon, one call each per step
    assert len(seen) == 2 * episode.steps and seen == pytest.approx([0.25] * len(seen))

    def fail(env, step, infos):
        if step == 3:
            raise RuntimeError("a hook failed")

    with pytest.raises(RuntimeError, match="a hook failed"):
        play_episode(played, Game(index=0, sides={"red": "red", "blue": None}, seed=1,
                                  epsilon=0.5), {"red": policy}, {"red": 4}, on_step=fail)
    assert float(policy.epsilon) == pytest.approx(0.7)
    seen.clear()
    play_episode(played, Game(index=0, sides={"red": "red", "blue": None}, seed=1),
                 {"red": policy}, {"red": 4})
    assert float(policy.epsilon) == pytest.approx(0.7)  # greedy: never touched
    assert seen == pytest.approx([0.7] * len(seen))


def test_a_random_side_moves_every_agent_at_random_and_a_policy_its_active_ones():
    played = env()
    policy = module(played)
    calls = []
    act = policy.act
    policy.act = lambda obs, *args: calls.append(obs[keys.ACTIVE].numpy().copy()) \
        or act(obs, *args)
    all_random = play_episode(played, Game(index=0, sides={"red": None, "blue": None}, seed=2),
                              {}, {})
    assert not calls and set(all_random.metrics) == {"red", "blue"}
    assert all_random.metrics["red"][keys.N_ACTIVE] == 0  # the loop's rng moves every slot;
    # the policy controls none (the env counts them all as active: it moves none itself)
    mixed = play_episode(played, Game(index=0, sides={"red": "red", "blue": None}, seed=2),
                         {"red": policy}, {"red": 2})
    assert len(calls) == mixed.steps
    assert all((active[0] == [1, 1, 0, 0]).all() for active in calls)  # the other 2: the env's
    assert mixed.metrics["red"][keys.N_ACTIVE] == 2 and mixed.metrics["blue"][keys.N_ACTIVE] == 0


def test_on_step_is_called_after_the_reset_and_after_every_step():
    played = env()
    calls = []
    episode = play_episode(played, Game(index=0, sides={"red": None, "blue": None}, seed=3), {},
                           {}, on_step=lambda e, step, infos: calls.append((step, e.elapsed_steps,
                                                                           set(infos))))
    assert [c[0] for c in calls] == list(range(episode.steps + 1))
    assert all(step == elapsed for step, elapsed, _ in calls)
    assert calls[-1][2] == {"red", "blue"} and episode.steps == episode.metrics["red"]["length"]
    assert episode.env_s > 0


def test_every_game_goes_to_exactly_one_remote_runner_and_the_local_one_plays_all():
    games = [Game(index=i, sides={}, seed=i) for i in range(7)]
    shares = [share(games, worker, 3) for worker in (1, 2, 3)]
    assert sorted(g.index for s in shares for g in s) == list(range(7))
    assert [g.index for g in shares[1]] == [1, 4]
    assert share(games, 0, 0) == share(games, None, 0) == games


class FakeGroup:
    """An EnvRunnerGroup's `foreach_env_runner` over runners that are just worker indices;
    `lost`: runners whose results a failure drops."""

    def __init__(self, num_runners, lost=()):
        self.workers = [type("Runner", (), {"worker_index": i})()
                        for i in (range(1, num_runners + 1) if num_runners else [0])]
        self.lost = lost

    def foreach_env_runner(self, func, local_env_runner):
        assert local_env_runner == (self.workers[0].worker_index == 0)
        return [func(w) for w in self.workers if w.worker_index not in self.lost]


def _play(runner, mine):
    return [{"index": g.index, "runner": runner.worker_index} for g in mine]


def test_play_spread_returns_every_result_in_game_order_or_says_what_was_lost():
    games = [Game(index=i, sides={}, seed=i) for i in range(5)]
    spread = play_spread(FakeGroup(2), games, _play, 2)
    assert [r["index"] for r in spread] == list(range(5))
    assert [r["runner"] for r in spread] == [1, 2, 1, 2, 1]
    assert {r["runner"] for r in play_spread(FakeGroup(0), games, _play, 0)} == {0}
    with pytest.raises(RuntimeError, match="2 of 5 episodes were lost with a failed EnvRunner"):
        play_spread(FakeGroup(2, lost=(2,)), games, _play, 2)


def test_rollout_plays_random_episodes_with_their_own_seeds_and_times_the_env():
    from marlscale.envs import TeamEnvConfig
    from marlscale.rollout import play_episodes

    config = TeamEnvConfig.from_dict({"game": "adversarial_pursuit", "n_agents": 4,
                                      "max_cycles": 10, "seed": 4})
    result = play_episodes(config, 2)
    assert result["env_steps"] == 20 and result["agent_steps_per_s"] > 0
    assert [set(e) for e in result["episodes"]] == [{"predator"}, {"predator"}]
    again = play_episodes(config, 2)
    assert again["episodes"] == result["episodes"]
    assert np.isfinite(result["episodes"][0]["predator"][keys.RETURN])
