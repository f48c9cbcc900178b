"""Mean actions: where the mean-field inputs of MFQ and MFQMIX are computed.

* `team_mean_action`: the alive team's mean one-hot action (Yang et al. 2018's reference code).
* `neighbour_mean_actions`: for each agent, the mean one-hot action of its neighbourhood N_i,
  the ceil(fraction * alive team-mates) nearest alive team-mates (the paper's MFQMIX uses 10%).

Nearest is by Euclidean distance between agents' grid positions; ties are broken by the lower
slot index, so the result is exactly defined and reproducible. The work is vectorized numpy
over spatially compact blocks of agents, each ranked only against the team-mates that can be
in its members' neighbourhoods: no Python loop over agents.
"""

from __future__ import annotations

import math

import numpy as np

_ROW_BLOCK = 64  # agents whose neighbours are ranked together, against shared candidates
_SMALL_TEAM = 192  # up to this many alive agents, one all-pairs block is cheapest


def neighbourhood_size(n_alive: int, fraction: float) -> int:
    """How many team-mates form an agent's neighbourhood: ceil(fraction * (n_alive - 1))."""
    mates = n_alive - 1
    if mates <= 0:
        return 0
    # round() first: 0.1 * 30 is 3.0000000000000004 in floating point, whose ceil is 4.
    return min(mates, max(1, math.ceil(round(fraction * mates, 9))))


def team_mean_action(actions: np.ndarray, n_actions: int) -> np.ndarray:
    """Mean one-hot action of the given (alive) agents, float32 [n_actions]; zeros if none."""
    if len(actions) == 0:
        return np.zeros(n_actions, dtype=np.float32)
    counts = np.bincount(actions, minlength=n_actions).astype(np.float32)
    return counts / len(actions)


def neighbour_mean_actions(
    positions: np.ndarray,
    actions: np.ndarray,
    slots: np.ndarray,
    n_actions: int,
    fraction: float,
) -> np.ndarray:
    """Each agent's neighbourhood mean one-hot action, float32 [n, n_actions].

    Args:
        positions: (n, 2) integer grid positions of the alive agents.
        actions: (n,) the action each of them took at the previous step.
        slots: (n,) their slot indices, used only to break distance ties (lower slot first).
        n_actions: size of the action set.
        fraction: neighbourhood size as a fraction of the alive team-mates, in (0, 1].
    """
    n = len(positions)
    means = np.zeros((n, n_actions), dtype=np.float32)
    k = neighbourhood_size(n, fraction)
    if k == 0:
        return means
    actions = np.asarray(actions, dtype=np.int64)
    if k == n - 1:
        # Every other alive team-mate: the team's counts minus the agent's own action.
        means[:] = np.bincount(actions, minlength=n_actions)
        means[np.arange(n), actions] -= 1.0
        return means / k

    # Rank team-mates by the unique integer key (squared distance, slot): exact ties by slot.
    x = positions[:, 0].astype(np.int64)
    y = positions[:, 1].astype(np.int64)
    span = int(max(np.ptp(x), np.ptp(y)))
    slot_range = int(slots.max()) + 1
    max_key = (2 * span * span + 1) * slot_range
    dtype = np.int32 if max_key < np.iinfo(np.int32).max else np.int64
    xs, ys, tie = x.astype(dtype), y.astype(dtype), slots.astype(dtype)
    self_key = np.iinfo(dtype).max
    everyone = np.arange(n)
    for rows in _spatial_blocks(x, y):
        if len(rows) == n:  # small team: rank everyone against everyone
            candidates = everyone
            key = _keys(xs, ys, tie, rows, candidates, slot_range)
            key[everyone, everyone] = self_key
        else:
            candidates = _candidates(x, y, rows, k)
            key = _keys(xs, ys, tie, rows, candidates, slot_range)
            key[rows[:, None] == candidates[None, :]] = self_key  # nobody is their own mate
        nearest = candidates[np.argpartition(key, k - 1, axis=1)[:, :k]]
        local = np.arange(len(rows))
        counts = np.bincount(
            (local[:, None] * n_actions + actions[nearest]).ravel(),
            minlength=len(rows) * n_actions,
        )
        means[rows] = counts.reshape(len(rows), n_actions)
    means /= k
    return means


def _keys(xs, ys, tie, rows, candidates, slot_range) -> np.ndarray:
    """Unique ranking keys squared distance * slot_range + slot, rows x candidates."""
    key = np.subtract.outer(xs[rows], xs[candidates])
    key *= key
    dy = np.subtract.outer(ys[rows], ys[candidates])
    dy *= dy
    key += dy
    key *= key.dtype.type(slot_range)
    key += tie[candidates]
    return key


def _candidates(x, y, rows, k) -> np.ndarray:
    """Team-mates that can be among the k nearest of any agent in `rows`.

    Through the block centre c (triangle inequality): the k+1 agents nearest c lie within
    reach + |i - c| of every row i, so row i's k nearest lie within reach + 2 * spread of c.
    A superset of every row's neighbourhood, so the result stays exact.
    """
    cx, cy = x[rows].mean(), y[rows].mean()
    to_centre = (x - cx) ** 2 + (y - cy) ** 2
    reach = np.sqrt(np.partition(to_centre, k)[k])
    spread = np.sqrt(to_centre[rows].max())
    return np.flatnonzero(to_centre <= (reach + 2 * spread + 1.0) ** 2)


def _spatial_blocks(x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Agent indices in blocks of about _ROW_BLOCK that are compact in space."""
    n = len(x)
    if n <= _SMALL_TEAM:
        return [np.arange(n)]
    # Square buckets holding about one block each, visited column by column.
    area = (np.ptp(x) + 1) * (np.ptp(y) + 1)
    side = max(1, int(np.sqrt(area * _ROW_BLOCK / n)))
    order = np.lexsort((y, y // side, x // side))
    return np.array_split(order, -(-n // _ROW_BLOCK))
