"""Random-policy rollouts of the team envs on Ray: the main job until the learners land.

Each (game, seed) pair is a Ray task that plays whole episodes with uniformly random team
actions and reports its episode metrics and the env's own throughput.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import ray

from marlscale import keys
from marlscale.envs import MagentTeamEnv, TeamEnvConfig


def play_episodes(config: TeamEnvConfig, episodes: int) -> dict[str, Any]:
    """Play `episodes` episodes with random actions; episode metrics plus agent-steps/s."""
    env = MagentTeamEnv(config)
    rng = np.random.default_rng(config.seed)
    agents_total = sum(config.team_counts)
    results, steps, seconds = [], 0, 0.0
    for _ in range(episodes):
        env.reset()
        spaces = {name: env.action_spaces[name] for name in env.possible_agents}
        done = False
        while not done:
            actions = {name: rng.integers(0, space.nvec) for name, space in spaces.items()}
            start = time.perf_counter()
            _, _, terminated, truncated, infos = env.step(actions)
            seconds += time.perf_counter() - start
            steps += 1
            done = terminated["__all__"] or truncated["__all__"]
        results.append({name: info[keys.EPISODE] for name, info in infos.items()})
    return {
        "game": config.game,
        "n_agents": config.n_agents,
        "map_size": env.map_size,
        "episodes": results,
        "env_steps": steps,
        "agent_steps_per_s": agents_total * steps / seconds,
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
