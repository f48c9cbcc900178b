"""`TeamReplay`: a team's replay memory, uint8 observations stored once per env step, and only
for the agents the policy controls.

Layout. Rows are env steps in time order; a chunk of T transitions from one episode is written
as T + 1 consecutive rows, so the next observation of row i is row i + 1: no second copy for
next-obs, no float32 copy of a view. Columns are of two kinds:
* per row (every env step, whatever the stage): the pooled global `state`, the
  `team_mean_action`, the team's reward, the termination flag, the `alive` and `active` masks
  of all N slots, and the row's `width` (its number of active agents);
* per active agent (`keys.PER_AGENT_KEYS` and the actions): stored for slots 0..width-1 only.
  The policy always controls a prefix of the slots (the env's `set_active`), so the slot id of
  agent column j is j and needs no storage; `add_chunk` checks that the active mask is a
  prefix. Inactive agents act at random, are masked out of the loss, and cost nothing here.
Per-agent columns live in blocks of `block` slots, [capacity, block, ...] each, added when the
curriculum's stage first needs them: growing the stage allocates a block and copies nothing.
Rows written before a block existed read zeros there (and an inactive mask). A sampled batch is
K agents wide, K the widest row it touches, and the learner runs on those K agents only.

Mean actions are stored as float16 (fractions of a team-mate count). Sampling draws rows that
start a transition and gathers the n-step return inside the chunk, bootstrapping from the row
where it stops. Finding the start rows is O(batch log chunks): the rows that start nothing (one
bootstrap row per chunk, a cut tail on wrap) are kept as a sorted list of holes.

Bytes per stored agent-step (pursuit predator, N=25 all active, 8x8 state): view 500 + neighbour
mean action 26 + action 1 + agent masks 2 + state 320/25 + team mean 26/25 + reward, flags and
width 11/25 = ~543, plus one bootstrap row per chunk. At N=1,000 with 100 active each env step
stores 100 agents' columns and 1,000 slots' masks: ~1.04x the bytes of N=100 all active.
"""

from __future__ import annotations

import math
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
BLOCKS = 20
"""A team's slots are stored in at most this many blocks (block = ceil(N / BLOCKS) slots)."""


def _storage_dtype(key: str, space: spaces.Box) -> np.dtype:
    """uint8 stays uint8; mean actions (count fractions) take float16; rewards stay float32."""
    if space.dtype == np.uint8:
        return np.dtype(np.uint8)
    return np.dtype(np.float32) if key == keys.AGENT_REWARD else np.dtype(np.float16)


def stored_width(n_agents: int, width: int) -> int:
    """The agent columns a replay of an N-agent team allocates to hold `width` active agents:
    whole blocks of ceil(N / BLOCKS) slots, at most N."""
    block = max(1, math.ceil(n_agents / BLOCKS))
    return min(n_agents, math.ceil(width / block) * block)


def active_width(active: np.ndarray) -> np.ndarray:
    """The number of active slots per row of `active` [..., N], checked to be a prefix."""
    active = np.asarray(active).astype(bool)
    width = active.sum(-1)
    if not (active == (np.arange(active.shape[-1]) < width[..., None])).all():
        raise ValueError("active mask is invalid: the policy must control a prefix of the "
                         "slots (0..n_active-1), as the env's set_active does")
    return width


