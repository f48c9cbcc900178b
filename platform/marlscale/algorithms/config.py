"""`TeamQConfig`: the AlgorithmConfig of the value-decomposition family.

Its training settings are `TeamQSettings` (`settings.py`: type, default and source of each).
Setting the env (`environment()`) or the settings (`team_q()`) wires the teams: one policy and
module per learning team, each with its algorithm's per-team settings. `validate()` checks
everything before anything is built and changes nothing.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override

from marlscale.algorithms.env_runner import TeamEnvRunner
from marlscale.algorithms.learner import TeamQLearner
from marlscale.algorithms.registry import ALGORITHMS, get_algorithm
from marlscale.algorithms.settings import PER_TEAM, TeamQSettings
from marlscale.curriculum import CurriculumConfig, IncrementalLearning
from marlscale.envs import ENV_NAMES, GAME_OF_ENV
from marlscale.envs.config import TeamEnvConfig
from marlscale.models.team_module import TeamQModule


def team_module_id(agent_id, *args, **kwargs) -> str:
    """Policy mapping: a team's agent id is its module id."""
    return agent_id


class TeamQConfig(AlgorithmConfig):
    """Config of `TeamQ` (IQL, VDN, QMIX, MFQ, MFQMIX); `TeamQ.get_default_config()` hands it
    its algorithm class, as RLlib's own configs get theirs. Set the family's settings with
    `.team_q(**settings)` (`TeamQSettings` lists them with defaults and sources)."""

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class)
        for name, value in vars(TeamQSettings()).items():
            setattr(self, name, value)
        self.user_settings: dict[str, Any] = {}
        """The settings set through `team_q()`: an algorithm's declaration never overrides
        these."""
        self.user_mean_actions = False
        """Whether the user's env_config sets `mean_actions` (else the teams' algorithms do)."""
        self.user_env_stage: dict[str, Any] = {}
        """`reward_scope` and `inactive` as the user's env_config sets them (else the
        curriculum does)."""
        self.grad_clip_by = "global_norm"
        self.env_runner_cls = TeamEnvRunner
        self.num_env_runners = 0
        self.callbacks_class = IncrementalLearning

    def team_q(self, **settings) -> TeamQConfig:
        """Set family settings by name (an unknown name raises), then rewire the teams."""
        settings = {k: v for k, v in settings.items() if v is not NotProvided}
        for key, value in TeamQSettings.normalise(settings).items():
            setattr(self, key, value)
            self.user_settings[key] = value
        self._wire_teams()
        return self

    @override(AlgorithmConfig)
    def environment(self, *args, **kwargs) -> TeamQConfig:
        super().environment(*args, **kwargs)
        if isinstance(kwargs.get("env_config"), dict):
            self.user_mean_actions = "mean_actions" in kwargs["env_config"]
            self.user_env_stage = {key: kwargs["env_config"][key] for key in CURRICULUM_ENV_KEYS
                                   if key in kwargs["env_config"]}
        self._wire_teams()
        return self

    @override(AlgorithmConfig)
    def callbacks(self, *args, **kwargs) -> TeamQConfig:
        """RLlib's, keeping `IncrementalLearning` among the callbacks when a user sets theirs."""
        super().callbacks(*args, **kwargs)
        classes = self.callbacks_class
        classes = list(classes) if isinstance(classes, (list, tuple)) else [classes]
        if not any(isinstance(c, type) and issubclass(c, IncrementalLearning) for c in classes):
            classes = [c for c in classes if c is not RLlibCallback] + [IncrementalLearning]
            self.callbacks_class = classes[0] if len(classes) == 1 else classes
        return self

    def settings(self, algorithm: str | None = None) -> TeamQSettings:
        """The settings (of the team playing `algorithm`: its declaration's per-team defaults
        under what the user set)."""
        values = {name: getattr(self, name) for name in TeamQSettings.names()}
        if algorithm is not None:
            declared = get_algorithm(algorithm).settings
            values.update({k: v for k, v in declared.items() if k not in self.user_settings})
        return TeamQSettings(**values)

    def _wire_teams(self) -> None:
        """One policy and module per learning team; per-team settings as RLlib's per-module
        overrides. Skipped while the env or an algorithm name is invalid (validate says so)."""
        try:
            teams = self.team_algorithms()
            per_team = {team: self.settings(name) for team, name in teams.items()}
            modules = {team: module_config(teams[team], s) for team, s in per_team.items()}
            curriculum = CurriculumConfig.from_dict(self.curriculum)
        except ValueError:
            return
        if not self.user_mean_actions:  # the env computes mean actions only for those reading them
            needed = any(m["mean_action"] is not None for m in modules.values())
            self.env_config = {**self.env_config, "mean_actions": needed}
        self.env_config = {**self.env_config, **{  # the env acts out the curriculum's choices
            key: self.user_env_stage.get(key, getattr(curriculum, key))
            for key in CURRICULUM_ENV_KEYS}}
        self.multi_agent(policies=set(teams), policy_mapping_fn=team_module_id)
        self._per_module_overrides = {}  # RLlib's cache of per-module configs
        self.rl_module(
            rl_module_spec=MultiRLModuleSpec(rl_module_specs={
                team: RLModuleSpec(module_class=TeamQModule, model_config=model_config)
                for team, model_config in modules.items()}),
            algorithm_config_overrides_per_module={
                team: {key: getattr(settings, key) for key in PER_TEAM}
                for team, settings in per_team.items()},
        )

    # ---- teams and modules ----------------------------------------------------------------
    @property
    def team_env_config(self) -> TeamEnvConfig:
        env_config = dict(self.env_config)
        if "game" not in env_config and self.env in GAME_OF_ENV:
            env_config["game"] = GAME_OF_ENV[self.env]
        return TeamEnvConfig.from_dict(env_config)

    def team_algorithms(self) -> dict[str, str]:
        """{learning team: algorithm name}: one team, or two in head-to-head play."""
        env_config = self.team_env_config
        names = env_config.game_spec.team_names
        teams = {names[0]: self.algorithm}
        if env_config.opponent == "learned":
            teams[names[1]] = self.opponent_algorithm or self.algorithm
        return teams

    @override(AlgorithmConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        return RLModuleSpec(module_class=TeamQModule)

    @override(AlgorithmConfig)
    def get_default_learner_class(self):
        return TeamQLearner

    def curriculum_config(self) -> CurriculumConfig:
        return CurriculumConfig.from_dict(self.curriculum)

    @override(AlgorithmConfig)
    def validate(self) -> None:
        self.validate_team_q()
        super().validate()

    def validate_team_q(self) -> None:
        """The family's own checks (also run by `marlscale train` before Ray starts)."""
        if self.env not in ENV_NAMES.values():
            raise ValueError(
                f"env={self.env!r} is invalid; allowed: {', '.join(ENV_NAMES.values())}"
            )
        env_config = self.team_env_config  # validates the env config itself
        self.settings().validate()
        for name in self.team_algorithms().values():
            self.settings(name).validate()
        for team, name in self.team_algorithms().items():
            if module_config(name, self.settings(name))["mean_action"] and \
                    not env_config.mean_actions:
                raise ValueError(f"env mean_actions=False is invalid with {team}'s algorithm "
                                 f"{name!r}: it takes a mean-action input; allowed: true")
        if self.opponent_algorithm is not None:
            if env_config.opponent != "learned":
                raise ValueError(
                    f"opponent_algorithm={self.opponent_algorithm!r} is invalid with "
                    f"env opponent={env_config.opponent!r}; allowed: only with opponent='learned'"
                )
        if env_config.reward_mode == "individual":
            # A mixer regresses the team reward by construction: refuse rather than ignore.
            for name in {self.algorithm, self.opponent_algorithm} - {None}:
                if get_algorithm(name).mixer is not None:
                    independent = sorted(a for a, spec in ALGORITHMS.items() if spec.mixer is None)
                    raise ValueError(
                        f"env reward_mode='individual' is invalid with algorithm={name!r}: its "
                        f"{get_algorithm(name).mixer} mixer learns from the team reward only; "
                        f"allowed: reward_mode='team', or an algorithm without a mixer "
                        f"({', '.join(independent)})")
        curriculum = self.curriculum_config()
        curriculum.validate("curriculum", team_size=env_config.team_counts[0])
        for key, value in self.user_env_stage.items():
            chosen = getattr(curriculum, key)
            if chosen != CurriculumConfig().to_dict()[key] and value != chosen:
                raise ValueError(f"env {key}={value!r} is invalid with curriculum.{key}="
                                 f"{chosen!r}; allowed: the same value, or leave the env's "
                                 "unset (the curriculum sets it)")
        if curriculum.schedule != "none" and env_config.n_active is not None:
            raise ValueError(
                f"env n_active={env_config.n_active!r} is invalid with curriculum.schedule="
                f"{curriculum.schedule!r}; allowed: n_active unset (the curriculum sets it)"
            )


def module_config(algorithm: str, settings: TeamQSettings) -> dict[str, Any]:
    """A team module's model_config: what its algorithm's declaration and settings fix."""
    spec = get_algorithm(algorithm)
    return {"algorithm": algorithm, "mixer": spec.mixer, "target": spec.target,
            "mean_action": settings.mean_action or spec.mean_action,
            **{key: getattr(settings, key) for key in MODEL_SIZES}, "mixer_init":
            settings.mixer_init}


CURRICULUM_ENV_KEYS = ("reward_scope", "inactive")
"""Curriculum settings the env acts out (training copies them into the env config)."""
MODEL_SIZES = ("hidden", "embedding_dim", "mean_action_hidden", "mixing_embed_dim",
               "hypernet_embed")
