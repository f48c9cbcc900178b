"""`marlscale bench train`: sampling and training throughput of the learner family, as JSON.

Measured in one run, beside raw magent2 (PettingZoo parallel_env, random actions):
* sampling with the Q-module in the loop (per-agent epsilon-greedy, QMIX agent network) on a
  TeamEnvRunner, pursuit N=25 and N=100, in agent-steps/s (all agents in the simulation);
* training throughput: one Algorithm in this process, 1 update (batch 128) per 10 env steps,
  pursuit N=25, env-steps/s end to end;
* learner updates/s at batch 128, and the replay's bytes per stored agent-step.
"""

from __future__ import annotations

import os
import time
from typing import Any

from marlscale import keys
from marlscale.bench.env import _raw_pettingzoo, machine
from marlscale.train import TrainSpec


def _spec(n_agents: int, **training) -> TrainSpec:
    return TrainSpec.from_dict({
        "env": "adversarial_pursuit",
        "env_config": {"n_agents": n_agents},
        "training": {"algorithm": "qmix", **training},
        "seed": 0,
    })


def sampling(n_agents: int, steps: int) -> dict[str, Any]:
    """Agent-steps/s of a TeamEnvRunner (Q-module, epsilon 0.1) and of raw magent2."""
    from marlscale.algorithms.env_runner import TeamEnvRunner

    config = _spec(n_agents).algorithm_config()
    config.validate()
    runner = TeamEnvRunner(config=config)
    for team in runner.module.keys():
        runner.module[team].epsilon.fill_(0.1)
    runner.collect(50)  # warm-up: first reset, torch kernels
    start = time.perf_counter()
    runner.collect(steps)
    elapsed = time.perf_counter() - start
    env_config = runner.team_envs[0].env_config
    agents_per_step = sum(env_config.team_counts)
    map_size = env_config.resolved_map_size
    raw_agent_steps, raw_elapsed = _raw_pettingzoo("adversarial_pursuit", map_size, steps, 0)
    ours = steps * agents_per_step / elapsed
    raw = raw_agent_steps / raw_elapsed
    runner.stop()
    return {
        "game": "adversarial_pursuit", "n_agents": n_agents, "map_size": map_size,
        "agent_steps_per_s": {"sampling_with_q_module": round(ours),
                              "raw_pettingzoo_random": round(raw)},
        "sampling_vs_raw": round(ours / raw, 3),
    }


def training(steps: int) -> dict[str, Any]:
    """End-to-end env-steps/s with 1 update of batch 128 per 10 env steps, pursuit N=25."""
    import ray

    spec = _spec(25, batch_size=128, updates_per_env_step=0.1, learning_starts=200,
                 rollout_length=100, replay_capacity=20_000)
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # One process on this machine: the Algorithm reserves (and torch uses) every core.
    config = spec.algorithm_config().resources(num_cpus_for_main_process=os.cpu_count() or 1)
    algo = config.build_algo()
    try:
        while algo.counters[keys.UPDATES] == 0:  # fill past learning_starts
            algo.train()
        env0, upd0, start = algo.counters[keys.ENV_STEPS], \
            algo.counters[keys.UPDATES], time.perf_counter()
        while algo.counters[keys.ENV_STEPS] - env0 < steps:
            algo.train()
        elapsed = time.perf_counter() - start
        env_steps = algo.counters[keys.ENV_STEPS] - env0
        updates = algo.counters[keys.UPDATES] - upd0
        # Learner alone: 16 updates of batch 128 per call, as the Algorithm does.
        start = time.perf_counter()
        algo.learn(64)
        learner_updates_per_s = 64 / (time.perf_counter() - start)
        replay = next(iter(algo.replays.values()))
        bytes_per_agent_step = replay.bytes_per_agent_step
        obs_bytes = sum(a.nbytes for a in replay.obs.values()) / (replay.capacity * replay.n_agents)
    finally:
        algo.stop()
        if started:
            ray.shutdown()
    map_size = spec.algorithm_config().team_env_config.resolved_map_size
    raw_agent_steps, raw_elapsed = _raw_pettingzoo("adversarial_pursuit", map_size, steps, 0)
    raw_env_steps_per_s = steps / raw_elapsed
    ours = env_steps / elapsed
    return {
        "game": "adversarial_pursuit", "n_agents": 25, "batch_size": 128,
        "updates_per_env_step": round(updates / env_steps, 3),
        "env_steps_per_s": {"training": round(ours, 1), "raw_pettingzoo_random":
                            round(raw_env_steps_per_s, 1)},
        "agent_steps_per_s": {"training": round(ours * 25, 1)},  # end to end, as in train
        "training_vs_raw": round(ours / raw_env_steps_per_s, 4),
        "learner_updates_per_s": round(learner_updates_per_s, 1),
        "replay_bytes_per_agent_step": round(bytes_per_agent_step, 1),
        "replay_observation_bytes_per_agent_step": round(obs_bytes, 1),
    }


def run(steps: int = 1000) -> dict[str, Any]:
    return {
        "benchmark": "train",
        "machine": machine(),
        "sampling": [sampling(25, steps), sampling(100, steps)],
        "training": training(steps),
    }
