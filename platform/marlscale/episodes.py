"""The one episode loop: every episode that is played whole rather than sampled for training.

Training's greedy evaluation and the random policy's level (`TeamQ.evaluate_greedy`),
`marlscale evaluate` and the league's cross-play (`evaluation.arena.Arena`), `marlscale render`
(through `on_step`) and `marlscale rollout` (random play, timed) all play `play_episode`, and
those on EnvRunners split their games with `play_spread`. Each episode is a `Game` with its own
seed (`episode_seed`): the env's map and random agents, the epsilon-greedy draws and the random
sides all follow it, so a result depends neither on which EnvRunner played it nor on how many
there were, and a fix to seeding or epsilon is made here, once.

Training's sampler (`TeamEnvRunner.collect`) is another job and stays apart: vectorised over
envs, its episodes run on across calls, cut into chunks for the replay.

A policy here is any module with `act(obs, explore, generator)` over a batch of team
observations and an `epsilon` buffer (`TeamQModule`; models sit above this layer).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from marlscale import keys


def episode_seed(seed: int, episode: int) -> int:
    """The seed of episode `episode` of a series with `seed` (independent streams)."""
    return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0] % (2**31 - 1))


@dataclass(frozen=True)
class Game:
    """One episode to play: who plays each side, with which seed and epsilon."""

    index: int
    """Its place in the series: results come back in this order, and it picks the EnvRunner
    that plays it (`share`)."""
    sides: dict[str, str | None]
    """{side: key of its policy in `policies`, or None for the random policy}."""
    seed: int
    epsilon: float = 0.0
    """Each policy-controlled agent acts uniformly at random with this probability (0: greedy)."""
    tags: dict[str, Any] = field(default_factory=dict)
    """Anything the caller wants back with the result (matchup ids and the like)."""


@dataclass(frozen=True)
class Episode:
    """What one played game gave."""

    metrics: dict[str, dict[str, float]]
    """{side: the env's episode metrics} for every side of the game."""
    steps: int
    """Env steps taken."""
    env_s: float
    """Seconds spent inside `env.step` alone (the env's own throughput, without the policies)."""


@contextlib.contextmanager
def _exploring(modules, epsilon: float):
    """Within, the modules explore with `epsilon`; their own values come back afterwards. On an
    EnvRunner the module is training's, whose epsilon (synced with the weights) sets how the
    training samples explore: an evaluation must not leave its epsilon there."""
    saved = [(module, module.epsilon.clone()) for module in modules]
    try:
        for module, _ in saved:
            module.epsilon.fill_(epsilon)
        yield
    finally:
        for module, value in saved:
            module.epsilon.copy_(value)


def play_episode(env, game: Game, policies: Mapping[str, Any], n_active: Mapping[str, int],
                 on_step: Callable[[Any, int, dict], None] | None = None) -> Episode:
    """Play `game` in `env` (a MagentTeamEnv whose agent ids are the game's sides) to its end.

    A side whose key is None acts uniformly at random, every agent of it (its metrics say
    `n_active` 0: the policy controls none of them); otherwise its policy
    (`policies[key]`) controls the first `n_active[key]` agents and the env moves the others at
    random, as under a curriculum stage. `on_step(env, step, infos)` is called after the reset
    (step 0) and after every step."""
    import torch

    generator = torch.Generator().manual_seed(game.seed)
    rng = np.random.default_rng(game.seed)
    for side, key in game.sides.items():
        env.set_active(env.action_spaces[side].shape[0] if key is None else n_active[key], side)
    explore = game.epsilon > 0
    playing = {id(policies[key]): policies[key] for key in game.sides.values() if key is not None}
    obs, infos = env.reset(seed=game.seed)
    step, env_s = 0, 0.0
    if on_step is not None:
        on_step(env, step, infos)
    with torch.no_grad(), _exploring(playing.values() if explore else (), game.epsilon):
        while True:
            actions = {}
            for side, key in game.sides.items():
                space = env.action_spaces[side]
                if key is None:
                    actions[side] = rng.integers(0, space.nvec[0], space.shape[0])
                    continue
                batch = {k: torch.from_numpy(v[None]) for k, v in obs[side].items()}
                width, explore_width = env.acting_slots(side)
                actions[side] = policies[key].act(batch, explore, generator, width,
                                                  explore_width)[0].numpy()
            started = time.perf_counter()
            obs, _, terminated, truncated, infos = env.step(actions)
            env_s += time.perf_counter() - started
            step += 1
            if on_step is not None:
                on_step(env, step, infos)
            if terminated["__all__"] or truncated["__all__"]:
                # The env counts a random side's agents as active (it moves none of them
                # itself); the policy controls none of them.
                metrics = {side: {**infos[side][keys.EPISODE],
                                  **({keys.N_ACTIVE: 0} if key is None else {})}
                           for side, key in game.sides.items()}
                return Episode(metrics, step, env_s)


def share(games: list[Game], worker_index: int | None, num_runners: int) -> list[Game]:
    """The games EnvRunner `worker_index` plays when `num_runners` remote runners split them:
    every `num_runners`-th by index; the local runner (index 0 or None) plays them all."""
    if not worker_index:
        return list(games)
    return [game for game in games if game.index % num_runners == worker_index - 1]


def play_games(env, games: list[Game], policies: Mapping[str, Any],
               n_active: Mapping[str, int]) -> list[dict[str, Any]]:
    """Play `games` one after another in `env`: per game its `index`, `sides`, `tags` and
    `metrics` ({side: episode metrics})."""
    return [{"index": game.index, "sides": dict(game.sides), "tags": dict(game.tags),
             "metrics": play_episode(env, game, policies, n_active).metrics}
            for game in games]


def play_spread(group, games: list[Game], play: Callable[[Any, list[Game]], list[dict]],
                num_runners: int) -> list[dict[str, Any]]:
    """Every game's result, in game order, played on an RLlib EnvRunnerGroup: `play(runner,
    its_games)` runs on each remote runner with its `share` (on the local one with all of them
    when `num_runners` is 0) and returns `play_games`' results. Raises if a failed runner lost
    some."""
    def run(runner):
        return play(runner, share(games, runner.worker_index, num_runners))

    per_runner = group.foreach_env_runner(run, local_env_runner=num_runners == 0)
    results = sorted((r for rs in per_runner for r in rs), key=lambda r: r["index"])
    if len(results) != len(games):
        raise RuntimeError(f"{len(games) - len(results)} of {len(games)} episodes were lost "
                           "with a failed EnvRunner")
    return results
