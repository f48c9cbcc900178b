"""The team envs: spaces, counts, determinism, deaths, masks, mean actions, overrides."""

import numpy as np
import pytest
from conftest import random_actions
from marlscale import keys
from marlscale.envs import MagentTeamEnv, TeamEnvConfig
from marlscale.mean_field import neighbour_mean_actions
from ray.rllib.utils.pre_checks.env import check_multiagent_environments
from test_mean_field import brute_force

GAMES = ["adversarial_pursuit", "battle"]
BATTLE_MOVES = {0: (0, -2), 1: (-1, -1), 2: (0, -1), 3: (1, -1), 4: (-2, 0), 5: (-1, 0), 6: (0, 0),
                7: (1, 0), 8: (2, 0), 9: (-1, 1), 10: (0, 1), 11: (1, 1), 12: (0, 2)}
BATTLE_STAY = 6


def engine_view(env, team_index):
    """(slots, positions) of a team's alive agents, straight from the engine."""
    team = env.teams[team_index]
    return team.engine_slots, env.engine.get_pos(team.handle)


def charge(env) -> np.ndarray:
    """Scripted red battle policy: attack an adjacent blue, else step towards the nearest."""
    red_slots, red_pos = engine_view(env, 0)
    _, blue_pos = engine_view(env, 1)
    base, view2attack = env.engine.get_view2attack(env.teams[0].handle)
    actions = np.full(env.teams[0].n, BATTLE_STAY)
    for slot, (x, y) in zip(red_slots, red_pos):
        if not len(blue_pos):
            break
        dx, dy = (blue_pos - (x, y)).T
        target = np.argmin(dx * dx + dy * dy)
        dx, dy = int(dx[target]), int(dy[target])
        if max(abs(dx), abs(dy)) <= 1:
            actions[slot] = base + view2attack[6 + dy, 6 + dx]
        else:
            actions[slot] = min(BATTLE_MOVES, key=lambda a: (dx - BATTLE_MOVES[a][0]) ** 2
                                + (dy - BATTLE_MOVES[a][1]) ** 2)
    return actions


@pytest.mark.parametrize("game", GAMES)
@pytest.mark.parametrize("opponent", ["random", "learned"])
def test_rllib_env_checker_passes(game, opponent):
    env = MagentTeamEnv({"game": game, "n_agents": 5, "opponent": opponent, "seed": 0})
    check_multiagent_environments(env)
    expected = {"adversarial_pursuit": ["predator", "prey"], "battle": ["red", "blue"]}[game]
    assert env.possible_agents == (expected if opponent == "learned" else expected[:1])


@pytest.mark.parametrize("game", GAMES)
@pytest.mark.parametrize("n", [1, 5, 12, 25, 64])
def test_exact_agent_counts(game, n):
    env = MagentTeamEnv({"game": game, "n_agents": n, "opponent": "learned", "seed": n})
    obs, _ = env.reset()
    counts = TeamEnvConfig(game=game, n_agents=n).team_counts
    for team, count in zip(env.teams, counts):
        assert env.engine.get_num(team.handle) == count
        assert obs[team.name][keys.VIEWS].shape[0] == count
        assert obs[team.name][keys.ALIVE].sum() == count
    assert env.alive_counts() == dict(zip(env.possible_agents, counts))


