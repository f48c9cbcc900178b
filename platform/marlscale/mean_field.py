"""Mean actions: where the mean-field inputs of MFQ and MFQMIX are computed.

* `team_mean_action`: the alive team's mean one-hot action (Yang et al. 2018's reference code).
* `neighbour_mean_actions`: for each agent, the mean one-hot action of its neighbourhood N_i,
  the k = ceil(fraction * alive team-mates) nearest alive team-mates (the paper's MFQMIX uses
  10%).

"Nearest" is by Chebyshev distance on the grid, max(|dx|, |dy|): the number of king moves
between two cells, the grid's own metric. Let r be the smallest radius whose square around
agent i holds at least k team-mates. N_i is everyone strictly inside radius r, plus the
team-mates on the ring at exactly r, which share the remaining weight equally. This is the
expected mean action of the k nearest under uniformly random tie-breaking. It is exactly
defined, reproducible, symmetric in the agents, and it always weighs exactly k team-mates.

Cost, with no Python loop over agents. Square counts come from summed-area tables over the
team's bounding box, per action: O(area x A) to build, O(N log side) to find every radius,
O(N x A) to read the sums. At MAgent2's constant density the area grows with N, so the cost is
linear in N. A sparse team, whose box is much larger than N x N, uses the equivalent N x N
pairwise computation instead.
"""

from __future__ import annotations

import functools
import math

import numpy as np

# Which implementation is cheaper (both are exact): measured on 2 cores, the grid tables cost
# ~120 us plus ~2.5 ns per cell and channel, the pairwise matrix ~6.5 ns per pair of agents.
_GRID_FIXED_NS, _GRID_CELL_NS, _PAIR_NS = 120_000.0, 2.5, 6.5


@functools.lru_cache(maxsize=4096)  # called every step with the same few arguments
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
    positions: np.ndarray, actions: np.ndarray, n_actions: int, fraction: float
) -> np.ndarray:
    """Each agent's neighbourhood mean one-hot action, float32 [n, n_actions].

    Args:
        positions: (n, 2) integer grid positions of the alive agents.
        actions: (n,) the action each of them took at the previous step.
        n_actions: size of the action set.
        fraction: neighbourhood size as a fraction of the alive team-mates, in (0, 1].
    """
    n = len(positions)
    k = neighbourhood_size(n, fraction)
    if k == 0:
        return np.zeros((n, n_actions), dtype=np.float32)
    actions = np.asarray(actions, dtype=np.int64)
    # Column 0 counts the agent, column 1 + a says whether it took action a.
    counted = _counted_onehot(n_actions).take(actions, axis=0)
    onehot = counted[:, 1:]
    if k == n - 1:  # every other alive team-mate: the team's counts minus the agent's own
        return ((onehot.sum(0) - onehot) / k).astype(np.float32)

    # Coordinate-major (x row, y row), shifted to the team's bounding box.
    xy = np.array(np.asarray(positions).T, dtype=np.int64, order="C")
    xy -= xy.min(1, keepdims=True)
    width, height = (int(s) + 1 for s in xy.max(1))
    grid_ns = _GRID_FIXED_NS + _GRID_CELL_NS * width * height * (n_actions + 1)
    if grid_ns < _PAIR_NS * n * n:
        sums = _square_sums_grid(xy.T, actions, onehot, k, width, height)
    else:
        sums = _square_sums_pairs(xy, counted, k, max(width, height))
    inner, n_inner, ring, n_ring = sums
    # Fill the neighbourhood with everyone inside, then an equal share of the ring.
    share = (k - n_inner) / n_ring
    means = share[:, None] * ring
    means += inner
    means /= k
    return means.astype(np.float32, copy=False)


