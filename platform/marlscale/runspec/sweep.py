"""Sweep specs (tune_specs/*.yaml): a grid of training runs, validated before anything runs.

    experiment: fig3_scaling              # required; names the run dir and the W&B groups
    description: ...                      # optional, free text
    game: adversarial_pursuit             # base game (or a grid axis)
    env_config: {max_cycles: 200}         # base TeamEnvConfig fields (docs/envs.md)
    training: {learning_starts: 1000}     # base TeamQConfig settings (docs/algorithms.md)
    grid:                                 # the trials are the product of every axis
      algorithm: [iql, qmix, mfq]         #   shorthands: algorithm, game, n_agents, seed
      n_agents: [5, 10, 25]
      seed: [0, 1, 2, 3, 4]
      env_config.reward_mode: [team, individual]     # any env_config.<field>,
      training.curriculum.schedule: [none, linear]   # training.<setting>[.<curriculum field>]
      pair: [[qmix, mfq], [mfq, mfqmix]]  # head-to-head: [algorithm, opponent_algorithm]
      variant: [baseline, mean_reward]    # named sets of settings from `variants`
    variants:                             # one-factor-at-a-time ablations: each variant
      baseline: {}                        #   overrides the base at any grid axis path
      mean_reward: {training.team_reward: mean}
    stop: {env_steps: 200000}             # iterations | env_steps | time_s: whichever first
    resources: {num_cpus: 1, num_env_runners: 0, num_envs_per_env_runner: 1, num_gpus: 0}
    checkpoint_every: 10                  # iterations between trial checkpoints (+ at the end)
    max_failures: 2                       # retries of a failed trial, from its last checkpoint
    max_concurrent_trials: null           # null: as many as the cluster's resources allow
    wandb: {project: marlscale, mode: auto}   # auto (online iff WANDB_API_KEY is set) |
                                              # offline | online | disabled
    warm_start:                           # transfer as a sweep arm (optional): each trial
      from: runs/smoke                    #   starts from the final checkpoint of the one
      match: [algorithm, seed]            #   trial of that finished sweep with the same
      where: {n_agents: 5}                #   `match` values (among those `where` keeps)

Every error names the file, the key path, the value and what is allowed; every grid point is
expanded and validated as a full training run (`TrainSpec`) before Ray starts.

`warm_start` is `marlscale train --from-checkpoint` for a whole grid: the shared network is
kept and the slot embeddings resized (new slots at the mean of the trained ones; train.py's
`check_warm_start`). Its keys are checked here; what needs the source run directory (that it
is a sweep whose axes hold `match` and `where`, one source trial per trial, each with a final
checkpoint that fits) is checked before Ray starts by `marlscale.sweeps.warm_start.resolve`,
which a report of the sweep never needs. Each trial records its source under WARM_START_KEY
in its params.json (trial, checkpoint, env_steps: the source's env steps, which results.csv
and trials.csv add to the trial's own as `total_env_steps`). A resumed or retried trial
continues from its own checkpoint; the source is read only by a trial that starts afresh.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from dataclasses import dataclass
from typing import Any

from marlscale.algorithms.settings import TeamQSettings
from marlscale.curriculum.schedules import CurriculumConfig
from marlscale.envs import ENV_NAMES, GAME_OF_ENV
from marlscale.envs.config import TeamEnvConfig
from marlscale.runspec.common import ExperimentSpec, SpecError, names
from marlscale.runspec.train import TrainSpec
from marlscale.specfile import check_value, field_meta, setting

SHORTHAND_AXES = {  # grid shorthand -> where it lands in a trial's TrainSpec
    "algorithm": ("training", "algorithm"),
    "game": ("env",),
    "n_agents": ("env_config", "n_agents"),
    "seed": ("seed",),
}
PAIR_AXIS = "pair"
"""Head-to-head shorthand: each value [a, b] sets training.algorithm=a (the first team, red or
predators) and training.opponent_algorithm=b (the second); needs env_config.opponent=learned."""
PAIR_TARGETS = (("training", "algorithm"), ("training", "opponent_algorithm"))
VARIANT_AXIS = "variant"
"""Ablation shorthand: each value names an entry of the spec's `variants`, a mapping of grid
axis paths (env_config.<field>, training.<setting>, ...) to the values that variant sets."""
MAX_TRIALS = 2_000
"""The most trials a sweep's grid may have: each is validated as a full run before Ray starts
(10-20 ms each: 2,000 take under a minute), and Tune keeps every trial's state; split
larger grids into several sweeps."""
SPEC_KEY = "sweep"  # a trial config's copy of the spec (its axis values sit beside it)
WARM_START_KEY = "warm_start"
"""A warm-started trial's config key: its source (`trial`: the source trial's directory name,
`checkpoint`: the final checkpoint it starts from, `env_steps`: the source's env steps)."""


