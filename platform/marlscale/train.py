"""`marlscale train`: one training run from a spec file and/or flags.

A spec (YAML or JSON) has these top-level keys, every one optional:

    env: adversarial_pursuit            # game, or the RLlib name marlscale/<game>
    env_config: {n_agents: 4, ...}      # TeamEnvConfig fields (docs/envs.md)
    training: {algorithm: qmix, ...}    # TeamQConfig settings (docs/algorithms.md)
    stop: {iterations: 50, env_steps: ..., time_s: ...}   # whichever comes first
    resources: {num_cpus: 1, num_env_runners: 0, num_envs_per_env_runner: 1, num_gpus: 0}
    seed: 0
    checkpoint_every: 0                 # iterations between checkpoints (0: only at the end)

The run directory gets `spec.json` (the resolved spec), `metrics.jsonl` (one flattened row per
iteration, appended as it goes), `metrics.csv` (the same rows, written at the end),
`result.json` (last row + final greedy evaluation) and `checkpoints/iter_NNNNNN/`.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from marlscale.algorithms.config import TEAM_Q_DEFAULTS, TeamQConfig
from marlscale.envs import ENV_NAMES

SPEC_KEYS = ("env", "env_config", "training", "stop", "resources", "seed", "checkpoint_every",
             "eval_episodes")
STOP_KEYS = ("iterations", "env_steps", "time_s")
RESOURCE_KEYS = ("num_cpus", "num_env_runners", "num_envs_per_env_runner", "num_gpus")


@dataclass
class TrainSpec:
    """A single training run (the sweep specs of tune_specs/ expand into these)."""

    env: str = "adversarial_pursuit"
    env_config: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    stop: dict[str, Any] = field(default_factory=lambda: {"iterations": 20})
    resources: dict[str, Any] = field(default_factory=dict)
    seed: int | None = 0
    checkpoint_every: int = 0
    eval_episodes: int = 5

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
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"spec file {str(path)!r} does not exist")
        with path.open() as handle:
            return cls.from_dict(yaml.safe_load(handle) or {}, source=str(path))

    @property
    def env_name(self) -> str:
        return self.env if self.env in ENV_NAMES.values() else ENV_NAMES.get(self.env, self.env)

    def validate(self, source: str = "spec") -> None:
        """Every check, before Ray starts or anything is written."""
        def fail(key, value, allowed):
            raise ValueError(f"{source}: {key}={value!r} is invalid; allowed: {allowed}")

        if self.env_name not in ENV_NAMES.values():
            fail("env", self.env, ", ".join(ENV_NAMES))
        for key in ("env_config", "training", "stop", "resources"):
            if not isinstance(getattr(self, key), dict):
                fail(key, getattr(self, key), "a mapping")
        for key, allowed in (("stop", STOP_KEYS), ("resources", RESOURCE_KEYS),
                             ("training", tuple(TEAM_Q_DEFAULTS))):
            for sub in getattr(self, key):
                if sub not in allowed:
                    raise ValueError(f"{source}: key '{key}.{sub}' is unknown; allowed: "
                                     f"{', '.join(allowed)}")
        if not self.stop:
            fail("stop", self.stop, f"at least one of {', '.join(STOP_KEYS)}")
        for sub, value in self.stop.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                fail(f"stop.{sub}", value, "a number > 0")
        for sub, value in self.resources.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                fail(f"resources.{sub}", value, "a number")
            if sub == "num_cpus" and value <= 0:
                fail(f"resources.{sub}", value, "a number > 0")
            low = 1 if sub == "num_envs_per_env_runner" else 0
            if value < low:
                fail(f"resources.{sub}", value, f"a number >= {low}")
        seed = self.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            fail("seed", self.seed, "an integer or null")
        for key in ("checkpoint_every", "eval_episodes"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                fail(key, value, "an integer >= 0")
        try:
            self.algorithm_config().validate_team_q()
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None

    def algorithm_config(self) -> TeamQConfig:
        """The RLlib AlgorithmConfig of this run."""
        env_config = dict(self.env_config)
        if self.seed is not None:
            env_config.setdefault("seed", self.seed)
        resources = self.resources
        num_gpus = resources.get("num_gpus", 0)
        return (
            TeamQConfig()
            .environment(self.env_name, env_config=env_config)
            .team_q(**self.training)
            .env_runners(
                num_env_runners=int(resources.get("num_env_runners", 0)),
                num_envs_per_env_runner=int(resources.get("num_envs_per_env_runner", 1)),
            )
            .learners(num_learners=0, num_gpus_per_learner=num_gpus)
            .resources(num_cpus_for_main_process=resources.get("num_cpus", 1))
            .debugging(seed=self.seed)
        )


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


def progress_line(result: dict[str, Any]) -> str:
    """iteration, env-steps/s, epsilon, normalized return, buffer memory."""
    returns = []
    for team, metrics in result.get("episodes", {}).items():
        returns.append(f"{team} return/agent {metrics.get('return_per_agent', float('nan')):+.2f}")
    curriculum = result.get("curriculum", {})
    if curriculum.get("schedule", "none") != "none":
        returns.append(f"active {curriculum['n_active']} (stage {curriculum['stage']}/"
                       f"{curriculum['final_stage']})")
    return (
        f"iter {result['training_iteration']:4d}"
        f" | env-steps {int(result['env_steps_sampled_lifetime']):>8,}"
        f" | {result['env_steps_per_s']:7.0f} env-steps/s | eps {result['epsilon']:.2f} | "
        + (" | ".join(returns) or "no episode yet")
        + f" | replay {result['replay_bytes'] / 2**20:.1f} MiB"
    )


def should_stop(spec: TrainSpec, result: dict[str, Any], elapsed: float) -> bool:
    stop = spec.stop
    return (
        result["training_iteration"] >= stop.get("iterations", float("inf"))
        or result["env_steps_sampled_lifetime"] >= stop.get("env_steps", float("inf"))
        or elapsed >= stop.get("time_s", float("inf"))
    )


def check_new_run_dir(run_dir: str | os.PathLike, name: str = "--run-dir",
                      hint: str = "") -> None:
    """A run writes into a new or empty folder only (checked before Ray starts)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise ValueError(f"{name} {str(run_dir)!r} is invalid; allowed: a new or empty "
                         f"folder{hint}")


