"""Policies from checkpoints playing each other (or a random team) on Ray EnvRunners.

A `Contestant` is one team policy of a checkpoint (`CKPT[:team]`) or the random policy. An
`Arena` is a group of RLlib EnvRunners (`TeamEnvRunner`, one Ray actor each) holding a
head-to-head env of one game and N and every contestant's module; `Arena.play(games)` spreads
the games (`marlscale.episodes.Game`) over the runners, each played by the one episode loop,
`marlscale.episodes.play_episode`, with its own seed: the env's map and random agents,
epsilon-greedy draws and random teams all follow that seed, so results do not depend on how
many runners there are, and the same seed gives the same numbers.

Any team policy may play any side whose observations and actions it fits: in battle a
red-trained policy can play blue (starting on the half of the map it never saw in training);
in pursuit predators only play predators. A policy keeps the curriculum stage of its
checkpoint: under incremental learning the agents it never trained act at random, as they did
in training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from marlscale import keys
from marlscale.algorithms import checkpoints
from marlscale.envs.config import TeamEnvConfig
from marlscale.episodes import Game, play_games, play_spread

RANDOM = "random"


@dataclass(frozen=True)
class Contestant:
    """A team policy of a checkpoint, or the random policy (`policy is None`)."""

    label: str
    """How reports name it: 'random', or the checkpoint path with its team ('CKPT:red')."""
    checkpoint: checkpoints.TeamCheckpoint | None = None
    policy: checkpoints.TeamPolicy | None = None
    n_agents: int | None = None
    """The population it plays at, when not the one it was trained at (`--n-agents`): its slot
    embeddings are grown or cut to fit (`TeamQModule.resize_agents`)."""

    @property
    def is_random(self) -> bool:
        return self.policy is None

    @property
    def algorithm(self) -> str:
        return RANDOM if self.policy is None else self.policy.algorithm

    @property
    def trained_side(self) -> str | None:
        return None if self.policy is None else self.policy.team

    @property
    def trained_n_active(self) -> int | None:
        """Agents its policy controlled at its checkpoint's curriculum stage; None: random."""
        return None if self.policy is None else self.checkpoint.n_active[self.policy.team]

    @property
    def n_active(self) -> int | None:
        """Agents its policy controls here: as trained, or at another N every agent when it
        controlled all of them (else as many as it controlled, at most N)."""
        trained = self.trained_n_active
        if trained is None or self.n_agents is None:
            return trained
        return self.n_agents if trained >= self.policy.n_agents else min(trained, self.n_agents)

    @property
    def plays_n_agents(self) -> int | None:
        return None if self.policy is None else self.n_agents or self.policy.n_agents

    def load_module(self):
        """Its TeamQModule, resized to the population it plays at."""
        module = self.policy.load_module()
        if self.n_agents is not None and self.n_agents != self.policy.n_agents:
            module.resize_agents(self.n_agents, trained=self.trained_n_active)
        return module

    def describe(self) -> dict[str, Any]:
        return {"policy": self.label, "algorithm": self.algorithm,
                "trained_side": self.trained_side, "n_active": self.n_active,
                "trained_n_agents": None if self.policy is None else self.policy.n_agents,
                "iteration": None if self.checkpoint is None else self.checkpoint.iteration}


def contestant(text: str, name: str = "CHECKPOINT") -> Contestant:
    """'random', or 'CKPT[:team]' read from disk (checked, no Ray)."""
    if text == RANDOM:
        return Contestant(label=RANDOM)
    path, team = checkpoints.split_team(text)
    checkpoint = checkpoints.load(path, name)
    policy = checkpoint.policy(team, name)
    return Contestant(label=f"{checkpoint.path}:{policy.team}", checkpoint=checkpoint,
                      policy=policy)


def at_population(contestant: Contestant, n_agents: int | None) -> Contestant:
    """The contestant playing at `n_agents` per team (None or random: unchanged)."""
    if n_agents is None or contestant.is_random:
        return contestant
    return dataclasses.replace(contestant, n_agents=n_agents)