@dataclass(frozen=True)
class WarmStartSpec:
    """`warm_start:` — start every trial from the final checkpoint of its source trial in
    another, finished sweep (`from` is the key; the field is `from_`, `from` being Python's)."""

    from_: str = setting("", kind="str", doc="the run directory of a finished `marlscale "
                                             "sweep` (a local or shared folder)")
    match: list = setting(None, kind="list", default_factory=list,
                          doc="grid axes of both sweeps whose values pick each trial's source "
                              "trial (it must be the only one)")
    where: dict = setting(None, kind="mapping", default_factory=dict,
                          doc="source grid values to keep, e.g. {n_agents: 5}; the source's "
                              "other trials are not sources")

    @staticmethod
    def keys() -> tuple[str, ...]:
        """The spec's keys (`from`, not the field's `from_`)."""
        return tuple(name.rstrip("_") for name in names(WarmStartSpec))

    @staticmethod
    def field_of(key: str) -> str:
        """The field of a spec key (`from` -> `from_`)."""
        return f"{key}_" if key == "from" else key

    @classmethod
    def of(cls, values: dict[str, Any]) -> WarmStartSpec:
        """From the spec's mapping (checked by `SweepSpec.validate`)."""
        return cls(**{cls.field_of(key): value for key, value in values.items()})


def _axis_targets(axis: str) -> tuple[tuple[str, ...], ...] | None:
    """Where a grid axis's value lands in a TrainSpec dict (one place per element for the pair
    axis; none of its own for the variant axis), or None if the axis is unknown."""
    if axis == PAIR_AXIS:
        return PAIR_TARGETS
    if axis == VARIANT_AXIS:
        return ()
    target = _axis_target(axis)
    return None if target is None else (target,)


def _axis_target(axis: str) -> tuple[str, ...] | None:
    if axis in SHORTHAND_AXES:
        return SHORTHAND_AXES[axis]
    parts = tuple(axis.split("."))
    env_fields = set(TeamEnvConfig.__dataclass_fields__)
    curriculum_fields = set(CurriculumConfig.__dataclass_fields__)
    if len(parts) == 2 and parts[0] == "env_config" and parts[1] in env_fields:
        return parts
    if len(parts) == 2 and parts[0] == "training" and parts[1] in TeamQSettings.names():
        return parts
    if len(parts) == 3 and parts[:2] == ("training", "curriculum") \
            and parts[2] in curriculum_fields:
        return parts
    return None


