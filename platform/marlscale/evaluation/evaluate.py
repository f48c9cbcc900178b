"""`marlscale evaluate`: greedy episodes of a checkpoint's policy against another policy.

    marlscale evaluate CKPT[:team] [--opponent random|CKPT[:team]] [--side SIDE]
                       [--episodes K] [--seed S] [--epsilon E] [--json OUT]

The policy plays the side it was trained on (or `--side`), the opponent the other side. The
default opponent is the checkpoint's other team when it holds one (a head-to-head run), else
the random team. Per side it reports, over the K episodes: return per agent (mean, std, 95%
confidence interval), kills, deaths and survivors at the end (tags in pursuit), the reward
difference (this side's return per agent minus the other's, with its 95% CI) and the win rate
(the share of episodes the side ends with more survivors where anyone died, or with a higher
return per agent where no one died or survivors are equal; exact ties are draws). Intervals
are Student-t intervals over episodes.

Checkpoints are untrusted until accepted: `prepare` reads only their
marlscale_checkpoint.json and checks their files (algorithms/checkpoints.py), before Ray
starts; RLlib unpickles the policies in `run`, once every check has passed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from marlscale import keys, stats
from marlscale.algorithms import memory
from marlscale.envs.config import TeamEnvConfig
from marlscale.episodes import Game, episode_seed
from marlscale.evaluation.arena import (
    RANDOM,
    Arena,
    Contestant,
    arena_env_config,
    at_population,
    check_sides,
    contestant,
)
from marlscale.specfile import check_value, field_meta, setting

EVENTS = ("kills", "deaths", "tags", "tagged")
"""Episode counts reported where the game has them (battle: kills, deaths; pursuit: tags)."""
SURVIVORS = "survivors"


def check_out(out: str | os.PathLike, suffix: str = ".gif", name: str = "--out") -> Path:
    """An output file path whose folder exists and is writable (checked before any work)."""
    path = Path(out).expanduser()
    folder = path.parent.resolve()
    if path.suffix.lower() != suffix or path.is_dir():
        raise ValueError(f"{name} {str(out)!r} is invalid{': it is a folder' * path.is_dir()}; "
                         f"allowed: a {suffix} file")
    if not folder.is_dir():
        raise ValueError(f"{name} {str(out)!r} is invalid: folder {str(folder)!r} does not "
                         "exist; allowed: a file in an existing, writable folder")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{name} {str(out)!r} is invalid: folder {str(folder)!r} is not "
                         "writable; allowed: a file in an existing, writable folder")
    return path


def write_json(path: Path, values: dict[str, Any]) -> None:
    """Write JSON whole or not at all (a temporary file in the same folder, then a rename)."""
    import json
    import tempfile

    handle, temporary = tempfile.mkstemp(suffix=".json", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(values, out, indent=2)
        os.replace(temporary, path)
    finally:  # a failed write (a full disk) leaves no tmp*.json behind
        if os.path.exists(temporary):
            os.unlink(temporary)


def outcome(mine: dict[str, float], theirs: dict[str, float]) -> float:
    """1 for a win, 0.5 for a draw, 0 for a loss. Where anyone died, more survivors wins;
    where no one died (pursuit, or a battle without kills), a higher return per agent."""
    anyone_died = mine.get("deaths", 0) or theirs.get("deaths", 0)
    key = keys.ALIVE_AT_END if anyone_died else keys.RETURN_PER_AGENT
    if mine[key] == theirs[key] and key == keys.ALIVE_AT_END:
        key = keys.RETURN_PER_AGENT  # as many survivors: the better return breaks the tie
    if mine[key] == theirs[key]:
        return 0.5
    return 1.0 if mine[key] > theirs[key] else 0.0


def side_summary(results: list[dict[str, Any]], side: str, other: str) -> dict[str, Any]:
    """A side's figures over episodes (`results` as `Arena.play` returns them)."""
    mine = [r["metrics"][side] for r in results]
    theirs = [r["metrics"][other] for r in results]
    outcomes = [outcome(a, b) for a, b in zip(mine, theirs)]
    summary = {
        keys.RETURN_PER_AGENT: stats.t_interval([m[keys.RETURN_PER_AGENT] for m in mine]),
        keys.REWARD_DIFFERENCE: stats.t_interval([m[keys.REWARD_DIFFERENCE] for m in mine]),
        "win_rate": float(np.mean([o == 1.0 for o in outcomes])),
        "draw_rate": float(np.mean([o == 0.5 for o in outcomes])),
        SURVIVORS: stats.t_interval([m[keys.ALIVE_AT_END] for m in mine]),
    }
    for event in EVENTS:
        if event in mine[0]:
            summary[event] = stats.t_interval([m[event] for m in mine])
    summary[keys.LENGTH] = stats.t_interval([m[keys.LENGTH] for m in mine])
    return summary


