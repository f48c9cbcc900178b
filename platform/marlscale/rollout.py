"""Random-policy rollouts of the team envs on Ray: the envs' own speed and the random level.

`marlscale rollout` needs no learner and no checkpoint: it checks that the envs and a Ray
cluster work end to end, measures each env's throughput (agent steps per second inside
`env.step`, the ceiling any training run on it has) and gives the random policy's episode
metrics. Each (game, seed) pair is a Ray task that plays whole episodes through the one episode
loop (`marlscale.episodes.play_episode`), every agent acting uniformly at random, episode `i`
with seed `episode_seed(seed, i)`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import ray

from marlscale.envs import MagentTeamEnv, TeamEnvConfig
from marlscale.episodes import Game, episode_seed, play_episode


def check_memory(configs: list[TeamEnvConfig]) -> None:
    """Refuse, before Ray starts, rollouts whose envs (one per task, all at once) would not
    fit this machine's memory (magent2's views and the pooled state grow with N and
    state_grid); a ValueError with the estimate."""
    from marlscale.algorithms import memory

    biggest = max(configs, key=lambda config: config.team_counts)
    memory.check_envs(configs, f"these rollouts ({len(configs)} envs, n_agents="
                               f"{biggest.n_agents}, state_grid={biggest.state_grid})")


def play_episodes(config: TeamEnvConfig, episodes: int) -> dict[str, Any]:
    """Play `episodes` random episodes (seeds from `config.seed`; None: fresh entropy); their
    episode metrics plus the env's agent-steps/s."""
    env = MagentTeamEnv(config)
    seed = np.random.SeedSequence(config.seed).entropy
    sides = {name: None for name in env.possible_agents}
    played = [play_episode(env, Game(index=i, sides=sides, seed=episode_seed(seed, i)), {}, {})
              for i in range(episodes)]
    steps = sum(episode.steps for episode in played)
    return {
        "game": config.game,
        "n_agents": config.n_agents,
        "map_size": env.map_size,
        "episodes": [episode.metrics for episode in played],
        "env_steps": steps,
        "agent_steps_per_s": sum(config.team_counts) * steps
        / sum(episode.env_s for episode in played),
    }


_remote_play = ray.remote(num_cpus=1)(play_episodes)


def run(configs: list[TeamEnvConfig], episodes: int) -> list[dict[str, Any]]:
    """Fan the rollouts out as Ray tasks (on the cluster `ray.init` connected to)."""
    return ray.get([_remote_play.remote(config, episodes) for config in configs])


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Mean episode metrics of the learning team (the first agent id)."""
    team = next(iter(result["episodes"][0]))
    per_episode = [episode[team] for episode in result["episodes"]]
    summary = {
        "game": result["game"],
        "team": team,
        "n_agents": result["n_agents"],
        "map_size": result["map_size"],
        "episodes": len(per_episode),
        "agent_steps_per_s": round(result["agent_steps_per_s"]),
    }
    for metric in per_episode[0]:
        summary[metric] = round(float(np.mean([m[metric] for m in per_episode])), 3)
    return summary