@pytest.mark.parametrize("game", GAMES)
def test_dtypes_and_shapes(game):
    env = MagentTeamEnv({"game": game, "n_agents": 12, "opponent": "learned",
                         "reward_mode": "individual", "seed": 3, "state_grid": 6})
    obs, _ = env.reset()
    rng = np.random.default_rng(0)
    for step in range(20):
        for name, team_obs in obs.items():
            assert env.observation_spaces[name].contains(team_obs), (step, name)
            n, a = env.action_spaces[name].shape[0], int(env.action_spaces[name].nvec[0])
            assert team_obs[keys.VIEWS].dtype == np.uint8 and team_obs[keys.VIEWS].ndim == 4
            assert team_obs[keys.VIEWS].shape[0] == n
            assert team_obs[keys.ALIVE].dtype == team_obs[keys.ACTIVE].dtype == np.uint8
            assert team_obs[keys.NEIGHBOUR_MEAN_ACTION].shape == (n, a)
            assert team_obs[keys.NEIGHBOUR_MEAN_ACTION].dtype == np.float32
            assert team_obs[keys.TEAM_MEAN_ACTION].shape == (a,)
            assert team_obs[keys.STATE].shape == (6, 6, 5)
            assert team_obs[keys.STATE].dtype == np.uint8
            assert team_obs[keys.AGENT_REWARD].shape == (n,)
        obs, rewards, *_ = env.step(random_actions(env, rng))
        for name in obs:  # the per-agent vector and the team reward agree
            assert obs[name][keys.AGENT_REWARD].sum() == pytest.approx(rewards[name], abs=1e-4)
    views = {"adversarial_pursuit": (10, 10, 5), "battle": (13, 13, 5)}[game]
    assert obs[env.possible_agents[0]][keys.VIEWS].shape[1:] == views


def test_views_are_quantized_magent2_values():
    env = MagentTeamEnv({"game": "battle", "n_agents": 12, "seed": 1})
    env.reset()
    rng = np.random.default_rng(1)
    for _ in range(30):
        obs, *_ = env.step(random_actions(env, rng))
    slots, _ = engine_view(env, 0)
    raw, _ = env.engine.get_observation(env.teams[0].handle)
    np.testing.assert_allclose(obs["red"][keys.VIEWS][slots] / 255.0, raw, atol=1 / 510 + 1e-7)


@pytest.mark.parametrize("game", GAMES)
def test_same_seed_same_first_50_steps(game):
    def trace(seed):
        env = MagentTeamEnv({"game": game, "n_agents": 12, "opponent": "random", "seed": seed})
        obs, _ = env.reset()
        rng = np.random.default_rng(7)
        out = [obs]
        for _ in range(50):
            obs, rewards, *_ = env.step(random_actions(env, rng))
            out.append((obs, rewards))
        return out

    def same(a, b):
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return np.array_equal(a, b)

    assert same(trace(5), trace(5))
    assert not same(trace(5), trace(6))


def test_reset_seed_overrides_config_seed_and_reproduces_the_map():
    env = MagentTeamEnv({"n_agents": 5, "seed": 1})
    first = env.reset(seed=11)[0]["predator"][keys.STATE]
    env.reset()  # the stream moves on: another map
    again = env.reset(seed=11)[0]["predator"][keys.STATE]
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("opponent", ["learned", "random"])
def test_battle_to_the_last_agent(opponent):
    """A full battle episode with deaths: masks, zeroed views, metrics, wipe-out."""
    env = MagentTeamEnv({"game": "battle", "n_agents": 6, "n_opponents": 3, "opponent": opponent,
                         "max_cycles": 400, "seed": 2})
    obs, _ = env.reset()
    n_blue = 3
    seen_partial_death = False
    for _ in range(400):
        actions = {"red": charge(env)}
        if opponent == "learned":
            actions["blue"] = np.full(n_blue, BATTLE_STAY)
        obs, rewards, terminated, truncated, infos = env.step(actions)
        for team_index, name in enumerate(obs):
            alive = obs[name][keys.ALIVE].astype(bool)
            slots, _ = engine_view(env, team_index)
            assert sorted(slots) == list(np.flatnonzero(alive))  # mask == engine's survivors
            assert not obs[name][keys.VIEWS][~alive].any()  # the dead see nothing
            assert not obs[name][keys.NEIGHBOUR_MEAN_ACTION][~alive].any()
        if opponent == "learned" and 0 < obs["blue"][keys.ALIVE].sum() < n_blue:
            seen_partial_death = True
        if terminated["__all__"] or truncated["__all__"]:
            break
    assert terminated["__all__"] and terminated["red"] and not truncated["__all__"]
    episode = infos["red"][keys.EPISODE]
    assert episode["kills"] == n_blue and episode[keys.ALIVE_AT_END] >= 1
    assert env.alive_counts()["blue"] == 0 and episode[keys.LENGTH] < 400
    if opponent == "learned":
        assert seen_partial_death
        assert not obs["blue"][keys.ALIVE].any() and not obs["blue"][keys.VIEWS].any()
        assert infos["blue"][keys.EPISODE]["deaths"] == n_blue
        assert infos["blue"][keys.EPISODE][keys.ALIVE_AT_END] == 0
    # Five kills' worth of reward at least: the engine's kill reward reaches the team.
    assert episode[keys.RETURN] > 5 * n_blue - 0.5 * env.elapsed_steps
    # The env is reusable after a wipe-out.
    obs, _ = env.reset()
    assert obs["red"][keys.ALIVE].all()


