"""`marlscale bench env`: team-env throughput against raw magent2, in one process.

Three ways to step the same game with uniformly random actions, interleaved round by round so
that machine noise hits all of them alike:

* ``raw_pettingzoo``: magent2's own PettingZoo ``parallel_env`` (what users call magent2),
  with actions drawn in one vectorized call. The issue's target is measured against this.
* ``raw_engine``: the bare C++ engine loop (set_action, step, get_observation, get_reward,
  get_alive, clear_dead): the floor no Python wrapper can beat, reported for honesty.
* ``team_env``: marlscale's `MagentTeamEnv` (random opponent), uint8 views, neighbourhood
  mean actions, pooled state and infos included.

Throughput is agent-steps/s: agents alive in the simulation (both teams) per env step.
"""

from __future__ import annotations

import platform
import time
from typing import Any

import numpy as np
from magent2.environments import adversarial_pursuit_v4, battle_v4

from marlscale.envs import MagentTeamEnv, TeamEnvConfig

PZ_MODULES = {"adversarial_pursuit": adversarial_pursuit_v4, "battle": battle_v4}
DEFAULT_CASES = (("adversarial_pursuit", 25), ("adversarial_pursuit", 100), ("battle", 64))
SCALING_SIZES = (25, 100, 250, 500, 1000)


def _raw_pettingzoo(game: str, map_size: int, steps: int, seed: int) -> tuple[int, float]:
    env = PZ_MODULES[game].parallel_env(map_size=map_size, max_cycles=10**9)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    n_actions = {agent: env.action_space(agent).n for agent in env.possible_agents}
    agent_steps, start = 0, time.perf_counter()
    for _ in range(steps):
        agents = env.agents
        if not agents:
            env.reset()
            agents = env.agents
        highs = np.fromiter((n_actions[a] for a in agents), dtype=np.int64, count=len(agents))
        draws = rng.integers(0, highs)
        env.step(dict(zip(agents, draws.tolist())))
        agent_steps += len(agents)
    return agent_steps, time.perf_counter() - start


def _raw_engine(game: str, map_size: int, steps: int, seed: int) -> tuple[int, float]:
    env = PZ_MODULES[game].parallel_env(map_size=map_size, max_cycles=10**9)
    env.reset(seed=seed)
    engine = env.env
    handles = engine.get_handles()
    n_actions = [int(engine.get_action_space(h)[0]) for h in handles]
    rng = np.random.default_rng(seed)
    agent_steps, start = 0, time.perf_counter()
    for _ in range(steps):
        for handle, n_action in zip(handles, n_actions):
            count = engine.get_num(handle)
            engine.set_action(handle, rng.integers(0, n_action, count, dtype=np.int32))
            agent_steps += count
        engine.step()
        for handle in handles:
            engine.get_observation(handle)
            engine.get_reward(handle)
            engine.get_alive(handle)
        engine.clear_dead()
    return agent_steps, time.perf_counter() - start


def _team_env(game: str, n_agents: int, steps: int, seed: int,
              mean_actions: bool = True) -> tuple[int, float, int]:
    env = MagentTeamEnv(TeamEnvConfig(game=game, n_agents=n_agents, seed=seed, max_cycles=10**9,
                                      mean_actions=mean_actions))
    env.reset()
    rng = np.random.default_rng(seed)
    nvec = {name: env.action_spaces[name].nvec for name in env.possible_agents}
    agent_steps, start = 0, time.perf_counter()
    for _ in range(steps):
        agent_steps += sum(env.alive_counts().values())
        _, _, terminated, _, _ = env.step({n: rng.integers(0, v) for n, v in nvec.items()})
        if terminated["__all__"]:
            env.reset()
    return agent_steps, time.perf_counter() - start, env.map_size


def measure(game: str, n_agents: int, steps: int, rounds: int, seed: int = 0) -> dict[str, Any]:
    """Best-of-`rounds` agent-steps/s of the four stepping paths, interleaved."""
    best: dict[str, float] = {}
    map_size = TeamEnvConfig(game=game, n_agents=n_agents).resolved_map_size
    for r in range(rounds):
        runs = {
            "team_env": _team_env(game, n_agents, steps, seed + r)[:2],
            "team_env_no_mean_actions": _team_env(game, n_agents, steps, seed + r, False)[:2],
            "raw_pettingzoo": _raw_pettingzoo(game, map_size, steps, seed + r),
            "raw_engine": _raw_engine(game, map_size, steps, seed + r),
        }
        for name, (agent_steps, seconds) in runs.items():
            best[name] = max(best.get(name, 0.0), agent_steps / seconds)
    return {
        "game": game,
        "n_agents": n_agents,
        "map_size": map_size,
        "agent_steps_per_s": {name: round(value) for name, value in best.items()},
        "team_env_vs_raw_pettingzoo": round(best["team_env"] / best["raw_pettingzoo"], 3),
        "team_env_vs_raw_engine": round(best["team_env"] / best["raw_engine"], 3),
        # IQL, VDN and QMIX runs skip the mean actions (only MFQ and MFQMIX read them).
        "no_mean_actions_vs_team_env": round(best["team_env_no_mean_actions"]
                                             / best["team_env"], 3),
        "us_per_agent_step": {name: round(1e6 / value, 3) for name, value in best.items()},
    }


def machine() -> dict[str, Any]:
    import os

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    }


def run(
    cases=DEFAULT_CASES, steps: int = 1000, rounds: int = 3, scaling: bool = False
) -> dict[str, Any]:
    """The benchmark's JSON: the default cases, and optionally the N-scaling sweep."""
    report: dict[str, Any] = {
        "benchmark": "env",
        "machine": machine(),
        "steps_per_round": steps,
        "rounds": rounds,
        "cases": [measure(game, n, steps, rounds) for game, n in cases],
    }
    if scaling:
        report["scaling"] = [
            measure(game, n, max(100, steps * 25 // n), rounds)
            for game in ("adversarial_pursuit", "battle")
            for n in SCALING_SIZES
        ]
    return report
