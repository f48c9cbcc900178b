"""Mean actions: where the mean-field inputs of MFQ and MFQMIX are computed.

* `team_mean_action`: the alive team's mean one-hot action (Yang et al. 2018's reference code).
* `neighbour_mean_actions`: for each agent, the mean one-hot action of its neighbourhood N_i,
  the ceil(fraction * alive team-mates) nearest alive team-mates (the paper's MFQMIX uses 10%).

Nearest is by Euclidean distance between agents' grid positions; ties are broken by the lower
slot index, so the result is exactly defined and reproducible. The work is vectorized numpy,
done in row blocks: O(N * N) integer arithmetic in C, no Python loop over agents.
"""

from __future__ import annotations

import math

import numpy as np

_ROW_BLOCK = 256  # rows of the distance matrix handled at once: keeps the block in cache


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
    x, y = x.astype(dtype), y.astype(dtype)
    tie = slots.astype(dtype)
    self_key = np.iinfo(dtype).max
    for start in range(0, n, _ROW_BLOCK):
        stop = min(n, start + _ROW_BLOCK)
        key = np.subtract.outer(x[start:stop], x)
        key *= key
        dy = np.subtract.outer(y[start:stop], y)
        dy *= dy
        key += dy
        key *= dtype(slot_range)
        key += tie
        rows = np.arange(stop - start)
        key[rows, rows + start] = self_key  # an agent is not its own neighbour
        neighbours = np.argpartition(key, k - 1, axis=1)[:, :k]
        flat = (rows[:, None] * n_actions + actions[neighbours]).ravel()
        counts = np.bincount(flat, minlength=(stop - start) * n_actions)
        means[start:stop] = counts.reshape(stop - start, n_actions)
    means /= k
    return means
