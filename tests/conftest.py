"""Shared fixtures and helpers for the test tiers (unit: no Ray; integration: local Ray)."""

from __future__ import annotations

import numpy as np
import pytest
from marlscale.envs import MagentTeamEnv


def random_actions(env: MagentTeamEnv, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One uniformly random MultiDiscrete action per learning team."""
    return {name: rng.integers(0, env.action_spaces[name].nvec) for name in env.possible_agents}


@pytest.fixture(scope="session")
def ray_local():
    """A local 2-CPU Ray, started the way a test machine can: once per session."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()