@dataclass(frozen=True)
class Evaluation:
    """A checked evaluation: who plays which side, in which env, how many episodes."""

    sides: dict[str, Contestant]
    """{side: who plays it}, the evaluated policy's side first."""
    env_config: TeamEnvConfig
    episodes: int = setting(10, kind="int", low=1, doc="--episodes")
    seed: int = setting(0, kind="int", low=0, doc="--seed")
    epsilon: float = setting(0.0, kind="float", low=0, high=1, doc="--epsilon")
    n_agents: int | None = setting(None, kind="int", low=1, optional=True, doc="--n-agents")
    """Played at this N per team (None: as trained)."""

    @classmethod
    def prepare(cls, checkpoint: str, opponent: str | None = None, side: str | None = None,
                episodes: int = 10, seed: int = 0, epsilon: float = 0.0,
                n_agents: int | None = None, envs: int = 1) -> Evaluation:
        """Read and check everything (no Ray): bad input raises ValueError naming it.
        `n_agents`: play at this N per team, the policies resized to it (transfer across N);
        `envs`: how many envs will play at once (their memory is checked first)."""
        for name, value in (("episodes", episodes), ("seed", seed), ("epsilon", epsilon),
                            ("n_agents", n_agents)):
            meta = field_meta(cls, name)
            check_value(meta["doc"], value, meta)  # named as the CLI flag
        if checkpoint == RANDOM:
            raise ValueError("CHECKPOINT 'random' is invalid; allowed: a checkpoint (the "
                             "random policy can only be the --opponent)")
        policy = contestant(checkpoint, "CHECKPOINT")
        if opponent is None:
            others = [t for t in policy.checkpoint.policies if t != policy.policy.team]
            opponent = f"{policy.checkpoint.path}:{others[0]}" if others else RANDOM
        rival = at_population(contestant(opponent, "--opponent"), n_agents)
        policy = at_population(policy, n_agents)
        env_config = arena_env_config([policy, rival], ["CHECKPOINT", "--opponent"], n_agents)
        envs = max(envs, 1)  # before any env is built (check_sides builds one)
        memory.check_envs([env_config] * envs, f"this evaluation ({envs} env(s), n_agents="
                                               f"{env_config.n_agents}, state_grid="
                                               f"{env_config.state_grid})")
        names = list(env_config.game_spec.team_names)
        mine = side or policy.trained_side
        if mine not in names:
            raise ValueError(f"--side {mine!r} is invalid for {env_config.game}; allowed: "
                             f"{', '.join(names)}")
        theirs = names[1 - names.index(mine)]
        check_sides({mine: policy, theirs: rival}, env_config,
                    {mine: "CHECKPOINT", theirs: "--opponent"})
        return cls(sides={mine: policy, theirs: rival}, env_config=env_config,
                   episodes=episodes, seed=seed, epsilon=float(epsilon), n_agents=n_agents)

    def games(self, key: str | None = None, first_index: int = 0,
              random: bool = False) -> list[Game]:
        """The episodes to play: each side's policy (by side; None: random), seeds 0..K-1.
        Several evaluations played in one Arena (zero_shot.py) name the evaluated policy `key`
        and number their games from `first_index`; `random`: every side plays at random, on
        the same episodes (maps and seeds): the random policy's level."""
        mine = next(iter(self.sides))
        sides = {side: None if c.is_random or random else key if key and side == mine else side
                 for side, c in self.sides.items()}
        return [Game(index=first_index + i, sides=sides, seed=episode_seed(self.seed, i),
                     epsilon=self.epsilon) for i in range(self.episodes)]

    def run(self, num_env_runners: int) -> dict[str, Any]:
        """Play the episodes on `num_env_runners` EnvRunners (0: in this process); the report.
        Ray must be running."""
        import time

        start = time.perf_counter()
        arena = Arena(self.env_config, {s: c for s, c in self.sides.items() if not c.is_random},
                      num_env_runners)
        try:
            results = arena.play(self.games())
        finally:
            arena.stop()
        first, second = self.sides
        report = {
            "game": self.env_config.game,
            "n_agents": dict(zip(self.env_config.game_spec.team_names,
                                 self.env_config.team_counts)),
            "map_size": self.env_config.resolved_map_size,
            "max_cycles": self.env_config.resolved_max_cycles,
            "episodes": self.episodes, "seed": self.seed, "epsilon": self.epsilon,
            "sides": {
                side: {**self.sides[side].describe(),
                       **side_summary(results, side, second if side == first else first)}
                for side in (first, second)
            },
        }
        report["wall_s"] = round(time.perf_counter() - start, 2)
        report["num_env_runners"] = num_env_runners
        return report


def table(report: dict[str, Any]) -> str:
    """The report as a readable table (one row per side)."""
    import pandas as pd

    rows = []
    for side, s in report["sides"].items():
        returns, difference = s[keys.RETURN_PER_AGENT], s[keys.REWARD_DIFFERENCE]
        row = {"side": side, "algorithm": s["algorithm"],  # ci95 None: one episode
               "return/agent": stats.format_mean(returns["mean"], returns["std"]),
               "95% CI": stats.format_interval(*(returns["ci95"] or (None, None))),
               "reward diff": stats.format_mean(difference["mean"], difference["std"]),
               "diff 95% CI": stats.format_interval(*(difference["ci95"] or (None, None))),
               "win rate": f"{s['win_rate']:.2f}", "draws": f"{s['draw_rate']:.2f}"}
        for event in (*EVENTS, SURVIVORS):
            if event in s:
                row[event] = f"{s[event]['mean']:.1f}"
        rows.append(row)
    header = (f"{report['game']} {' v '.join(str(n) for n in report['n_agents'].values())}, "
              f"{report['episodes']} episodes (seed {report['seed']}, epsilon "
              f"{report['epsilon']}), {report['wall_s']:.1f} s on "
              f"{max(report['num_env_runners'], 1)} EnvRunner(s)")
    policies = "\n".join(
        f"  {side}: the random policy" if s["algorithm"] == RANDOM else
        f"  {side}: {s['policy']} ({s['algorithm']}, trained as {s['trained_side']}, iteration "
        f"{s['iteration']}, N={s['trained_n_agents']}, {s['n_active']} agents controlled)"
        for side, s in report["sides"].items())
    return f"{header}\n{policies}\n\n{pd.DataFrame(rows).to_string(index=False)}"
