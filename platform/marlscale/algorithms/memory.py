"""The memory a run will need, estimated from its config before anything is built.

Both big consumers grow linearly with the population, so two probe envs of one and two agents
per team give each exactly (bytes = fixed + per_agent * N):
  replay        every learning team's `TeamReplay` at its peak: capacity rows of the pooled
                state, masks of all N slots, reward and flags, plus the per-agent columns
                (uint8 views, float16 mean actions, actions) of the most agents the policy will
                control (N with a curriculum, which ends with every agent; else n_active), in
                whole blocks as the replay allocates them;
  observations  per env: magent2's own float32 view buffers for every agent of both teams,
                plus the learning teams' observations; one per sampling env and one for
                evaluation.
A run whose estimate exceeds this machine's memory is refused up front with the figures and the
largest replay_capacity that would fit.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np

from marlscale.algorithms.replay import TeamReplay, stored_width
from marlscale.envs.config import TeamEnvConfig
from marlscale.envs.team_env import MagentTeamEnv

GIB = 2**30
MAGENT_VIEW_ITEMSIZE = 4
"""magent2 writes views as float32 before we quantise them to uint8."""
HEADROOM = 0.8
"""The share of the machine's memory a suggested replay_capacity may fill."""


@dataclass(frozen=True)
class MemoryEstimate:
    replay: int
    """Bytes of every learning team's replay buffer."""
    observations: int
    """Bytes of the observation buffers of all envs (sampling and evaluation)."""
    replay_row: int = 0
    """Bytes of one replay row (env step) of every learning team, at the peak width."""

    @property
    def total(self) -> int:
        return self.replay + self.observations

    def describe(self) -> str:
        return (f"about {self.total / GIB:,.1f} GiB (replay {self.replay / GIB:,.1f} GiB, "
                f"observations {self.observations / GIB:,.1f} GiB)")


def _probe(env_config: TeamEnvConfig, n: int) -> MagentTeamEnv:
    return MagentTeamEnv(dataclasses.replace(
        env_config, n_agents=n, n_opponents=n, map_size=None, n_active=None, wall_density=0.0))


def _replay_row(probe: MagentTeamEnv, team: str, width: int) -> int:
    """One replay row of the probe's team with `width` agents' columns."""
    space, actions = probe.observation_spaces[team], probe.action_spaces[team]
    return TeamReplay.row_bytes(space, int(actions.nvec[0]), width)


def _observation_bytes(probe: MagentTeamEnv, team: str) -> int:
    space = probe.observation_spaces[team]
    return sum(int(np.prod(s.shape)) * s.dtype.itemsize for s in space.spaces.values())


def estimate(env_config: TeamEnvConfig, learning_teams: list[str], replay_capacity: int,
             num_envs: int, peak_active: int | None = None) -> MemoryEstimate:
    """The estimate for `learning_teams` of `env_config`'s game, `num_envs` envs in all;
    `peak_active`: the most agents of a team the policy will control (None: all)."""
    counts = dict(zip(env_config.game_spec.team_names, env_config.team_counts))
    probes = [_probe(env_config, n) for n in (1, 2)]

    def linear(measure, team: str) -> int:
        one, two = (measure(probe, team) for probe in probes)
        return one + (two - one) * (counts[team] - 1)

    row = 0
    for team in learning_teams:
        n = counts[team]
        width = stored_width(n, n if peak_active is None else min(n, peak_active))
        per_row = linear(lambda probe, t: _replay_row(probe, t, 0), team)
        per_agent = _replay_row(probes[0], team, 1) - _replay_row(probes[0], team, 0)
        row += per_row + per_agent * width
    replay = row * replay_capacity
    observations = sum(linear(_observation_bytes, team) for team in learning_teams)
    views = probes[0].view_shapes()
    for team, count in counts.items():
        observations += count * int(np.prod(views[team])) * MAGENT_VIEW_ITEMSIZE
    return MemoryEstimate(replay=replay, observations=observations * num_envs, replay_row=row)


def machine_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(estimate_: MemoryEstimate, what: str) -> None:
    """A ValueError with the estimate, and the replay_capacity that would fit, when it exceeds
    this machine's memory."""
    available = machine_bytes()
    if estimate_.total > available:
        fits = int((HEADROOM * available - estimate_.observations) // max(estimate_.replay_row, 1))
        suggestion = (f"replay_capacity <= {fits:,} ({HEADROOM:.0%} of the memory)" if fits > 0
                      else "fewer agents: the observations alone do not fit")
        raise ValueError(f"{what} needs {estimate_.describe()}, more than this machine's "
                         f"{available / GIB:,.1f} GiB; allowed: fewer agents or a smaller "
                         f"replay_capacity, e.g. {suggestion}")