@functools.cache
def _counted_onehot(n_actions: int) -> np.ndarray:
    """Row a: [1, one-hot of a], float32 [n_actions, 1 + n_actions] (read-only)."""
    table = np.zeros((n_actions, n_actions + 1), dtype=np.float32)
    table[:, 0] = 1.0
    table[:, 1:] = np.eye(n_actions, dtype=np.float32)
    table.flags.writeable = False
    return table


def _square_sums_pairs(xy, counted, k, side):
    """(inner sums, inner counts, ring sums, ring counts), from the N x N distance matrix;
    `xy`: (2, n) coordinates in [0, side)."""
    n = xy.shape[1]
    # Coordinates and distances are below `side`: int32 holds them (and halves the memory
    # traffic) unless the team spreads over more than 2**30 cells.
    if side < 2**30:
        xy, far = xy.astype(np.int32), 2**31 - 1
    else:
        far = 2**63 - 1
    deltas = xy[:, :, None] - xy[:, None, :]  # [dx, dy] of every pair, (2, n, n)
    np.abs(deltas, out=deltas)
    dist = np.maximum(deltas[0], deltas[1], out=deltas[0])
    dist.flat[:: n + 1] = far  # not one's own neighbour
    radius = np.partition(dist, k - 1, axis=1)[:, k - 1 : k]
    # Who is strictly inside the radius, and who is on it. One (stacked) product gives both
    # sets' counts (column 0) and per-action sums; sums of 0/1 in float32 are exact.
    masks = np.empty((2, n, n), dtype=np.float32)
    np.less(dist, radius, out=masks[0])
    np.equal(dist, radius, out=masks[1])
    inner, ring = masks @ counted
    return inner[:, 1:], inner[:, 0], ring[:, 1:], ring[:, 0]


def _square_sums_grid(positions, actions, onehot, k, width, height):
    """The same four quantities from summed-area tables over the bounding box."""
    n, n_actions = onehot.shape
    x, y = positions[:, 0], positions[:, 1]
    # Channel 0 counts agents, channel 1 + a counts agents that took action a.
    cells = (x * height + y) * (n_actions + 1)
    grid = np.bincount(
        np.concatenate([cells, cells + 1 + actions]),
        minlength=width * height * (n_actions + 1),
    ).astype(np.int32 if n < 2**31 else np.int64)
    table = np.zeros((width + 1, height + 1, n_actions + 1), dtype=grid.dtype)
    np.cumsum(grid.reshape(width, height, n_actions + 1), axis=0, out=table[1:, 1:])
    np.cumsum(table[1:, 1:], axis=1, out=table[1:, 1:])

    def square(radius, channels):
        """Sums over each agent's square of the given radius (radius >= 0), self included."""
        x0, x1 = np.maximum(x - radius, 0), np.minimum(x + radius + 1, width)
        y0, y1 = np.maximum(y - radius, 0), np.minimum(y + radius + 1, height)
        return (
            table[x1, y1, channels] - table[x0, y1, channels]
            - table[x1, y0, channels] + table[x0, y0, channels]
        )

    # Smallest radius whose square holds >= k team-mates, found for all agents at once.
    lo = np.zeros(n, dtype=np.int64)
    hi = np.full(n, max(width, height), dtype=np.int64)
    while (lo < hi).any():
        mid = (lo + hi) // 2
        enough = square(mid, 0) - 1 >= k
        hi = np.where(enough, mid, hi)
        lo = np.where(enough, lo, mid + 1)
    radius = lo

    def team_mates(radius):
        """[count, per-action counts] of each agent's square, the agent itself taken out."""
        sums = square(radius, slice(None)).astype(np.float64)
        sums[:, 0] -= 1.0
        sums[:, 1:] -= onehot
        return sums

    within = team_mates(radius)
    # Strictly inside: the square of radius - 1, or nobody when the radius is 0.
    inner = team_mates(np.maximum(radius - 1, 0))
    inner[radius == 0] = 0.0
    ring = within - inner
    return inner[:, 1:], inner[:, 0], ring[:, 1:], ring[:, 0]
