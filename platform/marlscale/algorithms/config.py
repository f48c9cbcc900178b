"""`TeamQConfig`: the AlgorithmConfig of the value-decomposition family.

Every setting has a default with its source; `validate()` checks them all before anything is
built and names the key, the value and what is allowed.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override

from marlscale.algorithms.registry import ALGORITHMS, get_algorithm
from marlscale.algorithms.spec import MEAN_ACTIONS
from marlscale.envs import ENV_NAMES, GAME_OF_ENV
from marlscale.envs.config import TeamEnvConfig
from marlscale.specfile import is_finite_number

TEAM_Q_DEFAULTS: dict[str, Any] = {
    "algorithm": "qmix",  # the learning team's algorithm (registry name)
    "opponent_algorithm": None,  # head-to-head: the second team's; None = same as algorithm
    "mean_action": None,  # override of the algorithm's mean-action input: neighbour | team
    "gamma": 0.95,  # Yang et al. 2018 (MAgent battle), XuanCe's MAgent2 configs
    "lr": 5e-4,  # PyMARL QMIX
    "batch_size": 128,  # transitions (env steps) per update; issue #3's benchmark unit
    "replay_capacity": 20_000,  # env steps; 1M-step cost is documented in docs/algorithms.md
    "learning_starts": 1_000,  # env steps stored before the first update
    "updates_per_env_step": 0.1,  # 1 update per 10 env steps (issue #3)
    "epsilon_start": 1.0,  # PyMARL: 1.0 -> 0.05 linearly over 50k steps
    "epsilon_end": 0.05,
    "epsilon_decay_steps": 50_000,
    "target_update": "hard",  # PyMARL/XuanCe: hard copy; MFQ's reference: soft, tau 0.005
    "target_update_period": 200,  # gradient steps between hard copies (XuanCe: 200)
    "tau": 0.005,  # soft target rate (Yang et al. 2018)
    "n_step": 1,  # 1 = one-step TD as in all references
    "temperature": 0.1,  # MFQ Boltzmann temperature (Yang et al. 2018)
    "grad_clip": 10.0,  # PyMARL grad_norm_clip
    "team_reward": "sum",  # TD targets use the env's team reward as-is (sum) or / N (mean)
    "mixer_lr": None,  # the mixer's own learning rate; None = lr
    "mixer_init": "default",  # mixer weights: torch's default (PyMARL) or orthogonal
    "rollout_length": 100,  # env steps per env per iteration on each EnvRunner
    "hidden": 128,
    "embedding_dim": 16,
    "mixing_embed_dim": 32,  # PyMARL QMIX
    "hypernet_embed": 64,  # PyMARL QMIX
    "checkpoint_replay": False,  # also save the replay buffer in checkpoints
    "curriculum": None,  # incremental learning (docs/incremental.md); None = all agents active
    "eval_interval": 0,  # iterations between greedy evaluations (0: never)
    "eval_episodes": 3,
}

_POSITIVE_INTS = ("batch_size", "replay_capacity", "epsilon_decay_steps", "target_update_period",
                  "n_step", "rollout_length", "hidden", "embedding_dim", "mixing_embed_dim",
                  "hypernet_embed", "eval_episodes")
TEAM_REWARDS = ("sum", "mean")
MIXER_INITS = ("default", "orthogonal")
_UNIT_INTERVAL = ("epsilon_start", "epsilon_end", "tau")


def team_module_id(agent_id, *args, **kwargs) -> str:
    """Policy mapping: a team's agent id is its module id."""
    return agent_id


