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
from marlscale.envs.global_state import N_CHANNELS
from marlscale.envs.team_env import MagentTeamEnv

GIB = 2**30
MAGENT_VIEW_ITEMSIZE = 4
"""magent2 writes views as float32 before we quantise them to uint8."""
SPACE_BYTES_PER_VIEW_VALUE = 4 + 8
"""An env's observation space holds its views' bounds (low, high: uint8) and whether each is
bounded (below, above: bool), and gymnasium builds them through a float64 array of the same
shape: 4 bytes a view value for good, 8 more while it is built."""
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
    learner: int = 0
    """Bytes of the learner: a batch's obs and next obs as float32, the networks (weights,
    targets, Adam's moments). Grows with batch_size, state_grid, hidden and N."""

    @property
    def total(self) -> int:
        return self.replay + self.observations + self.learner

    def describe(self) -> str:
        learner = f", learner {self.learner / GIB:,.1f} GiB" if self.learner else ""
        return (f"about {self.total / GIB:,.1f} GiB (replay {self.replay / GIB:,.1f} GiB, "
                f"observations {self.observations / GIB:,.1f} GiB{learner})")


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


def _probe_small(env_config: TeamEnvConfig) -> TeamEnvConfig:
    """The config the probes are built from: a state_grid of 1 (the pooled state's bytes
    are counted from state_grid, not allocated: a huge grid must be refused, not built)."""
    return dataclasses.replace(env_config, state_grid=1)


def _state_bytes(env_config: TeamEnvConfig, itemsize: int) -> int:
    """One pooled state of state_grid**2 cells (N_CHANNELS each), `itemsize` bytes a value."""
    return env_config.state_grid ** 2 * N_CHANNELS * itemsize


def estimate(env_config: TeamEnvConfig, learning_teams: list[str], replay_capacity: int,
             num_envs: int, peak_active: int | None = None, batch_size: int = 0,
             network: dict[str, int] | None = None) -> MemoryEstimate:
    """The estimate for `learning_teams` of `env_config`'s game, `num_envs` envs in all;
    `peak_active`: the most agents of a team the policy will control (None: all);
    `batch_size` and `network` (hidden, embedding_dim, hypernet_embed, mixing_embed_dim):
    the learner's (none without them). No learning team: the envs alone (`rollout`)."""
    counts = dict(zip(env_config.game_spec.team_names, env_config.team_counts))
    state_row = _state_bytes(env_config, 1) - _state_bytes(_probe_small(env_config), 1)
    probes = [_probe(_probe_small(env_config), n) for n in (1, 2)]

    def linear(measure, team: str) -> int:
        one, two = (measure(probe, team) for probe in probes)
        return one + (two - one) * (counts[team] - 1)

    row = 0
    for team in learning_teams:
        n = counts[team]
        width = stored_width(n, n if peak_active is None else min(n, peak_active))
        per_row = linear(lambda probe, t: _replay_row(probe, t, 0), team)
        per_agent = _replay_row(probes[0], team, 1) - _replay_row(probes[0], team, 0)
        row += per_row + state_row + per_agent * width
    replay = row * replay_capacity
    observations = sum(linear(_observation_bytes, team) + state_row for team in learning_teams)
    observations += _state_bytes(env_config, 4)  # the pooler's float32 grid, per env
    views = probes[0].view_shapes()
    for team, count in counts.items():
        observations += count * int(np.prod(views[team])) * MAGENT_VIEW_ITEMSIZE
        if team in probes[0].observation_spaces:  # a team the env observes for a policy
            observations += count * int(np.prod(views[team])) * SPACE_BYTES_PER_VIEW_VALUE
    learner = 0
    if batch_size and network:
        for team in learning_teams:
            n, view = counts[team], int(np.prod(views[team]))
            actions = int(probes[0].action_spaces[team].nvec[0])
            state = _state_bytes(env_config, 1)
            sample = n * (view + 2 * actions + 3) + state  # one env step, values not bytes
            weights = ((view + network["embedding_dim"] + actions) * network["hidden"]
                       + network["hidden"] ** 2 + n * network["embedding_dim"]
                       + 4 * state * network["hypernet_embed"]  # a mixer's hypernetworks
                       + 2 * network["hypernet_embed"] * n * network["mixing_embed_dim"])
            learner += 2 * 4 * batch_size * sample + 4 * 4 * weights
    return MemoryEstimate(replay=replay, observations=observations * num_envs, replay_row=row,
                          learner=learner)


def check_envs(configs: list[TeamEnvConfig], what: str) -> None:
    """Refuse, before Ray starts, envs alone (no learner: `rollout`, `evaluate`'s and
    `render`'s) that would not fit this machine's memory: magent2's views and the pooled
    state grow with N and state_grid. A ValueError naming `what` and the estimate."""
    total = sum(estimate(config, [], 0, 1).observations for config in configs)
    check_fits(MemoryEstimate(replay=0, observations=total), what)


def machine_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(estimate_: MemoryEstimate, what: str) -> None:
    """A ValueError with the estimate, and the replay_capacity that would fit, when it exceeds
    this machine's memory."""
    available = machine_bytes()
    if estimate_.total > available:
        rest = estimate_.observations + estimate_.learner
        fits = int((HEADROOM * available - rest) // max(estimate_.replay_row, 1))
        suggestion = (f"replay_capacity <= {fits:,} ({HEADROOM:.0%} of the memory)"
                      if fits > 0 and estimate_.replay_row else
                      "fewer agents or a smaller state_grid: the envs alone do not fit"
                      if estimate_.observations > HEADROOM * available else
                      "a smaller batch_size, state_grid or network: the learner alone does "
                      "not fit")
        if not estimate_.replay and not estimate_.learner:  # envs alone
            raise ValueError(f"{what} needs {estimate_.describe()}, more than this machine's "
                             f"{available / GIB:,.1f} GiB; allowed: fewer agents, fewer envs "
                             "or a smaller state_grid")
        raise ValueError(f"{what} needs {estimate_.describe()}, more than this machine's "
                         f"{available / GIB:,.1f} GiB; allowed: fewer agents or a smaller "
                         f"replay_capacity, e.g. {suggestion}")

