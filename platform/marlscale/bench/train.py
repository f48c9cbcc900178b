"""`marlscale bench train`: sampling and training throughput of the learner family, as JSON.

Measured in one run, beside raw magent2 (PettingZoo parallel_env, random actions):
* sampling with the Q-module in the loop (per-agent epsilon-greedy, QMIX agent network) on a
  TeamEnvRunner, pursuit N=25 and N=100, in agent-steps/s (all agents in the simulation);
* training throughput: one Algorithm in this process, 1 update (batch 128) per 10 env steps,
  pursuit N=25 (or `--n-agents N`, `--active K` of them trained), env-steps/s end to end;
* learner updates/s at batch 128, and the replay's bytes per stored env step and agent-step.

Each training case also times the bare agent network at the learner's shapes in the same
process (`compute_limit`) and reports `learner_vs_compute_limit`. With `--profile`: where one
update's time goes, phase by phase (`profile`).

With `--cores`: training at N=25 and N=100 on one core, then on two, first taking turns (the
learner's torch on both cores), then with a remote EnvRunner sampling alongside the learner.

With `--active K` < N, the same measurement at N=K with every agent active runs beside it, and
`scale` gives the ratios (N, K active) / (K, all active): the cost of the untrained agents.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from marlscale import cluster, keys
from marlscale.algorithms.algorithm import MAX_MINIBATCHES_PER_CALL as MAX_MINIBATCHES
from marlscale.bench.env import _raw_pettingzoo, machine
from marlscale.envs import register_envs
from marlscale.runspec import TrainSpec

TRAINING = {"batch_size": 128, "updates_per_env_step": 0.1, "learning_starts": 200,
            "rollout_length": 100, "replay_capacity": 20_000}
"""The training settings every measurement uses: 1 update of batch 128 per 10 env steps."""


def _spec(n_agents: int, n_active: int | None = None, **training) -> TrainSpec:
    return TrainSpec.from_dict({
        "env": "adversarial_pursuit",
        "env_config": {"n_agents": n_agents, "n_active": n_active},
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


def training(steps: int, n_agents: int = 25, n_active: int | None = None,
             cores: int | None = None, env_runners: int = 0) -> dict[str, Any]:
    """End-to-end env-steps/s with 1 update of batch 128 per 10 env steps, pursuit N agents of
    which `n_active` (default all) are trained.

    `cores`: this process, its Ray and its workers are pinned to that many CPUs (default all).
    `env_runners`: 0, sampling in this process, taking turns with the learner, which uses every
    core; else that many remote EnvRunners sample alongside the learner (`sample_ahead`), one
    core each, and the learner keeps the rest."""
    import ray

    spec = _spec(n_agents, n_active, **TRAINING)
    every = os.sched_getaffinity(0)
    pinned = set(sorted(every)[:cores]) if cores else every
    os.sched_setaffinity(0, pinned)  # before Ray starts: its processes inherit it
    local = contextlib.ExitStack()
    if not ray.is_initialized():  # a local Ray of its own (marlscale/cluster.py), pinned too
        local.enter_context(cluster.connect(None, len(pinned)))
        register_envs()  # Tune's registry lives in the Ray session
    config = spec.algorithm_config().resources(
        num_cpus_for_main_process=max(1, len(pinned) - env_runners))
    config.env_runners(num_env_runners=env_runners)
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
        # Learner alone (16 updates of batch 128 per call, as the Algorithm does), in rounds
        # interleaved with the bare network's probe at the same shapes (`compute_limit`).
        limit = compute_limit(algo)
        learner_updates_per_s = limit["learner_updates_per_s"]
        replay = next(iter(algo.replays.values()))
        bytes_per_agent_step = replay.bytes_per_agent_step
        bytes_per_env_step = replay.bytes_per_env_step
        obs_bytes = (sum(a.nbytes for a in replay.obs.values())
                     + sum(c.nbytes for c in replay.agent_obs.values())) / replay.capacity
    finally:
        algo.stop()
        local.close()
        os.sched_setaffinity(0, every)
    map_size = spec.algorithm_config().team_env_config.resolved_map_size
    raw_agent_steps, raw_elapsed = _raw_pettingzoo("adversarial_pursuit", map_size, steps, 0)
    raw_env_steps_per_s = steps / raw_elapsed
    ours = env_steps / elapsed
    active = n_agents if n_active is None else n_active
    return {
        "game": "adversarial_pursuit", "n_agents": n_agents, "n_active": active,
        "map_size": map_size, "batch_size": 128, "cores": len(pinned),
        "sampling": "alongside learning" if env_runners else "taking turns with learning",
        "env_runners": env_runners,
        "updates_per_env_step": round(updates / env_steps, 3),
        "env_steps_per_s": {"training": round(ours, 1), "raw_pettingzoo_random":
                            round(raw_env_steps_per_s, 1)},
        "agent_steps_per_s": {"training": round(ours * n_agents, 1)},  # end to end, as in train
        "training_vs_raw": round(ours / raw_env_steps_per_s, 4),
        "learner_updates_per_s": round(learner_updates_per_s, 1),
        "compute_limit_updates_per_s": limit["compute_limit_updates_per_s"],
        "compute_limit_gflop_per_s": limit["compute_limit_gflop_per_s"],
        "learner_vs_compute_limit": limit["learner_vs_compute_limit"],
        "torch_threads": limit["torch_threads"],
        "peak_rss_mib": peak_rss_mib(),
        "replay_bytes_per_env_step": round(bytes_per_env_step, 1),
        "replay_bytes_per_agent_step": round(bytes_per_agent_step, 1),
        "replay_observation_bytes_per_env_step": round(obs_bytes, 1),
        "replay_stored_agents": replay.stored_agents,
    }


LIMIT_ROUNDS = 5
"""Interleaved rounds of `compute_limit` (16 learner updates, then 16 probe updates, each)."""


def compute_limit(algo, rounds: int = LIMIT_ROUNDS) -> dict[str, Any]:
    """The learner's updates/s against the bare agent network's at the same shapes, timed in
    the same process, with the same torch threads, in interleaved rounds (the fastest round
    of each counts, so a noisy machine slows both alike).

    The probe is what an update cannot do without: the agent network (a copy of the
    learner's online and target nets, uint8 -> float included, as the network's own forward
    does it) on one replay batch of the learner's size, B transitions x K agents: a
    forward/backward pass at t, and no-grad passes of the online net (argmax) and the target
    net at t + 1, as separate plain calls; the loss is the squared TD error of the agents'
    Q-values. No replay sampling, mixer, optimizer or target sync, nor any of RLlib's work,
    and no NaN fill of new tensors (on with the deterministic algorithms RLlib's seeding turns
    on; measured as no cost to the learner, docs/benchmarks.md).
    Its GFLOP/s are counted by torch's FlopCounterMode."""
    import copy

    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from marlscale.algorithms import replay as replay_columns
    from marlscale.algorithms.learner import split_obs

    config = algo.config
    team = next(iter(algo.replays))
    module = algo.learner_module(team)
    online, target = copy.deepcopy(module.agent), copy.deepcopy(module.target_agent)
    batch = {key: torch.from_numpy(value) for key, value in
             algo.replays[team].sample(config.batch_size, config.gamma).items()}
    now, nxt = split_obs(batch)
    views, mean = now[keys.VIEWS], module.mean_action_input(now)
    next_views, next_mean = nxt[keys.VIEWS], module.mean_action_input(nxt)
    actions = batch[replay_columns.ACTIONS].unsqueeze(-1)

    def probe_update() -> None:
        q_taken = online(views, mean).gather(-1, actions).squeeze(-1)
        with torch.no_grad():
            best = online(next_views, next_mean).argmax(-1, keepdim=True)
            next_v = target(next_views, next_mean).gather(-1, best).squeeze(-1)
        online.zero_grad(set_to_none=True)
        F.mse_loss(q_taken, config.gamma * next_v).backward()

    with FlopCounterMode(display=False) as counter:
        probe_update()
    flop = counter.get_total_flops()
    per_round = MAX_MINIBATCHES
    learner_s, probe_s = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        algo.learn(per_round)
        learner_s.append((time.perf_counter() - start) / per_round)
        with _without_nan_fill():  # the hardware's limit, whatever the learner's settings
            start = time.perf_counter()
            for _ in range(per_round):
                probe_update()
            probe_s.append((time.perf_counter() - start) / per_round)
    learner, probe = min(learner_s), min(probe_s)
    return {
        "learner_updates_per_s": 1 / learner,
        "compute_limit_updates_per_s": round(1 / probe, 1),
        "compute_limit_gflop_per_s": round(flop / probe / 1e9, 1),
        "learner_vs_compute_limit": round(probe / learner, 3),
        "agent_samples_per_update": int(views.shape[0] * views.shape[1]),
        "torch_threads": torch.get_num_threads(),
    }


