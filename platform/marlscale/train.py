"""`marlscale train`: one training run from a spec file and/or flags.

The spec is a `TrainSpec` (marlscale/runspec/train.py says its keys). The run directory
gets `spec.json` (the resolved spec), `metrics.jsonl` (one flattened row per
iteration, appended as it goes), `metrics.csv` (the same rows, written at the end),
`result.json` (last row, the final greedy evaluation and the random policy's on the same
episodes, each with its own seed from the run's count of evaluation episodes;
marlscale/episodes.py)
and `checkpoints/iter_NNNNNN/`.

W&B, as in sweeps (marlscale/wandb_logging.py): one W&B run per training run, in group
`train/<algorithm>/<game>/N<n>` (`a-vs-b` head-to-head) and named `<algorithm>_N<n>_seed<seed>`,
so the seeds of one configuration aggregate; its config is spec.json, every row of
metrics.jsonl is logged with env steps as the x-axis, and the final greedy evaluation and the
random policy's go into the run's summary. Offline runs land in RUN_DIR/wandb/offline-run-*
(upload with `wandb sync RUN_DIR/wandb/offline-run-*`). spec.json keeps the W&B run id
(`wandb_run_id`), so `--resume` continues the same W&B run.

Two ways to go on from earlier training, both checked before Ray starts:

* `resume(check_resumable(RUN_DIR, stop))` (`marlscale train --resume RUN_DIR`) continues a
  run, interrupted or finished, from its last checkpoint with RLlib's own restore: iteration,
  counters, epsilon, curriculum stage, RNG states and (with `checkpoint_replay`) the replay
  come back. A new stop is a total, as in Tune (iterations, env steps and seconds since the
  run began); it replaces the spec's stop in spec.json. Rows of metrics.jsonl written after
  the last checkpoint (a killed run) are dropped, so no iteration appears twice.
* `run(spec, run_dir, from_checkpoint=check_warm_start(spec, CKPT))` (`marlscale train ...
  --from-checkpoint CKPT[:team]`) starts a new run whose team modules begin with a
  checkpoint's weights (online and target networks); counters, epsilon and the optimizer
  start fresh. The checkpoint must be of the same game, and of the same algorithm, network
  sizes and per-agent observation shapes for every team it starts; spec.json records it under
  `from_checkpoint`. Its N may differ (`--n-agents N2`): the shared network is kept, the slot
  embeddings (and QMIX's per-slot hypernetwork rows) keep their first min(N, N2) rows and new
  slots start at the mean of the trained ones (or fresh, with `embedding_init: initialised`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marlscale import interrupts, keys, provenance, runfiles, wandb_logging
from marlscale.algorithms.config import module_config
from marlscale.runspec.common import check_new_run_dir
from marlscale.runspec.train import (
    EXTRA_KEYS,
    SPEC_KEYS,
    STOP_KEYS,
    TrainSpec,
    describe_stop,
    flatten,
    should_stop,
)

FRESH_BUFFERS = ("epsilon", "num_updates")
"""Module buffers a warm start leaves at their new values (exploration, target-update count)."""


def progress_line(result: dict[str, Any]) -> str:
    """iteration, env steps, end-to-end env-steps/s and agent-steps/s (sampling-only rate in
    brackets), epsilon, return per agent (epsilon-greedy training episodes; the greedy
    evaluation's where one ran this iteration), curriculum stage, replay memory."""
    returns = []
    for team, metrics in result.get("episodes", {}).items():
        returns.append(f"{team} return/agent {metrics.get('return_per_agent', float('nan')):+.2f}")
    for team, metrics in result.get("evaluation", {}).items():
        greedy = metrics.get("return_per_agent", float("nan"))
        if greedy == greedy:  # NaN in the iterations without an evaluation
            returns.append(f"{team} greedy {greedy:+.2f}")
    curriculum = result.get("curriculum", {})
    if curriculum.get("schedule", "none") != "none":
        returns.append(f"active {curriculum['n_active']} (stage {curriculum['stage']}/"
                       f"{curriculum['final_stage']})")
    return (
        f"iter {result['training_iteration']:4d}"
        f" | env-steps {int(result['env_steps_sampled_lifetime']):>8,}"
        f" | {result['env_steps_per_s']:6.0f} env-steps/s {result['agent_steps_per_s']:7.0f}"
        f" agent-steps/s (sampling {result['sampling_env_steps_per_s']:.0f})"
        f" | eps {result['epsilon']:.2f} | "
        + (" | ".join(returns) or "no episode yet")
        + f" | replay {result['replay_bytes'] / 2**20:.1f} MiB"
    )


def run(spec: TrainSpec, run_dir: str | os.PathLike, *, log=print,
        from_checkpoint: WarmStart | str | None = None) -> dict[str, Any]:
    """Train until a stop criterion; write the run directory; return the final result.

    `from_checkpoint`: start the team modules from a checkpoint's weights (a `WarmStart`, or
    any form `check_warm_start` accepts)."""
    run_dir = Path(run_dir).resolve()
    check_new_run_dir(run_dir, "run dir")
    warm = from_checkpoint
    if isinstance(warm, (str, os.PathLike)):
        warm = check_warm_start(spec, warm)
    algo = spec.algorithm_config().build_algo()
    try:
        if warm is not None:
            warm.apply(algo)
        run_dir.mkdir(parents=True, exist_ok=True)
        extra = _with_wandb_id(spec, {"from_checkpoint": warm.record()} if warm else {})
        _write_spec(run_dir, spec, extra)
    except BaseException:
        algo.stop()
        raise
    return _train(algo, spec, run_dir, [], log, extra)


def _with_wandb_id(spec: TrainSpec, extra: dict[str, Any]) -> dict[str, Any]:
    """spec.json's extra keys with a W&B run id when the run logs to W&B (kept if it has one)."""
    if spec.wandb.get("mode") == "disabled" or "wandb_run_id" in extra:
        return extra
    return {**extra, "wandb_run_id": wandb_logging.new_run_id()}


def _write_spec(run_dir: Path, spec: TrainSpec, extra: dict[str, Any]) -> None:
    """spec.json, and provenance.json (the commit and machine; a resume is added to it)."""
    (run_dir / runfiles.TRAIN_SPEC).write_text(json.dumps({**spec.to_dict(), **extra}, indent=2))
    provenance.record(run_dir)


def _start_wandb(spec: TrainSpec, run_dir: Path, extra: dict[str, Any]):
    """The run's W&B run (continued if spec.json's id has logged before); None if disabled."""
    group, name = spec.wandb_names()
    return wandb_logging.start_run(spec.wandb, run_dir, run_id=extra.get("wandb_run_id"),
                                   group=group, name=name, config={**spec.to_dict(), **extra})


def _train(algo, spec: TrainSpec, run_dir: Path, rows: list[dict[str, Any]], log,
           extra: dict[str, Any], time_before: float = 0.0) -> dict[str, Any]:
    """The training loop of `run` and `resume`: appends to metrics.jsonl and logs to W&B,
    checkpoints, stops the Algorithm; then metrics.csv (every row) and result.json. `rows`:
    earlier rows kept; `extra`: spec.json's extra keys (the W&B run id)."""
    rows = list(rows)
    start = time.perf_counter()
    wandb_run = None
    try:
        wandb_run = _start_wandb(spec, run_dir, extra)
        with (run_dir / runfiles.METRICS_JSONL).open("a") as jsonl, \
                _stop_on_interrupt(log) as interrupted:
            while True:
                result = algo.train()
                # Resumed: the rows' time_total_s goes on from the checkpoint's (as Tune does).
                result["time_total_s"] = result.get("time_total_s", 0.0) + time_before
                row = flatten(result)
                rows.append(row)
                jsonl.write(json.dumps(row) + "\n")
                jsonl.flush()
                if wandb_run is not None:
                    wandb_run.log(row)
                log(progress_line(result))
                iteration = result["training_iteration"]
                last = should_stop(spec.stop, result, time_before + time.perf_counter() - start) \
                    or interrupted.is_set()
                if last or (spec.checkpoint_every and iteration % spec.checkpoint_every == 0):
                    algo.save_to_path(str(run_dir / runfiles.CHECKPOINTS
                                          / runfiles.train_checkpoint(iteration)))
                if last:
                    break
        # An interrupted run is not at its stop: its final evaluation waits for --resume.
        episodes = 0 if interrupted.is_set() else spec.eval_episodes
        evaluation = algo.evaluate_greedy(episodes) if episodes else {}
        random = algo.evaluate_greedy(episodes, random=True) if episodes else {}
        if wandb_run is not None:
            wandb_run.summary.update(flatten({"greedy_evaluation": evaluation,
                                              "random_evaluation": random}))
    except BaseException:
        if wandb_run is not None:
            wandb_run.finish(exit_code=1)
        raise
    finally:
        algo.stop()
    if wandb_run is not None:
        wandb_run.finish()
    columns = sorted({key for row in rows for key in row})
    with (run_dir / runfiles.METRICS_CSV).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    final = {"last": rows[-1], "greedy_evaluation": evaluation, "random_evaluation": random,
             "wall_s": time.perf_counter() - start, "interrupted": interrupted.is_set(),
             "signal": interrupted.received.name if interrupted.is_set() else None}
    (run_dir / runfiles.RESULT_JSON).write_text(json.dumps(final, indent=2))
    return final


@contextlib.contextmanager
def _stop_on_interrupt(log) -> Iterator[threading.Event]:
    """Within: the first SIGINT (Ctrl-C) or SIGTERM sets the event it yields (its `received`
    says which signal), so the loop stops at the end of its iteration with a checkpoint and
    the result files; a second one raises Interrupted (marlscale/interrupts.py)."""
    interrupted = threading.Event()

    def first() -> None:
        interrupted.set()
        log(f"interrupted ({received.name}): stopping at the end of this iteration with a "
            "checkpoint, metrics.csv and result.json (Ctrl-C or SIGTERM again to abort "
            "without them)")

    with interrupts.on_interrupt([first]) as received:
        interrupted.received = received
        yield interrupted


# ---- --resume ---------------------------------------------------------------------------------
@dataclass
class Resume:
    """A `marlscale train` run to continue, as `check_resumable` found it."""

    run_dir: Path
    spec: TrainSpec
    """From RUN_DIR/spec.json, with the new stop if one was given."""
    checkpoint: Path
    """The last checkpoint (RUN_DIR/checkpoints/iter_NNNNNN, the highest)."""
    iteration: int
    rows: list[dict[str, Any]]
    """metrics.jsonl rows up to the checkpoint's iteration (later ones are trained again)."""
    time_s: float
    """Training time the run had spent at the checkpoint (its row's time_total_s)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """spec.json's keys besides the spec's (EXTRA_KEYS), kept as they were."""


def check_resumable(run_dir: str | os.PathLike, stop: dict[str, Any] | None = None,
                    name: str = "--resume") -> Resume:
    """Everything `resume` needs, checked before Ray starts or anything is written.

    `stop`: a new stop (totals, as in Tune), replacing the spec's; None keeps the spec's."""
    from marlscale.algorithms import checkpoints

    given = str(run_dir)
    allowed = "allowed: the run directory of a `marlscale train` run with a checkpoint"
    run_dir = Path(run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        problem = "is not a folder" if run_dir.exists() else "does not exist"
        raise ValueError(f"{name} {given!r} {problem}; {allowed}")
    spec_file = run_dir / runfiles.TRAIN_SPEC
    if not spec_file.is_file():
        raise ValueError(f"{name} {given!r} is not a `marlscale train` run directory (it has no "
                         f"{runfiles.TRAIN_SPEC}); {allowed}")
    from marlscale import specfile

    values = specfile.read_json(spec_file, "run's spec", "the JSON mapping `marlscale "
                                "train` wrote (docs/specs.md)")
    provenance.check(run_dir)
    extra = {key: values.pop(key) for key in list(values) if key not in SPEC_KEYS} \
        if isinstance(values, dict) else {}
    unknown = sorted(set(extra) - set(EXTRA_KEYS))
    if unknown:
        raise ValueError(f"{spec_file}: key {unknown[0]!r} is unknown; allowed: "
                         f"{', '.join(SPEC_KEYS + EXTRA_KEYS)}")
    if stop:
        values = {**values, "stop": dict(stop)}
    spec = TrainSpec.from_dict(values, source=str(spec_file))
    numbered = sorted((run_dir / runfiles.CHECKPOINTS).glob(runfiles.TRAIN_CHECKPOINT_GLOB))
    if not any((path / runfiles.CHECKPOINT_MARKER).is_file() for path in numbered):
        raise ValueError(f"{name} {given!r} has no checkpoint (no checkpoints/iter_*/ with "
                         f"{runfiles.CHECKPOINT_MARKER}): the run was killed before its first "
                         "checkpoint; allowed: a run with a checkpoint (set checkpoint_every "
                         "to checkpoint during a run, not only at its end)")
    checkpoint = checkpoints.load(run_dir, name)
    rows = _rows_until(run_dir / runfiles.METRICS_JSONL, checkpoint.iteration)
    at = rows[-1] if rows and rows[-1].get("training_iteration") == checkpoint.iteration else {}
    progress = {"training_iteration": checkpoint.iteration,
                keys.ENV_STEPS: at.get(keys.ENV_STEPS, 0)}
    time_s = float(at.get("time_total_s", 0.0))
    if should_stop(spec.stop, progress, time_s):
        hint = ", ".join(f"--{key.replace('_', '-')} N" for key in STOP_KEYS)
        raise ValueError(
            f"{name} {given!r} has nothing to train: at its last checkpoint (iteration "
            f"{checkpoint.iteration}, {int(progress['env_steps_sampled_lifetime'])} env steps, "
            f"{time_s:.1f} s) it has already reached its stop ({describe_stop(spec.stop)}); "
            f"allowed: a larger total stop ({hint}), e.g. --iterations "
            f"{checkpoint.iteration + 10}")
    return Resume(run_dir=run_dir, spec=spec, checkpoint=checkpoint.path,
                  iteration=checkpoint.iteration, rows=rows, time_s=time_s, extra=extra)


def _rows_until(path: Path, iteration: int) -> list[dict[str, Any]]:
    """metrics.jsonl's rows up to `iteration` (a last line cut short by a kill is dropped)."""
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise ValueError(f"{path}: line {number} is not JSON; allowed: one JSON row "
                                 "per line") from None
    return [row for row in rows if row.get("training_iteration", 0) <= iteration]


def resume(state: Resume | str | os.PathLike, *, stop: dict[str, Any] | None = None,
           log=print) -> dict[str, Any]:
    """Continue a `marlscale train` run from its last checkpoint until its (new) stop.

    `state`: a `check_resumable` result, or the run directory (then checked with `stop`)."""
    if not isinstance(state, Resume):
        state = check_resumable(state, stop)
    spec, run_dir = state.spec, state.run_dir
    algo = spec.algorithm_config().build_algo()
    try:
        algo.restore_from_path(str(state.checkpoint))
        log(f"resuming {run_dir} at iteration {algo.iteration} from {state.checkpoint.name} "
            f"until {describe_stop(spec.stop)}")
        extra = _with_wandb_id(spec, state.extra)
        _write_spec(run_dir, spec, extra)
        with (run_dir / runfiles.METRICS_JSONL).open("w") as jsonl:
            jsonl.writelines(json.dumps(row) + "\n" for row in state.rows)
    except BaseException:
        algo.stop()
        raise
    return _train(algo, spec, run_dir, state.rows, log, extra, time_before=state.time_s)


# ---- --from-checkpoint ------------------------------------------------------------------------
@dataclass
class WarmStart:
    """Starting weights of a new run's team modules, as `check_warm_start` loaded them."""

    checkpoint: Path
    teams: dict[str, str]
    """The run's team -> the checkpoint's team whose module it starts from."""
    states: dict[str, dict[str, Any]]
    """The run's team -> module state (online and target networks, not FRESH_BUFFERS)."""

    def record(self) -> dict[str, Any]:
        """What spec.json says about it."""
        return {"checkpoint": str(self.checkpoint), "teams": dict(self.teams)}

    def apply(self, algo) -> None:
        """Set the learner's modules, then sync the EnvRunners' (call right after building)."""
        for team, state in self.states.items():
            algo.learner_group.foreach_learner(
                lambda learner, team=team, state=state: learner.module[team].set_state(state))
        algo.env_runner_group.sync_weights(from_worker_or_learner_group=algo.learner_group,
                                           inference_only=True)


def check_warm_start(spec: TrainSpec, text: str | os.PathLike,
                     name: str = "--from-checkpoint") -> WarmStart:
    """The weights `run(spec, ..., from_checkpoint=text)` starts from, checked to fit (no Ray).

    `text`: a checkpoint, `marlscale train` run or sweep trial directory (see
    algorithms/checkpoints.py), optionally `:team` to start the run's learning team from that
    team's module; without it, every team the run trains starts from the team of its name."""
    checkpoint, teams = warm_start_teams(spec, text, name)
    config = spec.algorithm_config()
    env_config = config.team_env_config
    counts = dict(zip(env_config.game_spec.team_names, env_config.team_counts))
    curriculum = config.curriculum_config()
    init = curriculum.embedding_init if curriculum.schedule != "none" else "mean"
    states = {}  # accepted: now RLlib reads (unpickles) the modules
    for team, source in teams.items():
        policy = checkpoint.policies[source]
        module = policy.load_module()
        if counts[team] != policy.n_agents:  # continue the policy at another population size
            module.resize_agents(counts[team], trained=checkpoint.n_active[source], init=init)
        states[team] = {key: value for key, value in module.get_state().items()
                        if key not in FRESH_BUFFERS}
    return WarmStart(checkpoint=checkpoint.path, teams=teams, states=states)


def warm_start_teams(spec: TrainSpec, text: str | os.PathLike, name: str = "--from-checkpoint"):
    """`check_warm_start`'s checks, from the checkpoint's marlscale_checkpoint.json alone
    (nothing unpickled): its TeamCheckpoint and the run's team -> the checkpoint's team whose
    module it starts from. A sweep's `warm_start` checks every trial with it before Ray
    starts; each trial then loads its weights with `check_warm_start`."""
    from marlscale.algorithms import checkpoints
    from marlscale.envs import MagentTeamEnv

    path, source_team = checkpoints.split_team(str(text))
    checkpoint = checkpoints.load(path, name)
    config = spec.algorithm_config()
    env_config = config.team_env_config
    algorithms = config.team_algorithms()
    if source_team is None:
        teams = {team: team for team in algorithms}
    else:
        if checkpoint.game == env_config.game:
            checkpoint.policy(source_team, name)  # a team it lacks: names the ones it holds
        teams = {next(iter(algorithms)): source_team}
    counts = dict(zip(env_config.game_spec.team_names, env_config.team_counts))
    wanted = {
        teams[team]: {**module_config(algorithms[team], config.settings(algorithms[team])),
                      "n_agents": counts[team]}
        for team in teams
    }
    checkpoints.check_fits(checkpoint, wanted, env_config.game, name, any_n=True)
    probe = MagentTeamEnv(env_config)
    for team, source in teams.items():  # from its marlscale_checkpoint.json: nothing unpickled
        policy = checkpoint.policies[source]
        have = _shapes(policy.observation_shapes, policy.n_actions)
        want = _shapes({key: space.shape for key, space in
                        probe.observation_spaces[team].spaces.items()},
                       int(probe.action_spaces[team].nvec[0]))
        for key in sorted(set(have) & set(want)):
            if have[key] != want[key]:
                raise ValueError(
                    f"{name} {str(checkpoint.path)!r}: its {source} module takes {key} of shape "
                    f"{have[key]}; the run's {team} team has {want[key]}; allowed: a "
                    "checkpoint whose env gives the same observation and action shapes per "
                    "agent (game, state_grid)")
    return checkpoint, teams


def _shapes(observation_shapes: dict[str, tuple[int, ...]],
            n_actions: int) -> dict[str, tuple[Any, ...]]:
    """Observation and action shapes, the per-agent columns' team size written "N"."""
    per_agent = (*keys.PER_AGENT_KEYS, keys.ALIVE, keys.ACTIVE)
    shapes = {key: ("N", *shape[1:]) if key in per_agent else tuple(shape)
              for key, shape in observation_shapes.items()}
    shapes["actions"] = ("N", int(n_actions))
    return shapes
