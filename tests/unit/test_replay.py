"""The uint8 replay: one row per env step, next obs = next row, n-step returns, memory."""

import numpy as np
import pytest
from marlscale import keys
from marlscale.algorithms import replay as rp
from marlscale.algorithms.replay import TeamReplay
from marlscale.envs import MagentTeamEnv


def chunk_of(env, team, steps, rng, terminate_last=False):
    obs, _ = env.reset()
    rows = [obs[team]]
    actions, rewards = [], []
    for _ in range(steps):
        action = {t: rng.integers(0, env.action_spaces[t].nvec) for t in env.possible_agents}
        obs, reward, *_ = env.step(action)
        rows.append(obs[team])
        actions.append(action[team])
        rewards.append(reward[team])
    terminated = np.zeros(steps, bool)
    terminated[-1] = terminate_last
    return {"obs": {k: np.stack([r[k] for r in rows]) for k in rows[0]},
            "actions": np.stack(actions), "reward": np.asarray(rewards, np.float32),
            "terminated": terminated}


def test_pursuit_stores_at_most_600_bytes_per_agent_step():
    env = MagentTeamEnv({"game": "adversarial_pursuit", "n_agents": 25})
    buffer = TeamReplay(env.observation_spaces["predator"], 13, 1000)
    assert buffer.obs[keys.VIEWS].dtype == np.uint8
    assert buffer.bytes_per_agent_step <= 600
    # 1M env steps at N=100: documented in docs/algorithms.md
    env100 = MagentTeamEnv({"game": "adversarial_pursuit", "n_agents": 100})
    per_row = TeamReplay(env100.observation_spaces["predator"], 13, 10).nbytes / 10
    assert per_row * 1_000_000 / 2**30 < 60


def test_next_observation_is_the_next_row_and_rewards_align():
    env = MagentTeamEnv({"game": "battle", "n_agents": 6, "seed": 1})
    rng = np.random.default_rng(0)
    chunk = chunk_of(env, "red", 12, rng)
    buffer = TeamReplay(env.observation_spaces["red"], 21, 100, seed=0)
    buffer.add_chunk(chunk)
    assert len(buffer) == 12
    batch = buffer.sample(200, gamma=0.9)
    for b in range(200):
        t = int(np.flatnonzero((chunk["obs"][keys.VIEWS] == batch[keys.VIEWS][b]).all(
            axis=tuple(range(1, 5))))[0])
        next_views = chunk["obs"][keys.VIEWS][t + 1]
        np.testing.assert_array_equal(batch[rp.NEXT + keys.VIEWS][b], next_views)
        np.testing.assert_array_equal(batch[rp.ACTIONS][b], chunk["actions"][t])
        assert batch[rp.REWARD][b] == pytest.approx(chunk["reward"][t])
        assert batch[rp.DISCOUNT][b] == pytest.approx(0.9)


def test_n_step_returns_stop_at_termination_and_chunk_end():
    env = MagentTeamEnv({"game": "adversarial_pursuit", "n_agents": 3, "seed": 2})
    rng = np.random.default_rng(1)
    chunk = chunk_of(env, "predator", 5, rng, terminate_last=True)
    chunk["reward"] = np.array([1.0, 2.0, 3.0, 4.0, 5.0], np.float32)
    buffer = TeamReplay(env.observation_spaces["predator"], 13, 50, seed=0)
    buffer.add_chunk(chunk)
    batch = buffer.sample(300, gamma=0.5, n_step=3)
    expected = {1.0: (1 + 1 + 0.75, 0.125), 2.0: (2 + 1.5 + 1.0, 0.125),
                3.0: (3 + 2 + 1.25, 0.0), 4.0: (4 + 2.5, 0.0), 5.0: (5.0, 0.0)}
    first = {}
    for b in range(300):
        t = int(np.flatnonzero((chunk["obs"][keys.VIEWS] == batch[keys.VIEWS][b]).all(
            axis=(1, 2, 3, 4)))[0])
        first.setdefault(t, (batch[rp.REWARD][b], batch[rp.DISCOUNT][b]))
    for t, (ret, disc) in first.items():
        assert (ret, disc) == pytest.approx(expected[chunk["reward"][t]])


def test_wrap_around_keeps_only_whole_transitions_and_state_round_trips():
    env = MagentTeamEnv({"game": "adversarial_pursuit", "n_agents": 3, "seed": 3})
    rng = np.random.default_rng(2)
    buffer = TeamReplay(env.observation_spaces["predator"], 13, 25, seed=0)
    for _ in range(4):
        buffer.add_chunk(chunk_of(env, "predator", 9, rng))
    assert 0 < len(buffer) <= 24
    state = buffer.get_state()
    other = TeamReplay(env.observation_spaces["predator"], 13, 25, seed=5)
    other.set_state(state)
    a, b = buffer.sample(16, 0.9, 2), other.sample(16, 0.9, 2)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    with pytest.raises(ValueError, match="capacity"):
        buffer.add_chunk(chunk_of(env, "predator", 30, rng))