def arena_env_config(contestants: list[Contestant], names: list[str],
                     n_agents: int | None = None) -> TeamEnvConfig:
    """The head-to-head env every contestant can play in: the first checkpoint's game, map and
    episode length, with both teams as agent ids. Raises unless all share the game and N.
    `n_agents`: play at this N instead (`--n-agents`; the map follows the game's rules)."""
    trained = [(c, n) for c, n in zip(contestants, names) if not c.is_random]
    if not trained:
        raise ValueError(f"{names[0]}=random is invalid against a random opponent; allowed: a "
                         "checkpoint on at least one side")
    first, first_name = trained[0]
    base = first.checkpoint.env_config
    for other, other_name in trained[1:]:
        env = other.checkpoint.env_config
        if env.game != base.game:
            raise ValueError(
                f"{other_name} {other.label!r} is a checkpoint of {env.game} and {first_name} "
                f"{first.label!r} of {base.game}; allowed: checkpoints of the same game")
        if env.team_counts != base.team_counts:
            raise ValueError(
                f"{other_name} {other.label!r} was trained at N={_counts(env)} and {first_name} "
                f"{first.label!r} at N={_counts(base)}; allowed: checkpoints of the same N "
                "(cross-play needs the same team sizes)")
    values = base.to_dict()
    values.update(opponent="learned", n_active=None, mean_actions=True)
    if n_agents is None:
        return TeamEnvConfig.from_dict(values)
    values["n_agents"] = n_agents
    try:
        return TeamEnvConfig.from_dict(values)
    except ValueError as error:
        raise ValueError(f"--n-agents {n_agents} is invalid for {first.label!r}: {error}") \
            from None


def _counts(env: TeamEnvConfig) -> str:
    names = env.game_spec.team_names
    return ", ".join(f"{n} {team}" for team, n in zip(names, env.team_counts))


def check_sides(sides: dict[str, Contestant], env_config: TeamEnvConfig,
                names: dict[str, str]) -> None:
    """Raise unless every contestant's policy fits its side (views, actions and N); `names`:
    how the error calls each side's contestant (e.g. CHECKPOINT, --opponent)."""
    spaces = _side_spaces(env_config)
    for side, contestant in sides.items():
        if contestant.is_random:
            continue
        if side not in spaces:
            raise ValueError(f"--side {side!r} is invalid; allowed: {', '.join(spaces)}")
        views, n_actions = spaces[side]
        policy = contestant.policy
        n = contestant.plays_n_agents
        fits = [s for s, (v, a) in spaces.items()
                if (n, *policy.view_shape) == v and policy.n_actions == a]
        if side not in fits:
            raise ValueError(
                f"{names[side]} {contestant.label!r} cannot play {side}: its policy sees "
                f"{n} agents' {policy.view_shape} views with {policy.n_actions} "
                f"actions; {side} has {views[0]} agents, {views[1:]} views and {n_actions} "
                f"actions; allowed sides: {', '.join(fits)}")


_SPACES: dict[str, dict[str, tuple[tuple[int, ...], int]]] = {}
"""`_side_spaces` by env config: an env of 1,000 agents takes a second to build, and a zero-shot
evaluation checks every trial of a sweep at each N."""


def _side_spaces(env_config: TeamEnvConfig) -> dict[str, tuple[tuple[int, ...], int]]:
    import json

    from marlscale.envs.team_env import MagentTeamEnv

    key = json.dumps(env_config.to_dict(), sort_keys=True, default=str)
    if key not in _SPACES:
        env = MagentTeamEnv(env_config)
        _SPACES[key] = {team: (tuple(int(d) for d in space[keys.VIEWS].shape),
                               int(env.action_spaces[team].nvec[0]))
                        for team, space in env.observation_spaces.items()}
    return _SPACES[key]


class Arena:
    """EnvRunners with a head-to-head env and every contestant's module, ready to play."""

    def __init__(self, env_config: TeamEnvConfig, contestants: dict[str, Contestant],
                 num_env_runners: int):
        from ray.rllib.env.env_runner_group import EnvRunnerGroup

        from marlscale.algorithms.algorithm import TeamQ
        from marlscale.envs import ENV_NAMES

        config = (
            TeamQ.get_default_config()
            .environment(ENV_NAMES[env_config.game], env_config=env_config.to_dict())
            .env_runners(num_env_runners=num_env_runners, num_envs_per_env_runner=1)
        )
        config.validate()
        self.num_env_runners = num_env_runners
        self.group = EnvRunnerGroup(config=config, local_env_runner=num_env_runners == 0)
        modules = {key: c.load_module() for key, c in contestants.items() if not c.is_random}
        n_active = {key: c.n_active for key, c in contestants.items() if not c.is_random}
        self._modules, self._n_active = modules, n_active

    def play(self, games: list[Game]) -> list[dict[str, Any]]:
        """Every game's result, in game order, played across the EnvRunners (each in the
        runner's head-to-head env)."""
        modules, n_active = self._modules, self._n_active

        def play(runner, mine):
            return play_games(runner.team_envs[0], mine, modules, n_active)

        return play_spread(self.group, games, play, self.num_env_runners)

    def stop(self) -> None:
        self.group.stop()
