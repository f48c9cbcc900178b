"""`TeamEnvRunner`: RLlib's MultiAgentEnvRunner with a lean sampling loop for team envs.

RLlib's generic loop does per-agent episode bookkeeping and a connector pipeline on every
step (~1.3 ms per step on this machine; see docs/benchmarks.md). A team is one agent id whose
observation is already a batch of agents, so this runner steps its envs directly: one module
forward per team per step over all envs at once, observations kept as the env's uint8 arrays,
and whole chunks handed to the replay (a `Sample`). Everything else (env and module
construction, weight sync, health checks, fault tolerance) is RLlib's.

Evaluation episodes are not sampled here: `evaluate` plays its share of the algorithm's games
through the one episode loop (`marlscale.episodes`), in an env of its own.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch
from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner

from marlscale import keys
from marlscale.algorithms import replay
from marlscale.envs.team_env import MagentTeamEnv
from marlscale.episodes import Game, play_games


def _active_only(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A team observation with its per-agent columns cut to the active slots (a prefix): what
    the replay stores. Masks, the state and the team mean action stay whole."""
    width = int(obs[keys.ACTIVE].sum())
    return {key: value[:width] if key in keys.PER_AGENT_KEYS else value
            for key, value in obs.items()}


def _stack(parts: list[np.ndarray]) -> np.ndarray:
    """Stack rows whose agent dimension may differ (the stage grew inside the chunk), zero-padded
    to the widest."""
    widest = max(len(p) for p in parts)
    if all(len(p) == widest for p in parts):
        return np.stack(parts)
    out = np.zeros((len(parts), widest, *parts[0].shape[1:]), parts[0].dtype)
    for row, part in zip(out, parts):
        row[:len(part)] = part
    return out


class _Chunk:
    """Observations, actions and rewards of one team in one env since the last cut, for the
    active agents only."""

    def __init__(self, first_obs: dict[str, np.ndarray]):
        self.obs = [_active_only(first_obs)]
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.terminated: list[bool] = []

    def append(self, action: np.ndarray, reward: float, terminated: bool,
               obs: dict[str, np.ndarray]) -> None:
        # The step was taken under the previous observation's active mask.
        self.actions.append(action[:len(self.obs[-1][keys.VIEWS])])
        self.rewards.append(reward)
        self.terminated.append(terminated)
        self.obs.append(_active_only(obs))

    def export(self) -> dict[str, Any]:
        return {
            "obs": {key: (_stack if key in keys.PER_AGENT_KEYS else np.stack)(
                [o[key] for o in self.obs]) for key in self.obs[0]},
            replay.ACTIONS: _stack(self.actions),
            replay.REWARD: np.asarray(self.rewards, dtype=np.float32),
            "terminated": np.asarray(self.terminated, dtype=bool),
        }


@dataclasses.dataclass(frozen=True)
class Sample:
    """What one `TeamEnvRunner.collect` call hands the algorithm (pickled through Ray)."""

    chunks: dict[str, list[dict[str, Any]]]
    """Per team, its chunks for the replay (`TeamReplay.add_chunk`): every episode that ended
    in the call, and the open ones cut where the call stopped (they go on in the next)."""
    episodes: list[dict[str, Any]]
    """The episode metrics of every episode that ended in the call, one per team each, with
    its `team`."""
    env_steps: int
    """Env steps taken, over all of the runner's envs."""
    sample_s: float
    """Wall time of the call, in seconds."""
    updates: int
    """The gradient steps behind the weights the sample was taken with (the policy lag)."""