class TeamQConfig(AlgorithmConfig):
    """Config of `TeamQ` (IQL, VDN, QMIX, MFQ, MFQMIX). Set the family's settings with
    `.team_q(**settings)`; see TEAM_Q_DEFAULTS for each one's default and source."""

    def __init__(self, algo_class=None):
        from marlscale.algorithms.algorithm import TeamQ

        super().__init__(algo_class=algo_class or TeamQ)
        for key, value in TEAM_Q_DEFAULTS.items():
            setattr(self, key, value)
        self.grad_clip_by = "global_norm"
        from marlscale.algorithms.env_runner import TeamEnvRunner

        self.env_runner_cls = TeamEnvRunner
        self.num_env_runners = 0
        from marlscale.curriculum import IncrementalLearning

        self.callbacks_class = IncrementalLearning

    def team_q(self, **settings) -> TeamQConfig:
        """Set family settings by name; unknown names raise."""
        for key, value in settings.items():
            if key not in TEAM_Q_DEFAULTS:
                raise ValueError(
                    f"training setting {key!r} is unknown; allowed: {', '.join(TEAM_Q_DEFAULTS)}"
                )
            if value is not NotProvided:
                setattr(self, key, value)
        return self

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

    def module_specs(self) -> MultiRLModuleSpec:
        from marlscale.models.team_module import TeamQModule

        return MultiRLModuleSpec(rl_module_specs={
            team: RLModuleSpec(module_class=TeamQModule, model_config={
                "algorithm": algorithm,
                "mean_action": self.mean_action,
                "hidden": self.hidden,
                "embedding_dim": self.embedding_dim,
                "mixing_embed_dim": self.mixing_embed_dim,
                "hypernet_embed": self.hypernet_embed,
                "mixer_init": self.mixer_init,
            })
            for team, algorithm in self.team_algorithms().items()
        })

    @override(AlgorithmConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from marlscale.models.team_module import TeamQModule

        return RLModuleSpec(module_class=TeamQModule)

    @override(AlgorithmConfig)
    def get_default_learner_class(self):
        from marlscale.algorithms.learner import TeamQLearner

        return TeamQLearner

    def curriculum_config(self):
        from marlscale.curriculum import CurriculumConfig

        return CurriculumConfig.from_dict(self.curriculum)

    @override(AlgorithmConfig)
    def validate(self) -> None:
        self.validate_team_q()
        self._ensure_curriculum_callback()
        teams = self.team_algorithms()
        self.multi_agent(policies=set(teams), policy_mapping_fn=team_module_id)
        self.rl_module(rl_module_spec=self.module_specs())
        super().validate()

    def _ensure_curriculum_callback(self) -> None:
        """Keep `IncrementalLearning` among the callbacks when a user sets their own."""
        from ray.rllib.callbacks.callbacks import RLlibCallback

        from marlscale.curriculum import IncrementalLearning

        classes = self.callbacks_class
        classes = list(classes) if isinstance(classes, (list, tuple)) else [classes]
        if not any(isinstance(c, type) and issubclass(c, IncrementalLearning) for c in classes):
            classes = [c for c in classes if c is not RLlibCallback] + [IncrementalLearning]
            self.callbacks_class = classes[0] if len(classes) == 1 else classes

    def validate_team_q(self) -> None:
        """The family's own checks (also run by `marlscale train` before Ray starts)."""
        if self.env not in ENV_NAMES.values():
            raise ValueError(
                f"env={self.env!r} is invalid; allowed: {', '.join(ENV_NAMES.values())}"
            )
        env_config = self.team_env_config  # validates the env config itself
        get_algorithm(self.algorithm, "algorithm")
        if self.opponent_algorithm is not None:
            get_algorithm(self.opponent_algorithm, "opponent_algorithm")
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
        if self.mean_action is not None and self.mean_action not in MEAN_ACTIONS:
            raise ValueError(f"mean_action={self.mean_action!r} is invalid; allowed: "
                             f"None, {', '.join(MEAN_ACTIONS)}")
        for key in _POSITIVE_INTS:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key}={value!r} is invalid; allowed: an integer >= 1")
        for key in _UNIT_INTERVAL:
            value = getattr(self, key)
            if not is_finite_number(value) or not 0 <= value <= 1:
                raise ValueError(f"{key}={value!r} is invalid; allowed: a number in [0, 1]")
        if not is_finite_number(self.gamma) or not 0 < self.gamma <= 1:
            raise ValueError(f"gamma={self.gamma!r} is invalid; allowed: a number in (0, 1]")
        for key in ("lr", "temperature", "updates_per_env_step"):
            value = getattr(self, key)
            if not is_finite_number(value) or value <= 0:
                raise ValueError(f"{key}={value!r} is invalid; allowed: a finite number > 0")
        for key in ("learning_starts", "eval_interval"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{key}={value!r} is invalid; allowed: an integer >= 0")
        if self.mixer_lr is not None and not (is_finite_number(self.mixer_lr)
                                               and self.mixer_lr > 0):
            raise ValueError(f"mixer_lr={self.mixer_lr!r} is invalid; allowed: None or a "
                             "finite number > 0")
        for key, allowed in (("team_reward", TEAM_REWARDS), ("mixer_init", MIXER_INITS)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key}={getattr(self, key)!r} is invalid; allowed: "
                                 f"{', '.join(allowed)}")
        if self.target_update not in ("hard", "soft"):
            raise ValueError(
                f"target_update={self.target_update!r} is invalid; allowed: hard, soft"
            )
        if self.grad_clip is not None and not (
            is_finite_number(self.grad_clip) and self.grad_clip > 0
        ):
            raise ValueError(f"grad_clip={self.grad_clip!r} is invalid; allowed: None or a "
                             "finite number > 0")
        if self.rollout_length >= self.replay_capacity:
            raise ValueError(
                f"replay_capacity={self.replay_capacity!r} is invalid with rollout_length="
                f"{self.rollout_length}; allowed: replay_capacity > rollout_length"
            )
        curriculum = self.curriculum_config()
        curriculum.validate("curriculum", team_size=env_config.team_counts[0])
        if curriculum.schedule != "none" and env_config.n_active is not None:
            raise ValueError(
                f"env n_active={env_config.n_active!r} is invalid with curriculum.schedule="
                f"{curriculum.schedule!r}; allowed: n_active unset (the curriculum sets it)"
            )
        if not isinstance(self.checkpoint_replay, bool):
            raise ValueError(
                f"checkpoint_replay={self.checkpoint_replay!r} is invalid; allowed: true, false"
            )
