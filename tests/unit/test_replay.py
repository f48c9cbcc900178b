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
    env = MagentTeamEnv({"game": "adversarial_pursuit", "n_agents": 25, "seed": 0})
    buffer = TeamReplay(env.observation_spaces["predator"], 13, 1000)
    buffer.add_chunk(chunk_of(env, "predator", 3, np.random.default_rng(0)))
    assert buffer.agent_obs[keys.VIEWS].blocks[0].dtype == np.uint8
    assert buffer.stored_agents == 25
    assert buffer.bytes_per_agent_step <= 600
    assert buffer.nbytes == 1000 * TeamReplay.row_bytes(env.observation_spaces["predator"], 13, 25)
    # 1M env steps at N=100: documented in docs/algorithms.md
    env100 = MagentTeamEnv({"game": "adversarial_pursuit", "n_agents": 100})
    per_row = TeamReplay.row_bytes(env100.observation_spaces["predator"], 13, 100)
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


def staged_chunk(env, team, steps, rng, n_active):
    """A chunk played with the first `n_active` slots active, cut as the EnvRunner cuts it."""
    env.set_active(n_active, team)
    chunk = chunk_of(env, team, steps, rng)
    for key in keys.PER_AGENT_KEYS:
        if key in chunk["obs"]:
            chunk["obs"][key] = chunk["obs"][key][:, :n_active]
    chunk["actions"] = chunk["actions"][:, :n_active]
    return chunk


def test_only_the_active_agents_are_stored_and_the_width_grows_by_blocks():
    env = MagentTeamEnv({"game": "adversarial_pursuit", "n_agents": 40, "seed": 4})
    space = env.observation_spaces["predator"]
    rng = np.random.default_rng(3)
    buffer = TeamReplay(space, 13, 200, seed=0)
    assert buffer.block == 2 and buffer.stored_agents == 0
    first = staged_chunk(env, "predator", 6, rng, 4)
    buffer.add_chunk(first)
    assert buffer.stored_agents == 4
    assert buffer.nbytes == 200 * TeamReplay.row_bytes(space, 13, 4)
    batch = buffer.sample(32, 0.9)
    assert batch[keys.VIEWS].shape[1:3] == (4, 10)
    assert batch[keys.ALIVE].shape == batch[keys.ACTIVE].shape == (32, 4)
    assert (batch[keys.ACTIVE] == 1).all()
    buffer.add_chunk(staged_chunk(env, "predator", 6, rng, 7))  # the stage grew: a new block
    assert buffer.stored_agents == 8
    assert len(buffer.agent_obs[keys.VIEWS].blocks) == 2
    batch = buffer.sample(400, 0.9)
    assert batch[keys.VIEWS].shape[1] == 7  # the widest row it read, not the block's 8
    old = batch[keys.ACTIVE].sum(1) == 4
    assert old.any() and (~old).any()
    # Rows stored at the old stage read zeros (and an inactive mask) in the new slots.
    assert (batch[keys.VIEWS][old, 4:] == 0).all() and (batch[keys.ACTIVE][old, 4:] == 0).all()
    assert (batch[rp.ACTIONS][old, 4:] == 0).all()
    # What was stored comes back: every sampled row of the first chunk is one of its rows.
    views = first["obs"][keys.VIEWS]
    for row in batch[keys.VIEWS][old][:20]:
        assert (views == row[:4]).all(axis=(1, 2, 3, 4)).any()
    state = buffer.get_state()
    other = TeamReplay(space, 13, 200, seed=9)
    other.set_state(state)
    a, b = buffer.sample(50, 0.9, 2), other.sample(50, 0.9, 2)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_a_mask_that_is_not_a_prefix_is_refused():
    env = MagentTeamEnv({"game": "adversarial_pursuit", "n_agents": 4, "seed": 1})
    chunk = chunk_of(env, "predator", 3, np.random.default_rng(0))
    chunk["obs"][keys.ACTIVE][:, 0] = 0
    buffer = TeamReplay(env.observation_spaces["predator"], 13, 50)
    with pytest.raises(ValueError, match="prefix"):
        buffer.add_chunk(chunk)


def test_start_rows_are_found_without_a_scan_and_match_the_scan():
    env = MagentTeamEnv({"game": "adversarial_pursuit", "n_agents": 2, "seed": 5})
    rng = np.random.default_rng(4)
    buffer = TeamReplay(env.observation_spaces["predator"], 13, 97, seed=0)
    for steps in rng.integers(1, 15, 60):  # wraps several times, chunks of every length
        buffer.add_chunk(chunk_of(env, "predator", int(steps), rng))
        scan = np.flatnonzero(buffer.remaining[: buffer.rows_written])
        assert len(buffer) == len(scan)
        np.testing.assert_array_equal(buffer._start_rows(np.arange(len(scan))), scan)
