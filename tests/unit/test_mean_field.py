"""Neighbourhood mean actions equal a brute-force computation, ties broken by slot."""

import math

import numpy as np
import pytest
from marlscale.envs.mean_field import (
    neighbour_mean_actions,
    neighbourhood_size,
    team_mean_action,
)


def brute_force(positions, actions, slots, n_actions, fraction):
    n = len(positions)
    out = np.zeros((n, n_actions), dtype=np.float64)
    k = neighbourhood_size(n, fraction)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        others.sort(
            key=lambda j: (
                (positions[i][0] - positions[j][0]) ** 2 + (positions[i][1] - positions[j][1]) ** 2,
                slots[j],
            )
        )
        for j in others[:k]:
            out[i, actions[j]] += 1.0 / k
    return out


def test_neighbourhood_size_is_ceil_of_fraction_of_mates():
    assert neighbourhood_size(1, 0.1) == 0
    assert neighbourhood_size(2, 0.1) == 1
    assert neighbourhood_size(25, 0.1) == 3  # ceil(2.4)
    assert neighbourhood_size(31, 0.1) == 3  # 0.1 * 30 must not round up to 4
    assert neighbourhood_size(100, 1.0) == 99
    assert neighbourhood_size(11, 0.5) == 5


@pytest.mark.parametrize("n", [2, 3, 7, 25, 64, 300])
@pytest.mark.parametrize("fraction", [0.1, 0.35, 1.0])
def test_matches_brute_force_with_ties(n, fraction):
    rng = np.random.default_rng(n)
    side = max(3, int(math.sqrt(n)))  # a crowded grid: many equal distances
    positions = rng.integers(0, side, (n, 2)).astype(np.int32)
    actions = rng.integers(0, 13, n)
    slots = np.sort(rng.choice(4 * n, n, replace=False))  # slots of survivors: gaps allowed
    got = neighbour_mean_actions(positions, actions, slots, 13, fraction)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, brute_force(positions, actions, slots, 13, fraction), atol=1e-6)


def test_large_coordinates_use_wide_keys():
    rng = np.random.default_rng(0)
    positions = rng.integers(0, 5000, (40, 2)).astype(np.int32)
    actions = rng.integers(0, 5, 40)
    slots = np.arange(40) * 10_000
    got = neighbour_mean_actions(positions, actions, slots, 5, 0.2)
    np.testing.assert_allclose(got, brute_force(positions, actions, slots, 5, 0.2), atol=1e-6)


def test_single_agent_and_team_mean():
    assert not neighbour_mean_actions(np.zeros((1, 2), np.int32), [3], np.array([0]), 5, 0.1).any()
    np.testing.assert_allclose(team_mean_action(np.array([0, 0, 2, 4]), 5), [0.5, 0, 0.25, 0, 0.25])
    assert not team_mean_action(np.array([], dtype=np.int64), 5).any()
