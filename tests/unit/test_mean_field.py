"""Neighbourhood mean actions equal a brute-force computation (Chebyshev rings, shared ties)."""

import math

import numpy as np
import pytest
from marlscale import mean_field
from marlscale.mean_field import (
    neighbour_mean_actions,
    neighbourhood_size,
    team_mean_action,
)


def brute_force(positions, actions, n_actions, fraction):
    """The definition, one agent at a time: the k nearest by Chebyshev distance, where the
    team-mates tied at the k-th distance share the remaining weight equally."""
    positions = np.asarray(positions)
    n = len(positions)
    out = np.zeros((n, n_actions), dtype=np.float64)
    k = neighbourhood_size(n, fraction)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        dist = {j: int(np.abs(positions[i] - positions[j]).max()) for j in others}
        kth = sorted(dist.values())[k - 1] if k else None
        inside = [j for j in others if dist[j] < kth] if k else []
        ring = [j for j in others if dist[j] == kth] if k else []
        for j in inside:
            out[i, actions[j]] += 1.0 / k
        for j in ring:
            out[i, actions[j]] += (k - len(inside)) / len(ring) / k
    return out


def test_neighbourhood_size_is_ceil_of_fraction_of_mates():
    assert neighbourhood_size(1, 0.1) == 0
    assert neighbourhood_size(2, 0.1) == 1
    assert neighbourhood_size(25, 0.1) == 3  # ceil(2.4)
    assert neighbourhood_size(31, 0.1) == 3  # 0.1 * 30 must not round up to 4
    assert neighbourhood_size(100, 1.0) == 99
    assert neighbourhood_size(11, 0.5) == 5


@pytest.fixture(params=["grid", "pairs"])
def method(request, monkeypatch):
    """Force either implementation: summed-area tables, or the N x N distance matrix."""
    monkeypatch.setattr(mean_field, "_PAIR_NS", 1e12 if request.param == "grid" else 0.0)
    return request.param


@pytest.mark.parametrize("n", [2, 3, 7, 25, 64, 300])
@pytest.mark.parametrize("fraction", [0.1, 0.35, 1.0])
def test_matches_brute_force_with_ties(n, fraction, method):
    rng = np.random.default_rng(n)
    side = max(3, int(math.sqrt(n)))  # a crowded grid: many equal distances, stacked cells
    positions = rng.integers(0, side, (n, 2)).astype(np.int32)
    actions = rng.integers(0, 13, n)
    got = neighbour_mean_actions(positions, actions, 13, fraction)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, brute_force(positions, actions, 13, fraction), atol=1e-6)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)  # exactly k team-mates weighed


@pytest.mark.parametrize("n", [40, 200])
def test_formation_and_spread_teams_match_brute_force(n, method):
    """A battle-like block on a spacing-2 lattice, and a team spread over a large map."""
    rng = np.random.default_rng(n)
    side = math.ceil(math.sqrt(n))
    block = np.stack([2 * (np.arange(n) // side), 2 * (np.arange(n) % side)], 1) + 7
    spread = rng.choice(300 * 300, n, replace=False)
    for positions in (block, np.stack([spread // 300, spread % 300], 1)):
        actions = rng.integers(0, 21, n)
        np.testing.assert_allclose(
            neighbour_mean_actions(positions, actions, 21, 0.1),
            brute_force(positions, actions, 21, 0.1),
            atol=1e-6,
        )


def test_large_coordinates_take_the_pairwise_path():
    rng = np.random.default_rng(0)
    positions = rng.integers(0, 5000, (40, 2)).astype(np.int32)
    actions = rng.integers(0, 5, 40)
    got = neighbour_mean_actions(positions, actions, 5, 0.2)
    np.testing.assert_allclose(got, brute_force(positions, actions, 5, 0.2), atol=1e-6)


def test_single_agent_and_team_mean():
    assert not neighbour_mean_actions(np.zeros((1, 2), np.int32), [3], 5, 0.1).any()
    np.testing.assert_allclose(team_mean_action(np.array([0, 0, 2, 4]), 5), [0.5, 0, 0.25, 0, 0.25])
    assert not team_mean_action(np.array([], dtype=np.int64), 5).any()
