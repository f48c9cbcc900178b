"""`TeamQ`: the RLlib Algorithm of the family: sample -> uint8 replay -> learner -> sync.

One training iteration: every EnvRunner steps its envs `rollout_length` times with per-agent
epsilon-greedy; the chunks go into each team's own `TeamReplay`; the learner takes
`updates_per_env_step` gradient steps per env step sampled (batch `batch_size` each, one
`LearnerGroup.update` call per iteration); epsilon follows its schedule; weights and epsilon
are synced back to the EnvRunners. With remote EnvRunners and `sample_ahead` (the default),
sampling overlaps learning: the iteration takes the sample launched in the previous one, syncs
the weights, launches the next sample (RLlib's async EnvRunner calls) and then learns, so the
runners act with weights one iteration older. Each actor runs its calls in order, so which
weights a sample used is fixed: runs stay deterministic per seed. Greedy evaluation episodes
(`evaluate_greedy`) are spread over the EnvRunners, each in an env of its own with its own
seed, through the one episode loop (`marlscale.episodes`). Checkpoints add what RLlib's
`get_state` leaves out: counters (the evaluation episodes played among them), epsilon, RNG
states and, optionally, the replay; and, beside RLlib's pickles, marlscale_checkpoint.json
(`save_to_path`; what readers check before unpickling anything).
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from typing import Any

import numpy as np
import ray
import torch
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import LEARNER_RESULTS

from marlscale import keys
from marlscale.algorithms import checkpoints
from marlscale.algorithms.config import TeamQConfig
from marlscale.algorithms.env_runner import Sample
from marlscale.algorithms.learner import ITERATION, phase
from marlscale.algorithms.replay import TeamReplay
from marlscale.curriculum import Curriculum, apply_stage
from marlscale.envs.team_env import MagentTeamEnv
from marlscale.episodes import Game, episode_seed, play_spread

STATE_KEY = "team_q"
EPSILON = "epsilon"
ENV_STEPS, AGENT_STEPS, UPDATES = keys.ENV_STEPS, keys.AGENT_STEPS, keys.UPDATES
ENV_STEPS_PER_S = "env_steps_per_s"
"""End to end: the iteration's env steps over the wall time since the previous iteration ended
(sampling, learning, syncing, evaluation and the driver's own work, checkpoints included)."""
AGENT_STEPS_PER_S = "agent_steps_per_s"
"""ENV_STEPS_PER_S times the learning teams' agents (N; both teams' in head-to-head)."""
SAMPLING_ENV_STEPS_PER_S = "sampling_env_steps_per_s"
"""The iteration's env steps over its sampling time alone (the slowest EnvRunner's `collect`;
no learning)."""
WALL_S = "wall_s_lifetime"
"""Wall time since training began, summed over resumes (what end-to-end rates divide by)."""
POLICY_LAG = "sample_policy_lag"
"""Gradient steps the learner had taken that the iteration's samples did not see: 0 when
sampling and learning take turns, one iteration's updates with `sample_ahead`."""
REPLAY_BYTES = "replay_bytes"
REPLAY_BYTES_PER_AGENT_STEP = "replay_bytes_per_agent_step"
REPLAY_SIZE = "replay_transitions"
EPISODES = "episodes"
EVALUATION = "evaluation"
"""Greedy evaluation metrics per team (every eval_interval iterations)."""
RANDOM = "random"
"""The same evaluation with every agent acting uniformly at random (logged once, at the first
evaluation): the random policy's level."""
TEAMS = "teams"
NODE_ID = "node_id"
"""The Ray node (its id, hex) the iteration ran on: where a sweep's trial ran, and where it
moved to when retried on another node."""
SAMPLE_TAG = "sample"
EVAL_EPISODES = "eval_episodes_lifetime"
"""Greedy evaluation episodes played so far (a counter): the index of the next one's seed."""
EVAL_SEED_OFFSET = 1_000_003
"""Added to the run's seed for its evaluation episodes' seeds: streams apart from training's."""
MAX_MINIBATCHES_PER_CALL = 16


def episode_means(episodes: list[dict[str, Any]]) -> dict[str, float]:
    """The mean of every numeric episode metric (the "team" label and strings left out)."""
    return {key: float(np.mean([e[key] for e in episodes])) for key in episodes[-1]
            if key != "team" and isinstance(episodes[-1][key], (int, float))}


def epsilon_at(config: TeamQConfig, env_steps: int) -> float:
    """Linear epsilon schedule from epsilon_start to epsilon_end over epsilon_decay_steps."""
    progress = min(1.0, env_steps / config.epsilon_decay_steps)
    return config.epsilon_start + progress * (config.epsilon_end - config.epsilon_start)


class TeamQ(Algorithm):
    """IQL, VDN, QMIX, MFQ and MFQMIX on team envs (each team one agent id and module)."""

    @classmethod
    @override(Algorithm)
    def get_default_config(cls) -> TeamQConfig:
        return TeamQConfig(cls)

    @override(Algorithm)
    def setup(self, config: TeamQConfig) -> None:
        # The curriculum exists before RLlib's setup, which calls `on_algorithm_init`.
        env_config = config.team_env_config
        counts = dict(zip(env_config.game_spec.team_names, env_config.team_counts))
        self.team_sizes = {team: counts[team] for team in config.team_algorithms()}
        self.curriculum = Curriculum(config.curriculum_config(), self.team_sizes,
                                     fixed_n_active=env_config.n_active)
        super().setup(config)
        # Torch in this process uses the CPUs reserved for it (Ray leaves it at 1 thread).
        torch.set_num_threads(max(1, int(config.num_cpus_for_main_process)))
        probe = MagentTeamEnv(env_config)
        seed = config.seed
        self.replays = {
            team: TeamReplay(
                probe.observation_spaces[team], int(probe.action_spaces[team].nvec[0]),
                config.replay_capacity, seed=None if seed is None else seed + i,
            )
            for i, team in enumerate(config.team_algorithms())
        }
        self.counters = {ENV_STEPS: 0, AGENT_STEPS: 0, UPDATES: 0, "update_credit": 0.0,
                         WALL_S: 0.0, EVAL_EPISODES: 0}
        self._latest_evaluation = 0  # the first episode index of the latest greedy evaluation
        self._iteration_env_steps = 0
        self._random_level: dict[str, dict[str, float]] | None = None
        self._step_ended = time.perf_counter()
        self._sampling = False  # remote samples in flight (sample_ahead)
        self._last_episodes: dict[str, list] = defaultdict(list)
        self._set_epsilon(epsilon_at(config, 0))

    # ---- the iteration --------------------------------------------------------------------
    def _collect(self) -> list[Sample]:
        steps = self.config.rollout_length
        if self.config.num_env_runners == 0:
            return [self.env_runner.collect(steps)]
        if not self.config.sample_ahead:
            return self.env_runner_group.foreach_env_runner(
                lambda runner: runner.collect(steps), local_env_runner=False
            )
        if not self._sampling:  # the first iteration (or after a restore): nothing in flight
            self._launch_sampling()
        ready = self.env_runner_group.fetch_ready_async_reqs(tags=SAMPLE_TAG,
                                                             timeout_seconds=None)
        self._sampling = False
        return [sample for _, sample in ready]

    def _sync_runners(self) -> None:
        """Epsilon for the env steps so far, then the weights (with it) to the EnvRunners."""
        self._set_epsilon(epsilon_at(self.config, self.counters[ENV_STEPS]))
        # timeout None: first collect the previous sync's acknowledgement (long done: the actor
        # ran it before the sample just fetched), or RLlib may drop this sync as one too many
        # in flight; the new sync itself is not waited for.
        with phase("weight_sync"):
            self.env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group, inference_only=True,
                timeout_seconds=None)

    def _launch_sampling(self) -> None:
        """Start every healthy remote EnvRunner's next `collect` (results: `_collect`)."""
        steps = self.config.rollout_length
        self._sampling = self.env_runner_group.foreach_env_runner_async(
            lambda runner: runner.collect(steps), tag=SAMPLE_TAG) > 0

    @override(Algorithm)
    def training_step(self) -> None:
        config = self.config
        env_steps, sample_time, lag = 0, 0.0, 0
        for sample in self._collect():
            env_steps += sample.env_steps
            lag = max(lag, self.counters[UPDATES] - sample.updates)
            sample_time = max(sample_time, sample.sample_s)  # the runners sample in parallel
            for team, chunks in sample.chunks.items():
                for chunk in chunks:
                    self.replays[team].add_chunk(chunk)
            for episode in sample.episodes:
                self._last_episodes[episode["team"]].append(episode)
        self.counters[ENV_STEPS] += env_steps
        self._iteration_env_steps = env_steps
        self.counters[AGENT_STEPS] += env_steps * sum(self.team_sizes.values())

        credit = self.counters["update_credit"] + env_steps * config.updates_per_env_step
        updates = int(credit)
        self.counters["update_credit"] = credit - updates
        stored = min(len(replay) for replay in self.replays.values())
        ahead = config.num_env_runners > 0 and config.sample_ahead
        if ahead:  # the runners sample with the weights so far while the learner trains
            self._sync_runners()
            self._launch_sampling()
        if updates and stored >= max(config.learning_starts, 1):
            self.learn(updates)
        if not ahead:
            self._sync_runners()
        self._log_iteration(env_steps, sample_time)
        self.metrics.log_value(POLICY_LAG, lag, window=1)
        if config.eval_interval and (self.iteration + 1) % config.eval_interval == 0:
            self.metrics.log_dict(self.evaluate_greedy(config.eval_episodes), key=EVALUATION,
                                  window=1)
            if self._random_level is None:
                self._random_level = self.evaluate_greedy(config.eval_episodes, random=True)

    def learn(self, updates: int) -> None:
        """`updates` gradient steps on batches from the replays (at most 16 per learner call)."""
        config = self.config
        while updates > 0:
            minibatches = min(updates, MAX_MINIBATCHES_PER_CALL)
            size = minibatches * config.batch_size
            with phase("replay_sample"):
                batch = MultiAgentBatch(
                    {
                        team: SampleBatch(replay.sample(size, config.gamma, config.n_step))
                        for team, replay in self.replays.items()
                    },
                    env_steps=size,
                )
            with phase("learner_update"):
                results = self.learner_group.update(
                    batch=batch, minibatch_size=config.batch_size, num_epochs=1,
                    timesteps={ENV_STEPS: self.counters[ENV_STEPS],
                               ITERATION: self.iteration + 1},
                )
            self.metrics.aggregate([results] if isinstance(results, dict) else results,
                                   key=LEARNER_RESULTS)
            self.counters[UPDATES] += minibatches
            updates -= minibatches

    def _set_epsilon(self, epsilon: float) -> None:
        self._epsilon = float(epsilon)

        def assign(learner):
            for module_id in learner.module.keys():
                learner.module[module_id].unwrapped().epsilon.fill_(epsilon)

        self.learner_group.foreach_learner(assign)

    def _log_iteration(self, env_steps: int, sample_time: float) -> None:
        log = self.metrics.log_value
        log(EPSILON, self._epsilon, window=1)
        for key in (ENV_STEPS, AGENT_STEPS, UPDATES):
            log(key, self.counters[key], window=1)
        log(SAMPLING_ENV_STEPS_PER_S, env_steps / max(sample_time, 1e-9), window=1)
        log(REPLAY_BYTES, sum(r.nbytes for r in self.replays.values()), window=1)
        log(REPLAY_SIZE, min(len(r) for r in self.replays.values()), window=1)
        for team, replay in self.replays.items():
            log((team, REPLAY_BYTES_PER_AGENT_STEP), replay.bytes_per_agent_step, window=1)
            episodes = self._last_episodes[team][-20:]  # the latest finished episodes
            self._last_episodes[team] = episodes
            if episodes:
                for key, value in episode_means(episodes).items():
                    log((EPISODES, team, key), value, window=1)

    @override(Algorithm)
    def step(self) -> dict[str, Any]:
        """RLlib's iteration result, plus which algorithm plays each side (`teams/<team>/
        algorithm`) and the learning team's reward difference (`reward_difference`: its return
        per agent minus the other team's, over the latest episodes), so that every result row
        of a head-to-head run says who played whom, and the Ray node it ran on (`node_id`)."""
        result = super().step()
        now = time.perf_counter()
        elapsed, self._step_ended = now - self._step_ended, now
        self.counters[WALL_S] += elapsed
        result[ENV_STEPS_PER_S] = self._iteration_env_steps / max(elapsed, 1e-9)
        result[AGENT_STEPS_PER_S] = result[ENV_STEPS_PER_S] * sum(self.team_sizes.values())
        result[WALL_S] = self.counters[WALL_S]
        result[NODE_ID] = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
        if self._random_level is not None:
            result[RANDOM] = self._random_level
        teams = self.config.team_algorithms()
        result[TEAMS] = {team: {"algorithm": name} for team, name in teams.items()}
        first = result.get(EPISODES, {}).get(next(iter(teams)), {})
        if keys.REWARD_DIFFERENCE in first:
            result[keys.REWARD_DIFFERENCE] = first[keys.REWARD_DIFFERENCE]
        return result

    # ---- evaluation -------------------------------------------------------------------------
    def evaluate_greedy(self, num_episodes: int,
                        random: bool = False) -> dict[str, dict[str, float]]:
        """Mean metrics per team of `num_episodes` greedy episodes.

        They are spread over the EnvRunners as `Arena` spreads its games (every
        num_env_runners-th to each; all on the local runner without remote ones), each played
        in the runner's evaluation env, never a training env. The run's k-th evaluation
        episode, counted over evaluations and resumes (`counters`), has seed
        `episode_seed(seed + EVAL_SEED_OFFSET, k)` (seed None: 0), so the figures depend
        neither on how many runners there are nor on where a run was resumed.

        `random`: every agent of every team acts uniformly at random instead (the random
        policy's level), on the episodes of the latest greedy evaluation (the first ones before
        any): the two compare on the same maps, and these episodes are not counted."""
        first = self._latest_evaluation
        if not random:
            first = self._latest_evaluation = self.counters[EVAL_EPISODES]
            self.counters[EVAL_EPISODES] += num_episodes
        seed = EVAL_SEED_OFFSET + (self.config.seed or 0)
        teams = list(self.team_sizes)
        games = [Game(index=i, sides={team: None if random else team for team in teams},
                      seed=episode_seed(seed, first + i)) for i in range(num_episodes)]
        results = play_spread(self.env_runner_group, games,
                              lambda runner, mine: runner.evaluate(mine),
                              self.config.num_env_runners)
        return {team: episode_means([r["metrics"][team] for r in results]) for team in teams}

    @property
    def epsilon(self) -> float:
        return self._epsilon

    def learner_module(self, team: str):
        """The learner's module of `team` (with its mixer and targets), unwrapped; the live
        object with a local learner, a copy from the first remote one."""
        return self._first_learner(lambda learner: learner.module[team].unwrapped())

    def optimizers(self, team: str) -> list:
        """The learner's (name, optimizer) pairs of `team`'s module."""
        return self._first_learner(lambda learner: learner.get_optimizers_for_module(team))

    def _first_learner(self, func):
        return next(iter(self.learner_group.foreach_learner(func))).get()

    # ---- checkpoints --------------------------------------------------------------------------
    @override(Algorithm)
    def save_to_path(self, path=None, *, state=None, filesystem=None, use_msgpack=False) -> str:
        """RLlib's checkpoint, then marlscale_checkpoint.json (what readers decide on before
        unpickling anything, and every file's size: algorithms/checkpoints.py), written last.
        Every checkpoint goes through here: `marlscale train`'s and Tune's (sweeps, leagues)."""
        if path is not None and filesystem is None:
            from pyarrow import fs

            path = str(path) if "://" in str(path) else os.path.abspath(path)  # from_uri: no
            filesystem, path = fs.FileSystem.from_uri(path)                  # relative paths
        saved = super().save_to_path(path, state=state, filesystem=filesystem,
                                     use_msgpack=use_msgpack)
        checkpoints.write_metadata(self, saved, filesystem)
        return saved

    @override(Algorithm)
    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict[str, Any]:
        state = super().get_state(components, not_components=not_components, **kwargs)
        state[STATE_KEY] = {
            "counters": dict(self.counters),
            "epsilon": self._epsilon,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(),
            "replay_rng": {t: r.rng.bit_generator.state for t, r in self.replays.items()},
            "curriculum": self.curriculum.get_state(),
            "replays": (
                {t: r.get_state() for t, r in self.replays.items()}
                if self.config.checkpoint_replay else None
            ),
        }
        return state

    @override(Algorithm)
    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        extra = state.get(STATE_KEY)
        if not extra:
            return
        self.counters.update(extra["counters"])
        torch.set_rng_state(extra["torch_rng"])
        np.random.set_state(extra["numpy_rng"])
        if extra["replays"] is not None:
            for team, replay_state in extra["replays"].items():
                self.replays[team].set_state(replay_state)
        for team, rng_state in extra["replay_rng"].items():
            self.replays[team].rng.bit_generator.state = rng_state
        self._set_epsilon(extra["epsilon"])
        if "curriculum" in extra:
            self.curriculum.set_state(extra["curriculum"])
            apply_stage(self)
        # timeout None: wait for the acknowledgement of the sync still in flight from the
        # build (RLlib allows one request in flight per EnvRunner); with RLlib's default of 0,
        # this sync and RLlib's own after a restore were dropped while a fresh remote runner
        # was still starting, and it went on acting with its initial weights.
        self.env_runner_group.sync_weights(
            from_worker_or_learner_group=self.learner_group, inference_only=True,
            timeout_seconds=None)