@contextlib.contextmanager
def _without_nan_fill():
    """torch's NaN fill of new tensors (on with deterministic algorithms) off within it."""
    import torch.utils.deterministic

    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = fill


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB (the driver's: the Algorithm, its
    replay and its learner live here)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@contextlib.contextmanager
def warm_algorithm(n_agents: int, warm_updates: int = 2 * MAX_MINIBATCHES):
    """A `TRAINING` Algorithm at N (pursuit, QMIX) on this process's cores, its torch on all of
    them and sampling in this process (a local Ray of its own if none is up), trained past
    `warm_updates` updates; stopped on exit."""
    import ray

    cores = len(os.sched_getaffinity(0))
    with contextlib.ExitStack() as local:
        if not ray.is_initialized():
            local.enter_context(cluster.connect(None, cores))
            register_envs()
        algo = _spec(n_agents, None, **TRAINING).algorithm_config().resources(
            num_cpus_for_main_process=cores).build_algo()
        local.callback(algo.stop)
        while algo.counters[keys.UPDATES] < warm_updates:
            algo.train()
        yield algo


def profile(n_agents: int, iterations: int = 10) -> dict[str, Any]:
    """Where training's time goes at N (pursuit, the `training` settings, sampling and
    learning taking turns in this process, the learner's torch on every core): `iterations`
    training iterations with the learner's `phase` scopes timed (`timing_phases`), each phase
    (`algorithms.learner.PHASES`) in ms per update and as a share of the learner's time
    (replay sampling and RLlib's update call). RLlib's own work is `learner_update` less the
    phases inside it. The uint8 -> float conversion of the views happens inside the Q passes
    (once at t, once for both nets at t + 1): it is timed apart, on the same batch shapes."""
    import torch

    from marlscale.algorithms.learner import PHASES, timing_phases

    with warm_algorithm(n_agents) as algo:
        updates0 = algo.counters[keys.UPDATES]
        start = time.perf_counter()
        with timing_phases() as seconds:
            for _ in range(iterations):
                algo.train()
        wall = time.perf_counter() - start
        updates = algo.counters[keys.UPDATES] - updates0
        config = algo.config
        views = torch.from_numpy(next(iter(algo.replays.values())).sample(
            config.batch_size, config.gamma)[keys.VIEWS])
        views = views.reshape(*views.shape[:2], -1)
        views.float()
        start = time.perf_counter()
        for _ in range(20):
            views.float()
        conversion = 2 * (time.perf_counter() - start) / 20
    per_update = {name: seconds.get(name, 0.0) * 1000 / updates for name in PHASES}
    inside = ("q_online_t", "bootstrap_t+h", "mixer_and_loss", "backward",
              "grad_norm_and_clip", "optimizer_step", "target_sync")
    learner = per_update["replay_sample"] + per_update["learner_update"]
    rows = {name: per_update[name] for name in ("replay_sample", *inside)}
    rows["rllib_update_overhead"] = per_update["learner_update"] - sum(rows[n] for n in inside)
    rows["weight_sync"] = per_update["weight_sync"]
    return {
        "n_agents": n_agents, "iterations": iterations, "updates": updates,
        "torch_threads": torch.get_num_threads(),
        "ms_per_update": {name: round(value, 3) for name, value in rows.items()},
        "share_of_learner": {name: round(value / learner, 3) for name, value in rows.items()
                             if name != "weight_sync"},
        "uint8_to_float_ms_per_update": round(conversion * 1000, 3),
        "learner_ms_per_update": round(learner, 3),
        "rest_of_training_ms_per_update": round(wall * 1000 / updates - learner
                                                - per_update["weight_sync"], 3),
        "phases": {name: PHASES[name] for name in ("replay_sample", *inside, "weight_sync")},
    }


