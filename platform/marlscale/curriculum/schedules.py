"""Incremental-learning schedules: how many agents of each learning team the policy controls.

All agents are in the game from the start; only the first `n_active` slots of a learning team
are driven (and trained) by the learned policy, the rest act uniformly at random (the env's
`active` mask). Stage s controls min(N, start + s * batch) agents.

* `linear` (the paper's): the stage is floor(progress / every), progress = training iterations
  or env steps sampled; a pure function of the Algorithm's checkpointed counters.
* `adaptive`: the stage grows when the learning team's return per agent, averaged over the last
  `window` iterations of the stage, has reached `threshold`, or has plateaued (the mean of the
  window's second half is less than `plateau` above its first half), once the stage has run
  `min_env_steps`; a stage that has run `max_env_steps` grows whatever its return, so a stage
  that never plateaus still ends. Its state (stage, when the stage began, the stage's return
  history) is saved in the Algorithm's checkpoints.

Two more choices shape a stage (both read by the env, which training configures from here):
`reward_scope` (`team`: the learners regress the whole team's reward, random agents' included,
as in the paper's code; `active`: the sum of the trained agents' own rewards, the paper's
"inactive agents are excluded from training") and `inactive` (`random`: the not-yet-trained
agents act uniformly at random, the paper's; `policy`: they act greedily with the shared
policy, untrained, EPC's "copies of trained agents" without their gradients).
* `none`: every agent is active (or the env config's fixed `n_active`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from marlscale.specfile import check_fields, setting

SCHEDULES = ("none", "linear", "adaptive")
UNITS = ("iterations", "env_steps")
EMBEDDING_INITS = ("initialised", "mean")
REWARD_SCOPES = ("team", "active")
INACTIVE = ("random", "policy")


@dataclass
class CurriculumConfig:
    """The `curriculum` training setting (docs/incremental.md). Each key is a typed field: its
    declaration is its check (and sweeps accept it as a `training.curriculum.<key>` axis)."""

    schedule: str = setting("none", kind="str", choices=SCHEDULES,
                            doc="none: every agent active; linear: the paper's; adaptive: grow "
                                "on a threshold or plateau")
    start: int = setting(1, kind="int", low=1, doc="agents controlled at stage 0")
    batch: int = setting(1, kind="int", low=1, doc="agents added per stage")
    every: int = setting(10, kind="int", low=1, doc="linear: iterations or env steps per stage")
    unit: str = setting("iterations", kind="str", choices=UNITS,
                        doc="linear: what `every` counts")
    threshold: float | None = setting(None, kind="float", optional=True,
                                      doc="adaptive: grow at this return per agent")
    plateau: float | None = setting(None, kind="float", optional=True,
                                    doc="adaptive: grow when the window improved less than this")
    window: int = setting(10, kind="int", low=2, doc="adaptive: iterations averaged")
    min_iterations: int = setting(0, kind="int", low=0,
                                  doc="adaptive: at least this many iterations per stage")
    min_env_steps: int = setting(0, kind="int", low=0,
                                 doc="adaptive: at least this many env steps per stage")
    max_env_steps: int | None = setting(None, kind="int", low=1, optional=True,
                                        doc="adaptive: at most this many env steps per stage")
    embedding_init: str = setting("initialised", kind="str", choices=EMBEDDING_INITS,
                                  doc="new agents' slot embeddings: as initialised | mean")
    reward_scope: str = setting("team", kind="str", choices=REWARD_SCOPES,
                                doc="the reward the learners see: the whole team's | the sum of "
                                    "the trained agents' own")
    inactive: str = setting("random", kind="str", choices=INACTIVE,
                            doc="the not-yet-trained agents act: uniformly at random | greedily "
                                "with the shared policy, untrained")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, key: str = "curriculum") -> CurriculumConfig:
        if values is None:
            return cls()
        if isinstance(values, CurriculumConfig):
            return values
        if not isinstance(values, dict):
            raise ValueError(f"{key}={values!r} is invalid; allowed: a mapping of "
                             f"{', '.join(f.name for f in dataclasses.fields(cls))}")
        known = [f.name for f in dataclasses.fields(cls)]
        for name in values:
            if name not in known:
                raise ValueError(f"{key}.{name} is unknown; allowed: {', '.join(known)}")
        config = cls(**values)
        config.validate(key)
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, key: str = "curriculum", team_size: int | None = None) -> None:
        def fail(name: str, allowed: str) -> None:
            raise ValueError(f"{key}.{name}={getattr(self, name)!r} is invalid; allowed: {allowed}")

        check_fields(self, prefix=f"{key}.")
        if self.schedule == "adaptive" and self.threshold is None and self.plateau is None:
            fail("threshold", "a number (or set plateau) with schedule 'adaptive'")
        if team_size is not None and self.schedule != "none" and self.start > team_size:
            fail("start", f"1..{team_size} (the learning team's size)")
        if self.max_env_steps is not None and self.min_env_steps > self.max_env_steps:
            fail("min_env_steps", f"at most {key}.max_env_steps ({self.max_env_steps}): a "
                                  "stage's shortest length cannot exceed its longest")
        for name, default in (("reward_scope", "team"), ("inactive", "random")):
            if self.schedule == "none" and getattr(self, name) != default:
                fail(name, f"{default!r} with schedule 'none' (every agent is trained, so it "
                           "would have no effect), or a schedule (linear, adaptive)")


class Curriculum:
    """A schedule applied to the learning teams (sizes {team: N}), with its own state."""

    def __init__(self, config: CurriculumConfig, team_sizes: dict[str, int],
                 fixed_n_active: int | None = None):
        self.config = config
        self.team_sizes = dict(team_sizes)
        self.fixed_n_active = fixed_n_active
        largest = max(self.team_sizes.values())
        if config.schedule == "none":
            self.final_stage = 0
        else:
            self.final_stage = max(0, math.ceil((largest - config.start) / config.batch))
        self.stage = 0
        self.stage_started = 0  # the training iteration at which the stage began
        self.stage_started_env_steps = 0  # and the env steps sampled by then
        self.history: list[float] = []  # adaptive: the stage's return per agent, per iteration

    @property
    def enabled(self) -> bool:
        return self.config.schedule != "none"

    def n_active(self, stage: int | None = None) -> dict[str, int]:
        """Agents the policy controls in each learning team at `stage` (default: now)."""
        stage = self.stage if stage is None else stage
        if not self.enabled:
            fixed = self.fixed_n_active
            return {t: n if fixed is None else min(n, fixed) for t, n in self.team_sizes.items()}
        grown = self.config.start + stage * self.config.batch
        return {team: min(n, grown) for team, n in self.team_sizes.items()}

    def linear_stage(self, iterations: int, env_steps: int) -> int:
        progress = iterations if self.config.unit == "iterations" else env_steps
        return min(self.final_stage, int(progress) // self.config.every)

    def advance(self, *, iterations: int, env_steps: int, metric: float | None) -> bool:
        """Update the stage after a training iteration; True when it changed."""
        before = self.stage
        if self.config.schedule == "linear":
            self.stage = self.linear_stage(iterations, env_steps)
        elif self.config.schedule == "adaptive" and self.stage < self.final_stage:
            if metric is not None and math.isfinite(metric):
                self.history.append(float(metric))
                self.history = self.history[-self.config.window:]
            if self._should_grow(iterations, env_steps):
                self.stage += 1
        if self.stage != before:
            self.stage_started = iterations
            self.stage_started_env_steps = env_steps
            self.history = []
        return self.stage != before

    def _should_grow(self, iterations: int, env_steps: int) -> bool:
        config = self.config
        ran = env_steps - self.stage_started_env_steps
        if config.max_env_steps is not None and ran >= config.max_env_steps:
            return True
        if iterations - self.stage_started < config.min_iterations or \
                ran < config.min_env_steps:
            return False
        if len(self.history) < config.window:
            return False
        recent = self.history[-config.window:]
        if config.threshold is not None and sum(recent) / len(recent) >= config.threshold:
            return True
        if config.plateau is not None:
            half = len(recent) // 2
            first, second = recent[:half], recent[half:]
            improvement = sum(second) / len(second) - sum(first) / len(first)
            return improvement < config.plateau
        return False

    def report(self) -> dict[str, Any]:
        """The row every training result carries (`curriculum/...`)."""
        n_active = self.n_active()
        return {
            "schedule": self.config.schedule,
            "stage": self.stage,
            "final_stage": self.final_stage,
            "n_active": next(iter(n_active.values())),  # the (first) learning team's
            "n_active_by_team": n_active,
        }

    def get_state(self) -> dict[str, Any]:
        return {"stage": self.stage, "stage_started": self.stage_started,
                "stage_started_env_steps": self.stage_started_env_steps,
                "history": list(self.history)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.stage = int(state["stage"])
        self.stage_started = int(state["stage_started"])
        self.stage_started_env_steps = int(state.get("stage_started_env_steps", 0))
        self.history = list(state["history"])