def run(spec: TrainSpec, run_dir: str | os.PathLike, *, log=print) -> dict[str, Any]:
    """Train until a stop criterion; write the run directory; return the final result."""
    run_dir = Path(run_dir).resolve()
    check_new_run_dir(run_dir, "run dir")
    algo = spec.algorithm_config().build_algo()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "spec.json").write_text(json.dumps(asdict(spec), indent=2))
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    try:
        with (run_dir / "metrics.jsonl").open("w") as jsonl:
            while True:
                result = algo.train()
                row = flatten(result)
                rows.append(row)
                jsonl.write(json.dumps(row) + "\n")
                jsonl.flush()
                log(progress_line(result))
                iteration = result["training_iteration"]
                last = should_stop(spec, result, time.perf_counter() - start)
                if last or (spec.checkpoint_every and iteration % spec.checkpoint_every == 0):
                    algo.save_to_path(str(run_dir / "checkpoints" / f"iter_{iteration:06d}"))
                if last:
                    break
        evaluation = algo.evaluate_greedy(spec.eval_episodes) if spec.eval_episodes else {}
    finally:
        algo.stop()
    columns = sorted({key for row in rows for key in row})
    with (run_dir / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    final = {"last": rows[-1], "greedy_evaluation": evaluation,
             "wall_s": time.perf_counter() - start}
    (run_dir / "result.json").write_text(json.dumps(final, indent=2))
    return final