def scale(steps: int, n_agents: int, n_active: int) -> dict[str, Any]:
    """Training at N with n_active trained against N=n_active all trained, and the ratios."""
    big, small = training(steps, n_agents, n_active), training(steps, n_active)
    return {
        "case": big, "reference": small,
        "ratios": {
            "env_steps_per_s": round(big["env_steps_per_s"]["training"]
                                     / small["env_steps_per_s"]["training"], 3),
            "learner_updates_per_s": round(big["learner_updates_per_s"]
                                           / small["learner_updates_per_s"], 3),
            "replay_bytes_per_env_step": round(big["replay_bytes_per_env_step"]
                                               / small["replay_bytes_per_env_step"], 3),
        },
        "targets": {"env_steps_per_s": ">= 0.5", "learner_updates_per_s": ">= 0.8",
                    "replay_bytes_per_env_step": "<= 1.5"},
    }


def replay_sampling(capacities: tuple[int, ...] = (10_000, 1_000_000),
                    repeats: int = 200) -> dict[str, Any]:
    """Milliseconds per `TeamReplay.sample(128)` from full buffers of each capacity (pursuit,
    one predator per row, 100-step chunks): flat in the capacity, as nothing scans the buffer."""
    import numpy as np

    from marlscale.algorithms.replay import TeamReplay
    from marlscale.envs.team_env import MagentTeamEnv

    env = MagentTeamEnv({"game": "adversarial_pursuit", "n_agents": 1, "seed": 0})
    obs, _ = env.reset()
    steps = 100
    chunk = {"obs": {k: np.repeat(v[None], steps + 1, axis=0) for k, v in obs["predator"].items()},
             "actions": np.zeros((steps, 1), np.int64), "reward": np.ones(steps, np.float32),
             "terminated": np.zeros(steps, bool)}
    out, scan = {}, {}
    for capacity in capacities:
        replay = TeamReplay(env.observation_spaces["predator"], 13, capacity, seed=0)
        for _ in range(capacity // (steps + 1) + 1):
            replay.add_chunk(chunk)
        replay.sample(128, 0.99)
        start = time.perf_counter()
        for _ in range(repeats):
            replay.sample(128, 0.99)
        out[f"capacity_{capacity}"] = round((time.perf_counter() - start) / repeats * 1000, 4)
        start = time.perf_counter()  # what finding the start rows by a scan would add
        for _ in range(repeats):
            np.flatnonzero(replay.remaining[:replay.rows_written])
        scan[f"capacity_{capacity}"] = round((time.perf_counter() - start) / repeats * 1000, 4)
    return {"batch_size": 128, "ms_per_sample": out, "ms_per_scan_of_the_start_rows": scan}


def alongside(steps: int, sizes: tuple[int, ...] = (25, 100)) -> list[dict[str, Any]]:
    """End-to-end training at each N: on one core, on two taking turns (the learner's torch on
    both), and on two with a remote EnvRunner sampling alongside the learner."""
    rows = []
    for n in sizes:
        for cores, runners in ((1, 0), (2, 0), (2, 1)):
            row = training(steps, n, cores=cores, env_runners=runners)
            rows.append({key: row[key] for key in (
                "n_agents", "cores", "sampling", "env_runners", "updates_per_env_step",
                "env_steps_per_s", "learner_updates_per_s")})
    return rows


def check(n_agents: int | None, n_active: int | None) -> None:
    """A ValueError naming the flag when the case cannot run (active > N, a map the game
    refuses, a replay that does not fit), before anything starts."""
    n = n_agents or 25
    if n_active is not None and not 1 <= n_active <= n:
        raise ValueError(f"--active {n_active} is invalid; allowed: 1..{n} (--n-agents)")
    try:
        _spec(n, n_active)
    except ValueError as error:
        raise ValueError(f"--n-agents {n} --active {n_active}: {error}") from None


def run(steps: int = 1000, n_agents: int | None = None, n_active: int | None = None,
        cores: bool = False, profile_updates: bool = False) -> dict[str, Any]:
    """The default measurements, or with `n_agents` (and `n_active`) the training case at that
    size (and its scale ratios against n_active agents all trained), or with `cores` the
    one- and two-core training at N=25 and N=100 (`alongside`), or with `profile_updates`
    where an update's time goes (`profile`) at N=25 and N=100 (or `n_agents`). The effect of
    each of issue #24's learner changes is `bench.learner_changes`."""
    report: dict[str, Any] = {"benchmark": "train", "machine": machine()}
    sizes = (n_agents,) if n_agents else (25, 100)
    if profile_updates:
        report["profile"] = [profile(n) for n in sizes]

    elif cores:
        report["cores"] = alongside(steps)
    elif n_agents is None and n_active is None:
        report["sampling"] = [sampling(25, steps), sampling(100, steps)]
        report["training"] = [training(steps), training(steps, 100)]
        report["learner_vs_compute_limit"] = {
            f"N={row['n_agents']}": row["learner_vs_compute_limit"]
            for row in report["training"]}
        report["replay_sampling"] = replay_sampling()
    elif n_active is None or n_active == (n_agents or 25):
        report["training"] = training(steps, n_agents or 25)
    else:
        report["scale"] = scale(steps, n_agents or 25, n_active)
    return report