class _AgentColumn:
    """One per-agent column, [capacity, width, *item] in blocks of slots allocated on demand."""

    def __init__(self, capacity: int, item_shape: tuple[int, ...], dtype: np.dtype):
        self.capacity, self.item_shape, self.dtype = capacity, tuple(item_shape), dtype
        self.blocks: list[np.ndarray] = []
        self.bounds = [0]  # block b holds slots bounds[b]..bounds[b+1]-1

    @property
    def width(self) -> int:
        return self.bounds[-1]

    @property
    def nbytes(self) -> int:
        return sum(block.nbytes for block in self.blocks)

    def grow(self, width: int) -> None:
        if width > self.width:
            self.blocks.append(np.zeros((self.capacity, width - self.width, *self.item_shape),
                                        self.dtype))
            self.bounds.append(width)

    def write(self, rows: slice, values: np.ndarray) -> None:
        """Slots 0..values.shape[1]-1 of `rows` take `values`; the rest of the width, zeros."""
        given = values.shape[1]
        for block, low, high in zip(self.blocks, self.bounds, self.bounds[1:]):
            part = values[:, low:min(high, given)]
            block[rows, :part.shape[1]] = part
            block[rows, part.shape[1]:] = 0

    def gather(self, rows: np.ndarray, width: int) -> np.ndarray:
        """Slots 0..width-1 of `rows` [B, width, *item] (zeros past the stored width)."""
        if len(self.blocks) == 1 and width == self.width:  # the common case: one fancy index
            return self.blocks[0][rows]
        out = np.zeros((len(rows), width, *self.item_shape), self.dtype)
        for block, low, high in zip(self.blocks, self.bounds, self.bounds[1:]):
            if low >= width:
                break
            out[:, low:min(high, width)] = block[rows, :min(high, width) - low]
        return out

    def read(self, rows: slice) -> np.ndarray:
        """Rows of every stored slot [rows, width, *item] (for checkpoints)."""
        parts = [block[rows] for block in self.blocks]
        return np.concatenate(parts, axis=1) if parts else \
            np.zeros((0, 0, *self.item_shape), self.dtype)