@pytest.mark.parametrize("game", GAMES)
def test_neighbour_mean_actions_in_env_match_brute_force(game):
    env = MagentTeamEnv({"game": game, "n_agents": 30, "seed": 4, "neighbourhood_fraction": 0.1})
    name = env.possible_agents[0]
    rng = np.random.default_rng(4)
    obs, _ = env.reset()
    assert not obs[name][keys.NEIGHBOUR_MEAN_ACTION].any()  # nothing happened before reset
    for _ in range(5):
        actions = random_actions(env, rng)
        obs, *_ = env.step(actions)
    slots, positions = engine_view(env, 0)
    executed = actions[name]
    n_actions = env.action_spaces[name].nvec[0]
    expected = brute_force(positions, executed[slots], n_actions, 0.1)
    np.testing.assert_allclose(obs[name][keys.NEIGHBOUR_MEAN_ACTION][slots], expected, atol=1e-6)
    counts = np.bincount(executed[slots], minlength=n_actions) / len(slots)
    np.testing.assert_allclose(obs[name][keys.TEAM_MEAN_ACTION], counts, atol=1e-6)
    # and the env's own function gives the same, whatever the fraction
    np.testing.assert_allclose(
        neighbour_mean_actions(positions, executed[slots], n_actions, 1.0),
        (counts * len(slots) - np.eye(n_actions)[executed[slots]]) / (len(slots) - 1),
        atol=1e-6,
    )


def test_inactive_agents_act_randomly_and_active_ones_obey():
    env = MagentTeamEnv({"game": "battle", "n_agents": 12, "n_active": 4, "seed": 8})
    obs, _ = env.reset()
    assert obs["red"][keys.ACTIVE].tolist() == [1] * 4 + [0] * 8
    _, start = engine_view(env, 0)
    moved = np.zeros(12, dtype=bool)
    for _ in range(10):
        env.step({"red": np.full(12, BATTLE_STAY)})
        slots, now = engine_view(env, 0)
        moved[slots] |= (now != start[slots]).any(1)
        executed = env.teams[0].last_actions
        assert (executed[:4] == BATTLE_STAY).all()
    assert not moved[:4].any()  # obeyed "stay"
    assert moved[4:].sum() >= 6  # random actions moved nearly all the others
    assert not (executed[4:] == BATTLE_STAY).all()

    env.set_active(12)
    obs, *_ = env.step({"red": np.full(12, BATTLE_STAY)})
    assert obs["red"][keys.ACTIVE].all() and env.get_active("red") == 12
    assert (env.teams[0].last_actions == BATTLE_STAY).all()
    with pytest.raises(ValueError, match="n_active=13"):
        env.set_active(13)


