"""`TeamQSettings`: every training setting of the family, typed, with its default and source.

One field per setting. Its metadata says what is allowed (the checks of `validate()`, which
changes nothing) and where the default comes from (docs/algorithms.md's table is generated
from it and a test keeps the two equal). An algorithm's declaration may override defaults by
name (`AlgorithmSpec.settings`); a value the user sets wins over both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from marlscale.algorithms.registry import ALGORITHMS
from marlscale.algorithms.spec import MEAN_ACTIONS
from marlscale.specfile import check_fields, normalise, setting
from marlscale.specfile import markdown_table as specfile_table

NAMES = tuple(sorted(ALGORITHMS))
TEAM_REWARDS = ("sum", "mean")
MIXER_INITS = ("default", "orthogonal")
TARGET_UPDATES = ("hard", "soft")
PER_TEAM = ("mean_action", "lr", "mixer_lr", "grad_clip", "team_reward", "mixer_init",
            "target_update", "target_update_period", "tau", "temperature", "hidden",
            "embedding_dim", "mean_action_hidden", "mixing_embed_dim", "hypernet_embed")
"""Settings of one team's module and learner, which an algorithm's declaration may override
(each team of a head-to-head run gets its own algorithm's)."""


@dataclass(frozen=True)
class TeamQSettings:
    """The settings of one training run (`training:` in specs, `--set` on the CLI)."""

    algorithm: str = setting("qmix", "", kind="str", choices=NAMES,
                             doc="the learning team's algorithm")
    opponent_algorithm: str | None = setting(
        None, "", kind="str", choices=NAMES, optional=True,
        doc="head-to-head: the second team's algorithm; None = the same")
    mean_action: str | None = setting(
        None, "", kind="str", choices=MEAN_ACTIONS, optional=True,
        doc="override of the algorithm's mean-action input")
    gamma: float = setting(0.95, "Yang et al. 2018 (MAgent battle); XuanCe MAgent2 configs",
                           kind="float", low=0, high=1, low_open=True)
    lr: float = setting(5e-4, "PyMARL QMIX", kind="float", low=0, low_open=True, doc="Adam")
    mixer_lr: float | None = setting(None, "", kind="float", low=0, low_open=True,
                                     optional=True, doc="the mixer's own lr; None = lr")
    batch_size: int = setting(128, "issue #3's benchmark unit", kind="int", low=1,
                              doc="transitions (env steps) per gradient step")
    replay_capacity: int = setting(20_000, "memory on 2-core/24 GiB machines", kind="int",
                                   low=1, doc="env steps")
    learning_starts: int = setting(1_000, "", kind="int", low=0,
                                   doc="env steps stored before the first update")
    updates_per_env_step: float = setting(0.1, "issue #3: 1 update per 10 env steps",
                                          kind="float", low=0, low_open=True)
    epsilon_start: float = setting(1.0, "PyMARL", kind="float", low=0, high=1)
    epsilon_end: float = setting(0.05, "PyMARL", kind="float", low=0, high=1)
    epsilon_decay_steps: int = setting(50_000, "PyMARL", kind="int", low=1,
                                       doc="env steps of the linear decay")
    target_update: str = setting("hard", "PyMARL / XuanCe; soft as in MFQ's reference",
                                 kind="str", choices=TARGET_UPDATES)
    target_update_period: int = setting(200, "XuanCe", kind="int", low=1,
                                        doc="gradient steps between hard copies")
    tau: float = setting(0.005, "Yang et al. 2018", kind="float", low=0, high=1,
                         doc="soft target rate")
    n_step: int = setting(1, "all references", kind="int", low=1)
    temperature: float = setting(0.1, "Yang et al. 2018", kind="float", low=0, low_open=True,
                                 doc="MFQ's Boltzmann temperature")
    grad_clip: float | None = setting(10.0, "PyMARL", kind="float", low=0, low_open=True,
                                      optional=True, doc="global gradient norm")
    team_reward: str = setting(
        "sum", "", kind="str", choices=TEAM_REWARDS,
        doc="TD targets use the team reward as the env sums it, or that sum / N")
    mixer_init: str = setting("default", "PyMARL (default); PyMARL2's use_orthogonal",
                              kind="str", choices=MIXER_INITS)
    rollout_length: int = setting(100, "", kind="int", low=1,
                                  doc="env steps per env per iteration")
    hidden: int = setting(128, "chosen for CPU learners", kind="int", low=1,
                          doc="agent network width")
    embedding_dim: int = setting(16, "chosen for CPU learners", kind="int", low=1,
                                 doc="per-agent slot embedding")
    mean_action_hidden: int = setting(32, "Yang et al. 2018's MFQ network", kind="int", low=1,
                                      doc="mean-action encoder width")
    mixing_embed_dim: int = setting(32, "PyMARL QMIX", kind="int", low=1)
    hypernet_embed: int = setting(64, "PyMARL QMIX", kind="int", low=1)
    sample_ahead: bool = setting(
        True, "Ape-X-style actor/learner overlap", kind="bool",
        doc="with remote EnvRunners, they sample the next iteration while the learner trains "
            "(weights one iteration older); false: sampling and learning take turns")
    checkpoint_replay: bool = setting(False, "", kind="bool",
                                      doc="also save the replay buffers in checkpoints")
    curriculum: dict | None = setting(
        None, "the paper's incremental learning (docs/incremental.md)", kind="mapping",
        optional=True, doc="None = all agents active")
    eval_interval: int = setting(0, "", kind="int", low=0,
                                 doc="iterations between greedy evaluations; 0 = never")
    eval_episodes: int = setting(3, "", kind="int", low=1)
    eval_max_cycles: int | None = setting(
        None, "", kind="int", low=1, optional=True,
        doc="steps per greedy evaluation episode (and the random level's); None = the "
            "training episodes' max_cycles. Makes returns comparable across episode lengths")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TeamQSettings:
        return cls(**cls.normalise(values))

    @classmethod
    def normalise(cls, values: dict[str, Any]) -> dict[str, Any]:
        """User values by name; an unknown name raises. Integral floats (`1e3`) of integer
        settings become ints, so scientific notation works everywhere."""
        return normalise(cls, values, "training setting")

    def validate(self) -> None:
        """Every field's own check, then the checks between fields. Changes nothing."""
        check_fields(self)
        if self.rollout_length >= self.replay_capacity:
            raise ValueError(
                f"replay_capacity={self.replay_capacity!r} is invalid with rollout_length="
                f"{self.rollout_length}; allowed: replay_capacity > rollout_length")


def markdown_table() -> str:
    """The defaults table of docs/algorithms.md (a test checks the two are equal)."""
    return specfile_table(TeamQSettings)