class TeamReplay:
    """Circular replay of one team, `capacity` rows (env steps) in all (see the module doc)."""

    def __init__(self, observation_space: spaces.Dict, n_actions: int, capacity: int, seed=None):
        self.capacity = int(capacity)
        self.obs_keys = list(observation_space.spaces)
        n = observation_space[keys.VIEWS].shape[0]
        self.n_agents = n
        self.block = max(1, math.ceil(n / BLOCKS))
        self.obs, self.agent_obs = {}, {}
        for key, space in observation_space.spaces.items():
            dtype = _storage_dtype(key, space)
            if key in keys.PER_AGENT_KEYS:
                self.agent_obs[key] = _AgentColumn(self.capacity, space.shape[1:], dtype)
            else:
                self.obs[key] = np.zeros((self.capacity, *space.shape), dtype=dtype)
        action_dtype = np.uint8 if n_actions <= 256 else np.int16
        self.actions = _AgentColumn(self.capacity, (), np.dtype(action_dtype))
        self.rewards = np.zeros(self.capacity, dtype=np.float32)
        self.terminated = np.zeros(self.capacity, dtype=bool)
        self.width = np.zeros(self.capacity, dtype=np.int32)
        # Transitions left in this row's chunk (0: a bootstrap-only row, never a start).
        self.remaining = np.zeros(self.capacity, dtype=np.int32)
        self._holes = np.zeros(0, dtype=np.int64)  # sorted rows < rows_written that start nothing
        self.cursor = 0
        self.rows_written = 0
        self.transitions_added = 0
        self.rng = np.random.default_rng(seed)

    @staticmethod
    def row_bytes(observation_space: spaces.Dict, n_actions: int, width: int) -> int:
        """Bytes of one row with `width` agents' columns allocated (the memory estimate's unit)."""
        n = observation_space[keys.VIEWS].shape[0]
        total = 4 + 1 + 4 + 4 + width * (1 if n_actions <= 256 else 2)
        for key, space in observation_space.spaces.items():
            size = int(np.prod(space.shape)) * _storage_dtype(key, space).itemsize
            total += size // n * width if key in keys.PER_AGENT_KEYS else size
        return total

    def stored_width(self, width: int) -> int:
        """The agent columns allocated to hold `width` active agents (whole blocks, <= N)."""
        return stored_width(self.n_agents, width)

    # ---- writing ----------------------------------------------------------------------------
    def add_chunk(self, chunk: dict[str, Any]) -> None:
        """Store one episode chunk: obs rows [T+1] (per-agent columns [T+1, >= width]),
        actions [T, >= width], rewards [T], terminated [T]."""
        steps = len(chunk[ACTIONS])
        if steps == 0:
            return
        rows = steps + 1
        if rows > self.capacity:
            raise ValueError(
                f"replay capacity={self.capacity} is invalid for chunks of {steps} steps; "
                f"allowed: capacity > rollout length"
            )
        obs = chunk["obs"]
        width = active_width(obs[keys.ACTIVE])
        chunk_width = int(width.max())
        for column in (*self.agent_obs.values(), self.actions):
            column.grow(self.stored_width(chunk_width))
        if self.cursor + rows > self.capacity:  # wrap: the tail rows stop being starts
            self.remaining[self.cursor:] = 0
            holes = self._holes
            self._holes = np.concatenate([holes[holes < self.cursor],
                                          np.arange(self.cursor, self.rows_written)])
            self.cursor = 0
        start = self.cursor
        block = slice(start, start + rows)
        for key, array in self.obs.items():
            array[block] = obs[key]
        for key, column in self.agent_obs.items():
            column.write(block, obs[key][:, :chunk_width])
        actions = np.zeros((rows, chunk_width), dtype=self.actions.dtype)
        actions[:steps] = chunk[ACTIONS][:, :chunk_width]
        self.actions.write(block, actions)
        self.width[block] = width
        self.rewards[block][:steps] = chunk[REWARD]
        self.terminated[block][:steps] = chunk["terminated"]
        self.terminated[block][steps] = False
        self.remaining[block] = np.arange(steps, -1, -1)
        # The block's old holes go; its bootstrap row is its one hole (O(chunks), no sort).
        holes = self._holes
        low, high = np.searchsorted(holes, [start, start + rows])
        self._holes = np.concatenate([holes[:low], [start + steps], holes[high:]])
        self.cursor += rows
        self.rows_written = min(self.capacity, max(self.rows_written, self.cursor))
        self.transitions_added += steps

    # ---- reading ----------------------------------------------------------------------------
    def __len__(self) -> int:
        """Stored transitions (sampleable rows)."""
        return self.rows_written - len(self._holes)

    def _start_rows(self, picks: np.ndarray) -> np.ndarray:
        """The picks-th rows that start a transition, in row order (the k-th start is row
        k + the number of holes before it; holes[i] - i starts precede hole i)."""
        before = self._holes - np.arange(len(self._holes))
        return picks + np.searchsorted(before, picks, side="right")

    def sample(self, batch_size: int, gamma: float, n_step: int = 1) -> dict[str, np.ndarray]:
        """A batch of n-step transitions: obs and next_ obs columns (stored dtypes), actions,
        the discounted n-step team `reward`, `discount` = gamma^h (0 after a termination),
        and, when stored, `agent_reward_sum` [B, K] summed the same way. Per-agent columns and
        masks are K slots wide, K the most active agents of any row the batch reads."""
        count = len(self)
        if count == 0:
            raise ValueError("cannot sample an empty replay buffer")
        idx = self._start_rows(self.rng.integers(0, count, batch_size))
        reward = np.zeros(batch_size, dtype=np.float32)
        discount = np.ones(batch_size, dtype=np.float32)
        running = np.ones(batch_size, dtype=bool)  # not yet stopped by a termination/chunk end
        horizon = np.zeros(batch_size, dtype=np.int64)
        reward_rows = []  # (row of the step's reward, weight) for agent rewards
        for j in range(n_step):
            live = running & (self.remaining[idx] > j)
            if not live.any():
                break
            row = idx + j
            reward += np.where(live, discount * self.rewards[row], 0.0)
            # The reward of transition row -> row + 1 is stored with the next observation.
            reward_rows.append((np.minimum(row + 1, self.capacity - 1),
                                np.where(live, discount, 0.0)))
            horizon += live
            discount = np.where(live, discount * gamma, discount)
            ended = live & self.terminated[row]
            discount = np.where(ended, 0.0, discount)
            running &= live & ~ended
        nxt = idx + horizon
        width = max(1, int(max(self.width[idx].max(), self.width[nxt].max())))
        batch = {}
        for prefix, rows in (("", idx), (NEXT, nxt)):
            for key, array in self.obs.items():  # the N-slot masks: only the K columns
                masks = key in (keys.ALIVE, keys.ACTIVE)
                batch[prefix + key] = array[rows, :width] if masks else array[rows]
            for key, column in self.agent_obs.items():
                if key != keys.AGENT_REWARD:
                    batch[prefix + key] = column.gather(rows, width)
        batch[ACTIONS] = self.actions.gather(idx, width).astype(np.int64)
        batch[REWARD] = reward
        batch[DISCOUNT] = discount.astype(np.float32)
        if keys.AGENT_REWARD in self.agent_obs:
            column = self.agent_obs[keys.AGENT_REWARD]
            agent_reward = np.zeros((batch_size, width), dtype=np.float32)
            for row, weight in reward_rows:
                agent_reward += weight[:, None] * column.gather(row, width)
            batch[AGENT_REWARD_SUM] = agent_reward
        return batch

    # ---- accounting and checkpoints ---------------------------------------------------------
    @property
    def stored_agents(self) -> int:
        """Agent columns allocated now (grows with the curriculum's stage, up to N)."""
        return self.actions.width

    @property
    def nbytes(self) -> int:
        """Memory held by the buffer's arrays, in bytes (allocated, whether filled or not)."""
        arrays = [*self.obs.values(), self.rewards, self.terminated, self.remaining, self.width]
        columns = [*self.agent_obs.values(), self.actions]
        return int(sum(a.nbytes for a in arrays) + sum(c.nbytes for c in columns))

    @property
    def bytes_per_env_step(self) -> float:
        """Allocated bytes per stored env step (row)."""
        return self.nbytes / self.capacity

    @property
    def bytes_per_agent_step(self) -> float:
        """Allocated bytes per agent-step of the stored agents (N before the first chunk)."""
        return self.bytes_per_env_step / (self.stored_agents or self.n_agents)

    def get_state(self) -> dict[str, Any]:
        filled = slice(0, self.rows_written)
        obs = {key: value[filled].copy() for key, value in self.obs.items()}
        obs.update({key: column.read(filled) for key, column in self.agent_obs.items()})
        return {
            "obs": obs,
            "actions": self.actions.read(filled),
            "width": self.width[filled].copy(),
            "rewards": self.rewards[filled].copy(),
            "terminated": self.terminated[filled].copy(),
            "remaining": self.remaining[filled].copy(),
            "cursor": self.cursor,
            "rows_written": self.rows_written,
            "transitions_added": self.transitions_added,
            "rng": self.rng.bit_generator.state,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        rows_written = state["rows_written"]
        filled = slice(0, rows_written)
        for key, array in self.obs.items():
            array[filled] = state["obs"][key]
        stored = state["actions"].shape[1] if state["actions"].ndim == 2 else 0
        for key, column in (*self.agent_obs.items(), (ACTIONS, self.actions)):
            values = state["actions"] if key == ACTIONS else state["obs"][key]
            column.grow(self.stored_width(stored))
            column.write(filled, values)
        self.width[:] = 0
        self.width[filled] = state["width"] if "width" in state else \
            active_width(state["obs"][keys.ACTIVE])  # a checkpoint from before #13
        self.rewards[filled] = state["rewards"]
        self.terminated[filled] = state["terminated"]
        self.remaining[:] = 0
        self.remaining[filled] = state["remaining"]
        self._holes = np.flatnonzero(self.remaining[filled] == 0).astype(np.int64)
        self.cursor = state["cursor"]
        self.rows_written = rows_written
        self.transitions_added = state["transitions_added"]
        self.rng.bit_generator.state = state["rng"]
