"""`TrainSpec`: one training run (`marlscale train`'s spec; every sweep trial expands into one).

A spec (YAML or JSON) has these top-level keys, every one optional:

    env: adversarial_pursuit            # game, or the RLlib name marlscale/<game>
    env_config: {n_agents: 4, ...}      # TeamEnvConfig fields (docs/envs.md)
    training: {algorithm: qmix, ...}    # TeamQConfig settings (docs/algorithms.md)
    stop: {iterations: 50, env_steps: ..., time_s: ...}   # whichever comes first
    resources: {num_cpus: 1, num_env_runners: 0, num_envs_per_env_runner: 1, num_gpus: 0}
    seed: 0
    checkpoint_every: 0                 # iterations between checkpoints (0: only at the end)
    eval_episodes: 5                    # final greedy evaluation (0: none)
    wandb: {project: marlscale, mode: auto}   # and entity: ...; mode: auto (online iff
                                        # WANDB_API_KEY is set) | offline | online | disabled
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any

from marlscale import keys, specfile, wandb_logging
from marlscale.algorithms import memory
from marlscale.algorithms.algorithm import TeamQ
from marlscale.algorithms.config import TeamQConfig
from marlscale.algorithms.settings import TeamQSettings
from marlscale.envs import ENV_NAMES
from marlscale.runspec.common import (
    RESOURCE_KEYS,
    STOP_KEYS,
    Resources,
    Stop,
    check_section,
    check_typed,
    names,
    to_dict,
)
from marlscale.specfile import setting

__all__ = ["TrainSpec", "SPEC_KEYS", "EXTRA_KEYS", "STOP_KEYS", "RESOURCE_KEYS", "flatten",
           "should_stop", "describe_stop"]


@dataclass
class TrainSpec:
    """A single training run (the sweep specs of tune_specs/ expand into these)."""

    env: str = setting("adversarial_pursuit", kind="str",
                       doc="game, or the RLlib name marlscale/<game>")
    env_config: dict[str, Any] = setting(None, kind="mapping", default_factory=dict,
                                         doc="TeamEnvConfig fields (docs/envs.md)")
    training: dict[str, Any] = setting(None, kind="mapping", default_factory=dict,
                                       doc="TeamQConfig settings (docs/algorithms.md)")
    stop: dict[str, Any] = setting(None, kind="mapping",
                                   default_factory=lambda: {"iterations": 20},
                                   doc="iterations | env_steps | time_s: whichever first")
    resources: dict[str, Any] = setting(None, kind="mapping", default_factory=dict,
                                        doc="num_cpus, num_env_runners, "
                                            "num_envs_per_env_runner, num_gpus")
    seed: int | None = setting(0, kind="int", low=0, optional=True,
                               doc="the run's seed (maps, networks, exploration); null: unseeded")
    checkpoint_every: int = setting(0, kind="int", low=0,
                                    doc="iterations between checkpoints (0: only at the end)")
    eval_episodes: int = setting(5, kind="int", low=0,
                                 doc="final greedy evaluation episodes (0: none)")
    wandb: dict[str, Any] = setting(None, kind="mapping", default_factory=dict,
                                    doc="project, entity, mode")

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "spec") -> TrainSpec:
        if not isinstance(values, dict):
            raise ValueError(f"{source}: the spec must be a mapping; got {type(values).__name__}")
        unknown = sorted(set(values) - set(SPEC_KEYS))
        if unknown:
            raise ValueError(
                f"{source}: key {unknown[0]!r} is unknown; allowed: {', '.join(SPEC_KEYS)}"
            )
        spec = cls(**copy.deepcopy(values))
        spec.validate(source)
        return spec

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainSpec:
        return cls.from_dict(specfile.read(path) or {}, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @property
    def env_name(self) -> str:
        return self.env if self.env in ENV_NAMES.values() else ENV_NAMES.get(self.env, self.env)

    def validate(self, source: str = "spec") -> None:
        """Every check, before Ray starts or anything is written."""
        if not isinstance(self.env, str) or self.env_name not in ENV_NAMES.values():
            raise ValueError(f"{source}: env={self.env!r} is invalid; allowed: "
                             f"{', '.join(ENV_NAMES)}")
        check_typed(self, source)
        for sub in self.training:
            if sub not in TeamQSettings.names():
                raise ValueError(f"{source}: key 'training.{sub}' is unknown; allowed: "
                                 f"{', '.join(TeamQSettings.names())}")
        check_section("stop", self.stop, Stop, source)
        if not self.stop:
            raise ValueError(f"{source}: stop={self.stop!r} is invalid; allowed: at least one "
                             f"of {', '.join(STOP_KEYS)}")
        check_section("resources", self.resources, Resources, source)
        wandb_logging.check(self.wandb, source)
        try:
            config = self.algorithm_config()
            config.validate_team_q()
            env_config = config.team_env_config
            envs = max(1, config.num_env_runners) * config.num_envs_per_env_runner + 1
            memory.check_fits(
                memory.estimate(env_config, list(config.team_algorithms()),
                                config.replay_capacity, envs, peak_active=(
                                    None if config.curriculum_config().schedule != "none"
                                    else env_config.n_active),
                                batch_size=config.batch_size, network={
                                    key: max(getattr(config.settings(name), key)
                                             for name in config.team_algorithms().values())
                                    for key in NETWORK_SIZES}),
                f"this run (n_agents={env_config.n_agents}, replay_capacity="
                f"{config.replay_capacity}, {envs} envs)")
            _check_arithmetic(config, env_config)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None

    def algorithm_config(self) -> TeamQConfig:
        """The RLlib AlgorithmConfig of this run."""
        env_config = dict(self.env_config)
        if self.seed is not None:
            env_config.setdefault("seed", self.seed)
        resources = {**to_dict(Resources()), **self.resources}
        return (
            TeamQ.get_default_config()
            .environment(self.env_name, env_config=env_config)
            .team_q(**self.training)
            .env_runners(
                num_env_runners=int(resources["num_env_runners"]),
                num_envs_per_env_runner=int(resources["num_envs_per_env_runner"]),
            )
            .learners(num_learners=0, num_gpus_per_learner=resources["num_gpus"])
            .resources(num_cpus_for_main_process=resources["num_cpus"])
            .debugging(seed=self.seed)
        )

    def wandb_names(self) -> tuple[str, str]:
        """W&B group train/<algorithm>/<game>/N<n> (a sweep's, with experiment `train`) and
        run name <algorithm>_N<n>_seed<seed>; head-to-head, the algorithm is `a-vs-b`."""
        config = self.algorithm_config()
        env_config = config.team_env_config
        algorithm = "-vs-".join(config.team_algorithms().values())
        size = f"N{env_config.n_agents}"
        return (f"train/{algorithm}/{env_config.game}/{size}",
                f"{algorithm}_{size}_seed{self.seed}")


NETWORK_SIZES = ("hidden", "embedding_dim", "hypernet_embed", "mixing_embed_dim")
"""The training settings the learner's memory grows with (besides batch_size and N)."""


def _check_arithmetic(config: TeamQConfig, env_config) -> None:
    """Settings each allowed alone that together could not train: found by running them."""
    for name in config.team_algorithms().values():
        settings = config.settings(name)
        if settings.learning_starts > settings.replay_capacity:
            raise ValueError(
                f"learning_starts={settings.learning_starts} is invalid with replay_capacity="
                f"{settings.replay_capacity}: the replay never holds that many env steps, so "
                "the run would never learn; allowed: learning_starts <= replay_capacity")


SPEC_KEYS = names(TrainSpec)
EXTRA_KEYS = ("from_checkpoint", "wandb_run_id")
"""spec.json's keys besides the spec's: where a warm start came from, the run's W&B id."""


def flatten(result: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A result dict as one flat row: nested keys joined by '/', numbers and strings only."""
    row: dict[str, Any] = {}
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            if key in ("config", "timers", "perf", "fault_tolerance", "env_runner_group"):
                continue
            row.update(flatten(value, name + "/"))
        elif isinstance(value, (bool, int, float, str)) or hasattr(value, "item"):
            row[name] = value.item() if hasattr(value, "item") else value
    return row


def should_stop(stop: dict[str, Any], result: dict[str, Any], elapsed: float) -> bool:
    """Whether a result row (and the seconds trained) has reached any of `stop`'s totals."""
    return (
        result["training_iteration"] >= stop.get("iterations", float("inf"))
        or result[keys.ENV_STEPS] >= stop.get("env_steps", float("inf"))
        or elapsed >= stop.get("time_s", float("inf"))
    )


def describe_stop(stop: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in stop.items())
