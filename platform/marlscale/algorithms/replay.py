"""`TeamReplay`: a team's replay memory, uint8 observations stored once per env step.

Rows are observations in time order; a chunk of T transitions from one episode is written as
T + 1 consecutive rows, so the next observation of row i is row i + 1: no second copy for
next-obs, no float32 copy of a view. Mean actions are stored as float16 (their values are
fractions of a team-mate count). Sampling draws rows that start a transition and gathers the
n-step return inside the chunk, bootstrapping from the row where it stops.

Bytes per stored agent-step (pursuit predator, N=25, 8x8 state): view 500 + neighbour mean
action 26 + masks 2 + action 1 + state 320/25 + team mean 26/25 + reward/flags 7/25 = ~543,
plus one bootstrap row per chunk.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from marlscale import keys

REWARD = "reward"
AGENT_REWARD_SUM = "agent_reward_sum"
ACTIONS = "actions"
DISCOUNT = "discount"
NEXT = "next_"
"""Prefix of the next-observation columns of a sampled batch."""


def _storage_dtype(key: str, space: spaces.Box) -> np.dtype:
    """uint8 stays uint8; mean actions (count fractions) take float16; rewards stay float32."""
    if space.dtype == np.uint8:
        return np.dtype(np.uint8)
    return np.dtype(np.float32) if key == keys.AGENT_REWARD else np.dtype(np.float16)


class TeamReplay:
    """Circular replay of one team, `capacity` rows (env steps) in all."""

    def __init__(self, observation_space: spaces.Dict, n_actions: int, capacity: int, seed=None):
        self.capacity = int(capacity)
        self.obs_keys = list(observation_space.spaces)
        self.obs = {
            key: np.zeros((self.capacity, *space.shape), dtype=_storage_dtype(key, space))
            for key, space in observation_space.spaces.items()
        }
        n = observation_space[keys.VIEWS].shape[0]
        self.n_agents = n
        action_dtype = np.uint8 if n_actions <= 256 else np.int16
        self.actions = np.zeros((self.capacity, n), dtype=action_dtype)
        self.rewards = np.zeros(self.capacity, dtype=np.float32)
        self.terminated = np.zeros(self.capacity, dtype=bool)
        # Transitions left in this row's chunk (0: a bootstrap-only row, never a start).
        self.remaining = np.zeros(self.capacity, dtype=np.int32)
        self.cursor = 0
        self.rows_written = 0
        self.transitions_added = 0
        self.rng = np.random.default_rng(seed)

    # ---- writing ----------------------------------------------------------------------------
    def add_chunk(self, chunk: dict[str, Any]) -> None:
        """Store one episode chunk: obs rows [T+1], actions [T, N], rewards [T], terminated [T]."""
        steps = len(chunk[ACTIONS])
        if steps == 0:
            return
        rows = steps + 1
        if rows > self.capacity:
            raise ValueError(
                f"replay capacity={self.capacity} is invalid for chunks of {steps} steps; "
                f"allowed: capacity > rollout length"
            )
        if self.cursor + rows > self.capacity:  # wrap: the tail rows stop being starts
            self.remaining[self.cursor:] = 0
            self.cursor = 0
        block = slice(self.cursor, self.cursor + rows)
        for key in self.obs_keys:
            self.obs[key][block] = chunk["obs"][key]
        self.actions[block][:steps] = chunk[ACTIONS]
        self.rewards[block][:steps] = chunk[REWARD]
        self.terminated[block][:steps] = chunk["terminated"]
        self.terminated[block][steps] = False
        self.remaining[block] = np.arange(steps, -1, -1)
        self.cursor += rows
        self.rows_written = min(self.capacity, max(self.rows_written, self.cursor))
        self.transitions_added += steps

    # ---- reading ----------------------------------------------------------------------------
    def __len__(self) -> int:
        """Stored transitions (sampleable rows)."""
        return int(np.count_nonzero(self.remaining[: self.rows_written]))

    def sample(self, batch_size: int, gamma: float, n_step: int = 1) -> dict[str, np.ndarray]:
        """A batch of n-step transitions: obs and next_ obs columns (stored dtypes), actions,
        the discounted n-step team `reward`, `discount` = gamma^h (0 after a termination),
        and, when stored, `agent_reward_sum` [B, N] summed the same way."""
        starts = np.flatnonzero(self.remaining[: self.rows_written])
        if len(starts) == 0:
            raise ValueError("cannot sample an empty replay buffer")
        idx = starts[self.rng.integers(0, len(starts), batch_size)]
        reward = np.zeros(batch_size, dtype=np.float32)
        agent_reward = None
        if keys.AGENT_REWARD in self.obs:
            agent_reward = np.zeros((batch_size, self.n_agents), dtype=np.float32)
        discount = np.ones(batch_size, dtype=np.float32)
        running = np.ones(batch_size, dtype=bool)  # not yet stopped by a termination/chunk end
        horizon = np.zeros(batch_size, dtype=np.int64)
        for j in range(n_step):
            live = running & (self.remaining[idx] > j)
            if not live.any():
                break
            row = idx + j
            reward += np.where(live, discount * self.rewards[row], 0.0)
            if agent_reward is not None:
                # The reward of transition row -> row + 1 is stored with the next observation.
                step_reward = self.obs[keys.AGENT_REWARD][np.minimum(row + 1, self.capacity - 1)]
                agent_reward += np.where(live[:, None], discount[:, None] * step_reward, 0.0)
            horizon += live
            discount = np.where(live, discount * gamma, discount)
            ended = live & self.terminated[row]
            discount = np.where(ended, 0.0, discount)
            running &= live & ~ended
        nxt = idx + horizon
        batch = {key: self.obs[key][idx] for key in self.obs_keys}
        batch.update({NEXT + key: self.obs[key][nxt] for key in self.obs_keys})
        batch[ACTIONS] = self.actions[idx].astype(np.int64)
        batch[REWARD] = reward
        batch[DISCOUNT] = discount.astype(np.float32)
        if agent_reward is not None:
            batch[AGENT_REWARD_SUM] = agent_reward
        return batch

    # ---- accounting and checkpoints ---------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Memory held by the buffer's arrays, in bytes (allocated, whether filled or not)."""
        arrays = [*self.obs.values(), self.actions, self.rewards, self.terminated, self.remaining]
        return int(sum(a.nbytes for a in arrays))

    @property
    def bytes_per_agent_step(self) -> float:
        return self.nbytes / (self.capacity * self.n_agents)

    def get_state(self) -> dict[str, Any]:
        filled = slice(0, self.rows_written)
        return {
            "obs": {key: value[filled].copy() for key, value in self.obs.items()},
            "actions": self.actions[filled].copy(),
            "rewards": self.rewards[filled].copy(),
            "terminated": self.terminated[filled].copy(),
            "remaining": self.remaining[filled].copy(),
            "cursor": self.cursor,
            "rows_written": self.rows_written,
            "transitions_added": self.transitions_added,
            "rng": self.rng.bit_generator.state,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        filled = slice(0, state["rows_written"])
        for key in self.obs_keys:
            self.obs[key][filled] = state["obs"][key]
        self.actions[filled] = state["actions"]
        self.rewards[filled] = state["rewards"]
        self.terminated[filled] = state["terminated"]
        self.remaining[:] = 0
        self.remaining[filled] = state["remaining"]
        self.cursor = state["cursor"]
        self.rows_written = state["rows_written"]
        self.transitions_added = state["transitions_added"]
        self.rng.bit_generator.state = state["rng"]