def test_reward_scope_active_returns_the_trained_agents_reward_and_logs_the_teams():
    """2 of 10 predators trained, the 8 others random (their attacks into empty cells cost
    the tag penalty). With `reward_scope: active` each step's reward is the 2 trained agents'
    own rewards summed (the per-agent rewards: `agent_reward`); the `team_reward` info and the
    episode's return stay the whole team's. The trained ones tag: they attack every step."""
    config = {"n_agents": 10, "map_size": 16, "max_cycles": 60, "n_active": 2, "seed": 3,
              "reward_mode": "individual"}
    scoped = MagentTeamEnv({**config, "reward_scope": "active"})
    team = MagentTeamEnv(config)
    obs, _ = scoped.reset()
    team.reset()
    attack = scoped.action_spaces["predator"].nvec[0] - 1  # pursuit's last action: attack
    returned, whole, tagged, penalised = 0.0, 0.0, False, False
    for _ in range(60):
        actions = {"predator": np.full(10, attack)}
        obs, reward, terminated, truncated, infos = scoped.step(actions)
        _, team_reward, *_ = team.step(actions)  # the same game, the default scope
        own = obs["predator"][keys.AGENT_REWARD]
        assert reward["predator"] == pytest.approx(float(own[:2].sum()), abs=1e-6)
        assert infos["predator"][keys.TEAM_REWARD] == pytest.approx(float(own.sum()), abs=1e-6)
        assert team_reward["predator"] == pytest.approx(float(own.sum()), abs=1e-6)
        returned += reward["predator"]
        whole += float(own.sum())
        tagged |= bool((own[:2] > 0).any())
        penalised |= bool((own[2:] < 0).any())
        if truncated["__all__"] or terminated["__all__"]:
            break
    assert tagged and penalised and returned != pytest.approx(whole)
    episode = infos["predator"][keys.EPISODE]
    assert episode[keys.RETURN_PER_AGENT] == pytest.approx(whole / 10, abs=1e-5)
    assert episode[keys.ACTIVE_RETURN_PER_AGENT] == pytest.approx(returned / 2, abs=1e-5)


def test_inactive_policy_keeps_the_policys_actions_for_the_untrained_agents():
    config = {"game": "battle", "n_agents": 12, "n_active": 4, "seed": 8}
    policy = MagentTeamEnv({**config, "inactive": "policy"})
    policy.reset()
    assert policy.acting_slots("red") == (12, 4)
    assert MagentTeamEnv(config).acting_slots("red") == (4, 4)
    for _ in range(5):
        policy.step({"red": np.full(12, BATTLE_STAY)})
        assert (policy.teams[0].last_actions == BATTLE_STAY).all()  # none redrawn at random


def test_pursuit_metrics_and_truncation():
    env = MagentTeamEnv({"n_agents": 5, "max_cycles": 40, "seed": 9, "opponent": "learned"})
    env.reset()
    rng = np.random.default_rng(9)
    total = 0.0
    for t in range(40):
        _, rewards, terminated, truncated, infos = env.step(random_actions(env, rng))
        total += rewards["predator"]
        assert truncated["__all__"] == (t == 39) and not terminated["__all__"]
    episode = infos["predator"][keys.EPISODE]
    assert episode[keys.LENGTH] == 40 and episode[keys.RETURN] == pytest.approx(total, abs=1e-3)
    assert episode[keys.RETURN_PER_AGENT] == pytest.approx(total / 5, abs=1e-3)
    assert episode["tags"] == -infos["prey"][keys.EPISODE][keys.RETURN]  # prey: -1 per tag
    assert infos["prey"][keys.EPISODE]["tagged"] == episode["tags"]
    assert infos["predator"][keys.TEAM_REWARD_PER_AGENT] == pytest.approx(
        infos["predator"][keys.TEAM_REWARD] / 5)


@pytest.mark.parametrize("map_override", [None, 120])
def test_state_is_pooled_to_a_fixed_grid(map_override):
    env = MagentTeamEnv({"n_agents": 25, "map_size": map_override, "seed": 0})
    obs, _ = env.reset()
    state = obs["predator"][keys.STATE]
    assert state.shape == (8, 8, 5)
    assert state[0, :, 0].all() and state[:, -1, 0].all()  # border walls in the edge cells
    # presence channels account for every agent
    assert state[..., 1].any() and state[..., 3].any()
    assert (state[..., 2] > 0).sum() == (state[..., 1] > 0).sum()  # hp where predators are


def test_out_of_range_actions_raise():
    env = MagentTeamEnv({"game": "battle", "n_agents": 3, "seed": 0})
    env.reset()
    with pytest.raises(ValueError, match=r"allowed: integers in \[0, 21\)"):
        env.step({"red": np.array([0, 21, 3])})
    with pytest.raises(KeyError, match="no action for team 'red'"):
        env.step({})