class TeamEnvRunner(MultiAgentEnvRunner):
    """Samples team envs with the team modules (agent id == module id)."""

    def __init__(self, config, **kwargs):
        super().__init__(config=config, **kwargs)
        seed = self.config.seed
        self._generator = torch.Generator()
        if seed is not None:
            self._generator.manual_seed(int(seed) * 7919 + (self.worker_index or 0))
        self._obs: list[dict] | None = None
        self._chunks: list[dict[str, _Chunk]] = []
        self._eval_env: MagentTeamEnv | None = None

    @property
    def team_envs(self) -> list[MagentTeamEnv]:
        """The unwrapped team envs this runner steps (incremental learning drives these)."""
        return [env.unwrapped for env in self.env.envs]

    def _actions(self, obs_per_env: list[dict], explore: bool,
                 envs: list[MagentTeamEnv]) -> list[dict[str, np.ndarray]]:
        """One forward per team over all envs, for the active agents only: {team: actions [N]}
        per env (inactive slots 0; the env gives them random actions), or for every agent with
        `inactive: policy` (greedy past the active ones). Active means the envs' count now: a
        stage that began since the observation already applies to this step."""
        out: list[dict[str, np.ndarray]] = [{} for _ in obs_per_env]
        with torch.no_grad():
            for team in obs_per_env[0]:
                width, explore_width = (max(w) for w in zip(*(env.acting_slots(team)
                                                              for env in envs)))
                batch = {
                    key: torch.from_numpy(np.stack([
                        o[team][key][:width] if key in keys.PER_AGENT_KEYS else o[team][key]
                        for o in obs_per_env]))
                    for key in obs_per_env[0][team]
                }
                actions = self.module[team].act(batch, explore, self._generator, width,
                                                explore_width)
                for i, a in enumerate(actions.numpy()):
                    out[i][team] = a
        return out

    def collect(self, num_steps: int, explore: bool = True) -> Sample:
        """Step every env `num_steps` times: the chunks per team, finished episodes' metrics
        and the env steps taken. Episodes continue across calls."""
        started = time.perf_counter()
        envs = self.team_envs
        if self._obs is None:
            self._obs = [env.reset()[0] for env in envs]
            self._chunks = [{t: _Chunk(o[t]) for t in o} for o in self._obs]
        chunks: dict[str, list] = {team: [] for team in self._obs[0]}
        episodes: list[dict[str, Any]] = []
        for _ in range(num_steps):
            actions = self._actions(self._obs, explore, envs)
            for i, env in enumerate(envs):
                obs, reward, terminated, truncated, infos = env.step(actions[i])
                done = terminated["__all__"] or truncated["__all__"]
                for team, chunk in self._chunks[i].items():
                    chunk.append(actions[i][team], reward[team], bool(terminated[team]), obs[team])
                    if done:
                        episodes.append({"team": team, **infos[team][keys.EPISODE]})
                        chunks[team].append(chunk.export())
                if done:
                    obs, _ = env.reset()
                    self._chunks[i] = {t: _Chunk(obs[t]) for t in obs}
                self._obs[i] = obs
        for per_team in self._chunks:  # cut the open chunks; they continue
            for team, chunk in per_team.items():
                if chunk.actions:
                    chunks[team].append(chunk.export())
                    per_team[team] = _Chunk(chunk.obs[-1])
        env_steps = num_steps * len(envs)
        self.num_env_steps_sampled_lifetime += env_steps
        return Sample(chunks=chunks, episodes=episodes, env_steps=env_steps,
                      sample_s=time.perf_counter() - started,
                      updates=min(int(self.module[t].num_updates) for t in chunks))

    def evaluate(self, games: list[Game]) -> list[dict[str, Any]]:
        """Play `games` (sides: a team's name for its module here, None for random) with this
        runner's modules in its evaluation env, never the training envs, whose episodes must
        run on undisturbed; `play_games`' results. A team's module controls as many agents as
        in the training envs now (the curriculum stage), the others act at random."""
        if self._eval_env is None:
            env_config = self.config.team_env_config
            if self.config.eval_max_cycles is not None:
                env_config = dataclasses.replace(env_config,
                                                 max_cycles=self.config.eval_max_cycles)
            self._eval_env = MagentTeamEnv(env_config)
        teams = self._eval_env.possible_agents
        policies = {team: self.module[team] for team in teams}
        n_active = {team: self.team_envs[0].get_active(team) for team in teams}
        return play_games(self._eval_env, games, policies, n_active)
