"""What every run spec shares: the stop and resource sections, the fields a sweep and a league
have in common, section checks and the spec error.

A spec key is one typed field (`specfile.setting`): its kind, range and meaning are declared
once, and the key lists, the checks and their messages all come from that declaration.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from marlscale import runfiles, specfile, wandb_logging
from marlscale.algorithms.settings import TeamQSettings
from marlscale.envs.config import TeamEnvConfig
from marlscale.specfile import check_value, setting

EXPERIMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SpecError(ValueError):
    """A spec that cannot run; the message names file, key path, value and allowed."""


@dataclass(frozen=True)
class Stop:
    """`stop:` — whichever comes first (totals since the run began, as in Tune)."""

    iterations: float | None = setting(None, kind="float", low=0, low_open=True, optional=True,
                                       doc="training iterations")
    env_steps: float | None = setting(None, kind="float", low=0, low_open=True, optional=True,
                                      doc="env steps sampled")
    time_s: float | None = setting(None, kind="float", low=0, low_open=True, optional=True,
                                   doc="seconds of training")


@dataclass(frozen=True)
class Resources:
    """`resources:` — what one run (or sweep trial) asks of Ray."""

    num_cpus: float = setting(1, kind="float", low=0, low_open=True,
                              doc="CPUs of the Algorithm's own process (sampling with no "
                                  "EnvRunners, and the learner)")
    num_env_runners: int = setting(0, kind="int", low=0, doc="remote EnvRunners (one CPU each)")
    num_envs_per_env_runner: int = setting(1, kind="int", low=1, doc="envs each runner steps")
    num_gpus: float = setting(0, kind="float", low=0, doc="GPUs of the learner")


def names(cls: Any) -> tuple[str, ...]:
    """A declaration's keys, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(cls))


STOP_KEYS = names(Stop)
RESOURCE_KEYS = names(Resources)


def check_section(key: str, values: Any, cls: Any, source: str,
                  error: type[ValueError] = ValueError) -> None:
    """`values` (a spec section, e.g. `stop`) holds only keys `cls` declares, each allowed by
    its declaration: otherwise one error naming the file, `key.sub`, the value and what is
    allowed."""
    known = names(cls)
    if not isinstance(values, dict):
        raise error(f"{source}: {key}={values!r} is invalid; allowed: a mapping of "
                    f"{', '.join(known)}")
    for sub, value in values.items():
        if sub not in known:
            raise error(f"{source}: key '{key}.{sub}' is unknown; allowed: {', '.join(known)}")
        meta = {**specfile.field_meta(cls, sub), "optional": False}  # given: it must be set
        try:
            check_value(f"{key}.{sub}", value, meta)
        except ValueError as problem:
            raise error(f"{source}: {problem}") from None


def check_typed(spec: Any, source: str, error: type[ValueError] = ValueError) -> None:
    """Every typed top-level field of a spec, with the file named."""
    try:
        specfile.check_fields(spec)
    except ValueError as problem:
        raise error(f"{source}: {problem}") from None


def to_dict(spec: Any) -> dict[str, Any]:
    """A spec as the plain mapping its file holds."""
    return dataclasses.asdict(spec)


def read_spec_file(path: str | os.PathLike, what: str = "spec") -> Any:
    """A YAML spec file's contents; a SpecError naming the file when it is missing or bad."""
    try:
        return specfile.read(path, what)
    except ValueError as error:
        raise SpecError(str(error)) from None


def check_keys(values: Any, allowed: tuple[str, ...], source: str, what: str = "spec") -> None:
    """A spec is a mapping of known keys with an `experiment`; a SpecError otherwise."""
    if not isinstance(values, dict):
        raise SpecError(f"{source}: the {what} must be a mapping of {', '.join(allowed)}; "
                        f"got {type(values).__name__}")
    for key in values:
        if key not in allowed:
            raise SpecError(f"{source}: key '{key}' is unknown; allowed: {', '.join(allowed)}")
    if "experiment" not in values:
        raise SpecError(f"{source}: key 'experiment' is missing; allowed: a name matching "
                        f"{EXPERIMENT_NAME.pattern}")


