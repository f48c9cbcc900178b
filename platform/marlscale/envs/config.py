"""Typed configuration of a MAgent2 team environment, validated before anything is built."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

from marlscale.envs.games import GAMES, Game
from marlscale.specfile import allowed, check_fields, setting, shown, typed, value_ok

GameName = Literal["adversarial_pursuit", "battle"]
OpponentKind = Literal["random", "learned"]
RewardMode = Literal["team", "individual"]
RewardScope = Literal["team", "active"]
InactiveKind = Literal["random", "policy"]
REWARD = typed(kind="float", doc="a magent2 reward argument (rewards.<key>)")


@dataclass
class TeamEnvConfig:
    """Everything that defines a team environment; sweep specs use it as-is (`env_config`).

    Bad values raise `ValueError` naming the key, the value and what is allowed, from
    `validate()`, which the env calls before it builds anything.
    """

    game: GameName = setting("adversarial_pursuit", kind="str", choices=get_args(GameName))
    """MAgent2 game: `adversarial_pursuit` (predators learn) or `battle` (red learns)."""

    n_agents: int = setting(25, kind="int", low=1)
    """Agents in the learning team (predators or red)."""

    n_opponents: int | None = setting(None, kind="int", low=1, optional=True)
    """Agents in the other team; None = the game's ratio (2 prey per predator; battle 1:1)."""

    map_size: int | None = setting(None, kind="int", low=1, optional=True)
    """Map side; None = scaled with the population so density stays at MAgent2's default."""

    max_cycles: int | None = setting(None, kind="int", low=2, optional=True)
    """Episode length limit (truncation); None = the game's default (pursuit 500, battle 1000).
    At least 2: RLlib checks an env with one step, which must not end the episode."""

    opponent: OpponentKind = setting("random", kind="str", choices=get_args(OpponentKind))
    """`random`: the other team acts uniformly at random inside the env; `learned`: it is a
    second agent id, for head-to-head training."""

    reward_mode: RewardMode = setting("team", kind="str", choices=get_args(RewardMode))
    """`team`: the team's summed reward, shared by all; `individual`: additionally the per-agent
    reward vector in the observation (`agent_reward`), for per-agent learners (paper Fig. 4)."""

    neighbourhood_fraction: float = setting(0.1, kind="float", low=0, low_open=True, high=1)
    """Each agent's neighbourhood is the ceil(fraction * alive team-mates) nearest team-mates."""

    n_active: int | None = setting(None, kind="int", low=0, optional=True)
    """Agents of each learning team the policy controls at reset (the first slots); the rest
    act uniformly at random. None = all. Incremental learning grows it during training."""

    reward_scope: RewardScope = setting("team", kind="str", choices=get_args(RewardScope))
    """The reward a learning team's step returns (what its learners regress): `team`, every
    agent's; `active`, the sum of its active (trained) agents' own rewards. Episode returns and
    the `team_reward` info stay the whole team's. Training sets it from
    `curriculum.reward_scope`."""

    inactive: InactiveKind = setting("random", kind="str", choices=get_args(InactiveKind))
    """How a learning team's inactive agents act: `random`, uniformly at random (the env draws
    their actions); `policy`, the policy's action for them is kept (it acts for every slot,
    greedily past the active ones). Training sets it from `curriculum.inactive`."""

    state_grid: int = setting(8, kind="int", low=1)
    """Side of the pooled global state grid, fixed whatever the map size."""

    mean_actions: bool = setting(True, kind="bool")
    """Compute each learning team's neighbour and team mean actions (`neighbour_mean_action`,
    `team_mean_action`); off, the observation leaves them out. Training sets it from the
    algorithms: only mean-field learners (MFQ, MFQMIX) read them."""

    wall_density: float | None = setting(None, kind="float", low=0, high=1, high_open=True,
                                         optional=True)
    """Interior walls as a fraction of map_size**2; None = the game's (pursuit 0.03, battle 0)."""

    rewards: dict[str, float] = setting(None, kind="mapping", default_factory=dict)
    """Overrides of magent2's reward arguments (pursuit: tag_penalty; battle: step_reward,
    dead_penalty, attack_penalty, attack_opponent_reward)."""

    seed: int | None = setting(None, kind="int", low=0, optional=True)
    """Seed used at the first reset when `reset()` is called without one."""

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> TeamEnvConfig:
        """Build and validate from a plain dict (RLlib's `env_config`, a YAML spec section)."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        # RLlib's EnvContext adds worker_index etc. as attributes, not keys, so a dict holds
        # only user keys; anything unknown is a typo we should not silently ignore.
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"env config: unknown key {shown(unknown[0])} (value "
                f"{shown(values[unknown[0]])}); "
                f"allowed keys: {sorted(known)}"
            )
        config = cls(**values)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ---- derived values -----------------------------------------------------------------
    @property
    def game_spec(self) -> Game:
        return GAMES[self.game]

    @property
    def team_counts(self) -> tuple[int, int]:
        opponents = self.n_opponents
        if opponents is None:
            opponents = self.n_agents * self.game_spec.opponent_ratio
        return self.n_agents, opponents

    @property
    def resolved_map_size(self) -> int:
        if self.map_size is not None:
            return self.map_size
        return self.game_spec.default_map_size(self.team_counts)

    @property
    def resolved_max_cycles(self) -> int:
        return self.max_cycles if self.max_cycles is not None else self.game_spec.default_max_cycles

    @property
    def resolved_wall_density(self) -> float:
        if self.wall_density is not None:
            return self.wall_density
        return self.game_spec.default_wall_density

    # ---- validation ---------------------------------------------------------------------
    def validate(self) -> None:
        """All checks, cross-field ones included. Raises ValueError; builds nothing."""
        try:
            check_fields(self)  # every field's own type and range
        except ValueError as error:
            raise ValueError(f"env config: {error}") from None
        if self.n_active is not None and self.n_active > self.n_agents:
            raise _bad("n_active", self.n_active, f"0..n_agents ({self.n_agents}) or null")
        self._check_rewards()
        if self.map_size is not None and self.map_size < self.game_spec.min_map_size:
            raise _bad("map_size", self.map_size, f"an integer >= {self.game_spec.min_map_size}")
        problem = self.game_spec.capacity_error(
            self.resolved_map_size, self.team_counts, self.resolved_wall_density
        )
        if problem:
            key = "n_agents" if self.n_opponents is None else "n_agents/n_opponents"
            value = self.n_agents if self.n_opponents is None else self.team_counts
            raise _bad(key, value, f"{problem} (map_size={self.resolved_map_size}); "
                                   "lower the count or raise map_size")

    def _check_rewards(self) -> None:
        reward_keys = list(self.game_spec.reward_keys)
        for key, value in self.rewards.items():
            if key not in reward_keys:
                raise _bad(f"rewards.{key}", value, f"keys of {self.game}: {reward_keys}")
            if not value_ok(value, REWARD):
                raise _bad(f"rewards.{key}", value, allowed(REWARD))


def _bad(key: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"env config: {key}={shown(value)} is invalid; allowed: {allowed}")