def _get(tree: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        if tree.get(key) is None:
            tree[key] = {}
        tree = tree[key]
    tree[path[-1]] = value


@dataclass
class SweepSpec(ExperimentSpec):
    """A grid of training runs: the shared experiment keys plus the base game, the grid and
    its ablation variants."""

    game: str = setting("adversarial_pursuit", kind="str", choices=tuple(ENV_NAMES),
                        doc="base game (or a grid axis)")
    grid: dict[str, list] = setting(None, kind="mapping", default_factory=dict,
                                    doc="the trials are the product of every axis")
    variants: dict[str, dict[str, Any]] = setting(
        None, kind="mapping", default_factory=dict,
        doc="named sets of settings, one-factor-at-a-time ablations (grid axis `variant`)")
    warm_start: dict[str, Any] | None = setting(
        None, kind="mapping", optional=True,
        doc="start each trial from the final checkpoint of the matching trial of a finished "
            "sweep: from, match, where (below)")

    what = "spec"

    @classmethod
    def of_trial(cls, config: dict[str, Any]) -> tuple[SweepSpec, dict[str, Any]]:
        """The spec and grid point of a trial, from its Tune config (or params.json)."""
        spec = cls(**copy.deepcopy(config[SPEC_KEY]))  # validated before the sweep started
        return spec, {axis: config[axis] for axis in spec.axes}

    def to_dict(self) -> dict[str, Any]:
        values = super().to_dict()
        if values["warm_start"] is None:  # sweep.yaml and fingerprints as before warm_start
            del values["warm_start"]
        return values

    def validate(self) -> None:
        """Every check, including each expanded trial as a full training run."""
        super().validate()
        if "game" in self.env_config:
            raise self.fail("env_config.game", self.env_config["game"],
                            "unset (use the top-level 'game' or a grid axis)")
        self._validate_grid()
        self._validate_warm_start()
        size = math.prod(len(values) for values in self.grid.values())
        if size > MAX_TRIALS:
            raise self.fail("grid", {axis: f"{len(values)} values"
                                     for axis, values in self.grid.items()},
                            f"at most {MAX_TRIALS:,} trials (this grid has {size:,}); split it "
                            "into several sweeps (docs/specs.md)")
        for point in self.points():
            try:
                self.train_spec(point)
            except ValueError as error:
                where = ", ".join(f"{k}={v!r}" for k, v in point.items())
                raise SpecError(f"{self.source}: grid point ({where}): "
                                f"{str(error).removeprefix('spec: ')}") from None

    def _validate_grid(self) -> None:
        if not self.grid:
            raise self.fail("grid", self.grid, "a mapping of axes to non-empty lists "
                            "(at least 'algorithm', 'n_agents' or 'seed')")
        allowed = (f"{', '.join(SHORTHAND_AXES)}, {PAIR_AXIS}, {VARIANT_AXIS}, "
                   "env_config.<field>, training.<setting>, training.curriculum.<field>")
        base = self._base()
        taken: dict[tuple[str, ...], str] = {}
        for axis, values in self.grid.items():
            targets = _axis_targets(str(axis))
            if targets is None:
                raise SpecError(f"{self.source}: key 'grid.{axis}' is unknown; allowed: {allowed}")
            if any(target in taken for target in targets):
                raise self.fail(f"grid.{axis}", values, "one axis per setting (another axis "
                                "sets the same one)")
            taken.update({target: axis for target in targets})
            if not isinstance(values, list) or not values:
                raise self.fail(f"grid.{axis}", values, "a non-empty list")
            if len({repr(v) for v in values}) != len(values):
                raise self.fail(f"grid.{axis}", values, "a list without repeated values")
            if axis == PAIR_AXIS:
                for value in values:
                    if not (isinstance(value, list) and len(value) == 2
                            and all(isinstance(v, str) for v in value)):
                        raise self.fail(f"grid.{axis}", value, "pairs [algorithm, "
                                        "opponent_algorithm] of algorithm names")
            if axis == VARIANT_AXIS:
                for value in values:
                    if not isinstance(value, str) or value not in self.variants:
                        raise self.fail(f"grid.{axis}", value, "names defined under 'variants' "
                                        f"({', '.join(map(str, self.variants)) or 'none'})")
            for target in targets:
                fixed = _get(base, target)
                if fixed is not None and axis != "game" and target != ("seed",):
                    where = ".".join(target) if target != ("env",) else "game"
                    raise self.fail(f"grid.{axis}", values,
                                    f"an axis not also fixed at '{where}'={fixed!r}")
        self._validate_variants(taken)

    def _validate_variants(self, taken: dict[tuple[str, ...], str]) -> None:
        """Each variant: a mapping of settable paths that no other grid axis also sets."""
        for name, overrides in self.variants.items():
            if not isinstance(overrides, dict):
                raise self.fail(f"variants.{name}", overrides,
                                "a mapping of env_config.<field> or training.<setting> to values")
            for path in overrides:
                targets = _axis_targets(str(path))
                if not targets or path in (PAIR_AXIS, VARIANT_AXIS):
                    raise SpecError(f"{self.source}: key 'variants.{name}.{path}' is unknown; "
                                    "allowed: env_config.<field>, training.<setting>, "
                                    f"training.curriculum.<field>, {', '.join(SHORTHAND_AXES)}")
                if targets[0] in taken:
                    raise self.fail(f"variants.{name}.{path}", overrides[path],
                                    f"a setting no grid axis sets (grid.{taken[targets[0]]} does)")
        if self.variants and VARIANT_AXIS not in self.grid:
            raise self.fail("variants", list(self.variants),
                            f"used by a 'grid.{VARIANT_AXIS}' axis (none given)")

    def _validate_warm_start(self) -> None:
        """warm_start's own keys; the source sweep is checked by sweeps.warm_start.resolve."""
        if self.warm_start is None:
            return
        allowed = WarmStartSpec.keys()
        for key in self.warm_start:
            if key not in allowed:
                raise SpecError(f"{self.source}: key 'warm_start.{key}' is unknown; allowed: "
                                f"{', '.join(allowed)}")
        if "from" not in self.warm_start:
            raise SpecError(f"{self.source}: key 'warm_start.from' is missing; allowed: the run "
                            "directory of a finished `marlscale sweep`")
        for key in allowed:
            if key in self.warm_start:
                try:
                    check_value(f"warm_start.{key}", self.warm_start[key],
                                {**field_meta(WarmStartSpec, WarmStartSpec.field_of(key)),
                                 "optional": False})
                except ValueError as error:
                    raise SpecError(f"{self.source}: {error}") from None
        settings = WarmStartSpec.of(self.warm_start)
        if not settings.from_.strip():
            raise self.fail("warm_start.from", settings.from_,
                            "the run directory of a finished `marlscale sweep`")
        for axis in settings.match:
            if not isinstance(axis, str):
                raise self.fail("warm_start.match", settings.match, "a list of grid axis names")
            if axis not in self.grid:
                raise self.fail("warm_start.match", settings.match,
                                f"axes of both sweeps' grids; {axis!r} is not an axis of this "
                                f"one (its axes: {', '.join(self.grid) or 'none'})")
        if len(set(settings.match)) != len(settings.match):
            raise self.fail("warm_start.match", settings.match, "a list without repeated axes")
        for axis in settings.where:
            if axis in settings.match:
                raise self.fail(f"warm_start.where.{axis}", settings.where[axis],
                                f"an axis not also in warm_start.match ({axis!r} is)")

    # ---- expansion ------------------------------------------------------------------------
    @property
    def axes(self) -> list[str]:
        return list(self.grid)

    def points(self) -> list[dict[str, Any]]:
        """Every trial's axis values, in a fixed order (the grid's product)."""
        return [dict(zip(self.axes, combo))
                for combo in itertools.product(*(self.grid[a] for a in self.axes))]

    def _base(self) -> dict[str, Any]:
        return {
            "env": self.game,
            "env_config": copy.deepcopy(self.env_config),
            "training": copy.deepcopy(self.training),
            "stop": dict(self.stop),
            "resources": dict(self.resources),
            "seed": None,
            "checkpoint_every": self.checkpoint_every,
            "eval_episodes": 0,
            "wandb": {"mode": "disabled"},  # a trial logs through the sweep's W&B callback
        }

    def train_spec(self, point: dict[str, Any]) -> TrainSpec:
        """The full training run of one grid point (validated)."""
        values = self._base()
        for axis, value in point.items():
            if axis == VARIANT_AXIS:
                settings = [(_axis_target(path), v) for path, v in self.variants[value].items()]
            else:
                targets = _axis_targets(axis)
                settings = zip(targets, value if len(targets) > 1 else [value])
            for target, part in settings:
                _set(values, target, copy.deepcopy(part))
        if values["seed"] is None:
            values["seed"] = 0
        return TrainSpec.from_dict(values)

    # ---- naming ---------------------------------------------------------------------------
    def group(self, point: dict[str, Any]) -> str:
        """W&B group: experiment/algorithm/game/N, plus any further axis but the seed."""
        spec = self.train_spec(point)
        parts = [self.experiment, spec.training.get("algorithm", TeamQSettings.algorithm),
                 GAME_OF_ENV.get(spec.env, spec.env),
                 f"N{spec.env_config.get('n_agents', TeamEnvConfig.n_agents)}"]
        for axis, value in point.items():
            if axis == PAIR_AXIS:
                parts[1] = "-vs-".join(value)
            elif axis not in SHORTHAND_AXES:
                parts.append(f"{axis.split('.')[-1]}={value}")
        return "/".join(str(p) for p in parts)

    def trial_name(self, point: dict[str, Any]) -> str:
        """e.g. qmix_N25_seed0_reward_mode-team, qmix-vs-mfq_N12_seed0 (file-name safe)."""
        labels = {"algorithm": "{}", "game": "{}", "n_agents": "N{}", "seed": "seed{}"}
        parts = ["-vs-".join(value) if axis == PAIR_AXIS
                 else labels[axis].format(value) if axis in labels
                 else f"{axis.split('.')[-1]}-{value}" for axis, value in point.items()]
        return re.sub(r"[^A-Za-z0-9_.-]", "_", "_".join(parts))