def check_new_run_dir(run_dir: str | os.PathLike, name: str = "--run-dir",
                      hint: str = "") -> None:
    """A run writes into a new or empty folder only (checked before Ray starts)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and (not run_dir.is_dir() or any(
            path.name != runfiles.RUN_LOCK for path in run_dir.iterdir())):
        raise ValueError(f"{name} {str(run_dir)!r} is invalid; allowed: a new or empty "
                         f"folder{hint}")
    existing = specfile.blocking_ancestor(run_dir)
    if existing is not None:
        raise ValueError(f"{name} {str(run_dir)!r} cannot be created: {str(existing)!r} is "
                         f"not a writable folder; allowed: a new or empty folder in a "
                         f"writable place{hint}")


@dataclass
class ExperimentSpec:
    """The keys a sweep and a league share: their name, the base env and training settings
    every trial starts from, the stop and resources of each trial, checkpoints, retries,
    concurrency and W&B. `SweepSpec` and `LeagueSpec` add their own keys to these."""

    experiment: str = setting("", kind="str", doc="names the run dir and the W&B groups")
    description: str = setting("", kind="str", doc="free text")
    env_config: dict[str, Any] = setting(None, kind="mapping", default_factory=dict,
                                         doc="base TeamEnvConfig fields (docs/envs.md)")
    training: dict[str, Any] = setting(None, kind="mapping", default_factory=dict,
                                       doc="base TeamQConfig settings (docs/algorithms.md)")
    stop: dict[str, Any] = setting(None, kind="mapping", default_factory=dict,
                                   doc="iterations | env_steps | time_s: whichever first")
    resources: dict[str, Any] = setting(None, kind="mapping", default_factory=dict,
                                        doc="num_cpus, num_env_runners, "
                                            "num_envs_per_env_runner, num_gpus per trial")
    checkpoint_every: int = setting(10, kind="int", low=1,
                                    doc="iterations between trial checkpoints (+ at the end)")
    max_failures: int = setting(2, kind="int", low=0,
                                doc="retries of a failed trial, from its last checkpoint")
    max_concurrent_trials: int | None = setting(
        None, kind="int", low=1, optional=True,
        doc="null: as many as the cluster's resources allow")
    wandb: dict[str, Any] = setting(None, kind="mapping", default_factory=dict,
                                    doc="project, entity, mode: auto | offline | online | "
                                        "disabled")

    source: ClassVar[str] = "spec"
    """The file it was read from (for error messages); set on the instance by `from_dict`."""
    what: ClassVar[str] = "spec"
    spec_file: ClassVar[str] = runfiles.SWEEP_SPEC

    @classmethod
    def load(cls, path: str | os.PathLike):
        return cls.from_dict(read_spec_file(path, cls.what), source=str(path))

    @classmethod
    def from_dict(cls, values: Any, source: str = "spec"):
        check_keys(values, names(cls), source, cls.what)
        spec = cls(**copy.deepcopy(values))
        spec.source = source
        spec.validate()
        return spec

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def fail(self, key: str, value: Any, allowed: str) -> SpecError:
        return SpecError(f"{self.source}: {key}={value!r} is invalid; allowed: {allowed}")

    def validate(self) -> None:
        """The shared keys: each typed field, the experiment's name, known keys in env_config,
        training, stop and resources, a stop that can end, and W&B's settings. A sweep adds its
        grid's checks; a league checks its own keys and then its training sweep's."""
        check_typed(self, self.source, SpecError)
        if not EXPERIMENT_NAME.match(self.experiment):
            raise self.fail("experiment", self.experiment,
                            f"a name matching {EXPERIMENT_NAME.pattern}")
        for key, allowed in (("env_config", names(TeamEnvConfig)),
                             ("training", TeamQSettings.names())):
            for sub in getattr(self, key):
                if sub not in allowed:
                    raise SpecError(f"{self.source}: key '{key}.{sub}' is unknown; allowed: "
                                    f"{', '.join(allowed)}")
        if not self.stop:
            raise self.fail("stop", self.stop, f"at least one of {', '.join(STOP_KEYS)}")
        check_section("stop", self.stop, Stop, self.source, SpecError)
        check_section("resources", self.resources, Resources, self.source, SpecError)
        wandb_logging.check(self.wandb, self.source, SpecError)
