"""`marlscale evaluate SWEEP_DIR --n-agents 25,100,1000`: zero-shot transfer across N.

A policy trained at a small N0 can play any N: its network is shared by every agent slot and
only the slot embeddings depend on N (`Contestant.load_module` grows or cuts them). Here every
finished trial of a sweep (trained against the random team) plays K greedy episodes against
the random team at each N of the list and at its own N0 (the reference of its transfer ratio),
and the random policy plays the same episodes (maps and seeds) at each N: its level.

Each (trial, N) is an `Evaluation` (evaluate.py: every check, the policy resized to N, its
games); the games of one env (one N) are played together in one `Arena`, spread over its
EnvRunners by the one episode loop, and summed up by `side_summary`, as `marlscale evaluate`
does for one checkpoint. Every statistic comes from marlscale/stats.py.

Tables (SWEEP_DIR/zero_shot/, or --out; names in runfiles.py):

    zero_shot.csv           one row per (trial, N played): trial, algorithm, variant (the
                            sweep's further axes, '' if none), seed, n_trained (N0), n_played,
                            episodes, return_per_agent (mean over episodes), return_std,
                            ci95_low/ci95_high (95% t-interval over episodes), random_level,
                            n_active, iteration, checkpoint
    zero_shot_summary.csv   one row per (algorithm, variant, n_trained, n_played): seeds,
                            mean (over seeds of each trial's mean), std (over seeds),
                            ci95_low/ci95_high and ci_over (`summarize`), random_level,
                            transfer_ratio, gain_ratio
    zero_shot.md            the summary as a markdown table
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from marlscale import keys, runfiles, specfile, stats
from marlscale.evaluation.arena import RANDOM, Arena
from marlscale.evaluation.evaluate import Evaluation, side_summary

GROUP = ("algorithm", "variant", "n_trained", "n_played")
"""A summary row: one policy configuration (its seeds together) at one N played."""
COLUMNS = ("trial", "algorithm", "variant", "seed", "n_trained", "n_played", "episodes",
           keys.RETURN_PER_AGENT, "return_std", "ci95_low", "ci95_high", "random_level",
           "n_active", "iteration", "checkpoint")
"""zero_shot.csv's columns, in order."""
FINISHED = "TERMINATED"
"""A trial's status in trials.csv once it ran to its stop."""
SHOWN_TRIALS = 6
"""How many trials an error line names before '...'."""


def is_sweep_dir(path: str | os.PathLike) -> bool:
    """A `marlscale sweep` run directory (it holds sweep.yaml), as `runs.kind_of` tells one."""
    return (Path(path).expanduser() / runfiles.SWEEP_SPEC).is_file()


@dataclass(frozen=True)
class Trial:
    """A finished trial of the sweep: its final policy and what it was trained as."""

    name: str
    algorithm: str
    variant: str
    seed: int
    n_trained: int
    checkpoint: str


def _variant(point: dict[str, Any], varying: list[str]) -> str:
    """The trial's further grid axes, as `reports/aggregate.with_variants` names an axis."""
    from marlscale.runspec.sweep import VARIANT_AXIS

    return ", ".join(str(point[axis]) if axis == VARIANT_AXIS
                     else f"{axis.split('.')[-1]}={point[axis]}" for axis in varying)


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:SHOWN_TRIALS])
    return shown + (f", ... ({len(names)} in all)" if len(names) > SHOWN_TRIALS else "")


def find_trials(run_dir: Path) -> tuple[list[Trial], list[dict[str, str]]]:
    """The sweep's finished trials with their final checkpoints, and the others with why each
    is left out ({trial, reason}). Raises (one line) for head-to-head trials or where no trial
    finished. Nothing is unpickled: checkpoints are read from their JSON."""
    from marlscale.algorithms import checkpoints
    from marlscale.runspec import SweepSpec
    from marlscale.runspec.sweep import PAIR_AXIS, SHORTHAND_AXES
    from marlscale.sweeps.results import trial_dirs

    where = f"SWEEP_DIR {str(run_dir)!r}"
    spec = SweepSpec.load(run_dir / runfiles.SWEEP_SPEC)
    varying = [axis for axis, values in spec.grid.items()
               if axis not in SHORTHAND_AXES and len(values) > 1]
    status: dict[str, str] = {}
    if (run_dir / runfiles.TRIALS_CSV).is_file():
        listed = pd.read_csv(run_dir / runfiles.TRIALS_CSV, keep_default_na=False)
        status = dict(zip(listed["trial"].astype(str), listed["status"].astype(str)))
    found, skipped, duels = [], [], []
    for folder in trial_dirs(run_dir):
        _, point = SweepSpec.of_trial(json.loads((folder / runfiles.PARAMS_JSON).read_text()))
        train_spec = spec.train_spec(point)
        if PAIR_AXIS in point or train_spec.env_config.get("opponent") == "learned":
            duels.append(folder.name)
            continue
        if status.get(folder.name) != FINISHED:
            reason = (f"status {status[folder.name]}" if folder.name in status else
                      f"not in {runfiles.TRIALS_CSV} (the sweep has not finished)")
            skipped.append({"trial": folder.name, "reason": f"not finished: {reason}"})
            continue
        try:
            checkpoint = checkpoints.load(folder, "trial")
        except ValueError as error:
            skipped.append({"trial": folder.name, "reason": f"no final checkpoint: {error}"})
            continue
        policy = checkpoint.policy(None)
        found.append(Trial(folder.name, policy.algorithm, _variant(point, varying),
                           int(train_spec.seed), policy.n_agents, str(checkpoint.path)))
    if duels:
        raise ValueError(f"{where} holds head-to-head trials ({_listed(duels)}); allowed: a "
                         "sweep whose policies were trained against the random team (zero-shot "
                         "plays them against it; cross-play head-to-head policies with "
                         "`marlscale evaluate CKPT --opponent CKPT`)")
    if not found:
        what = "; ".join(f"{s['trial']}: {s['reason']}" for s in skipped[:SHOWN_TRIALS]) \
            or "it has no trial directories"
        raise ValueError(f"{where} has no finished trial with a final checkpoint ({what}); "
                         "allowed: a sweep run directory whose trials finished (continue it "
                         f"with: marlscale sweep --resume {run_dir})")
    return found, skipped


def check_out(out: str | os.PathLike) -> Path:
    """--out: a folder, or a path where one can be made, that this user can write."""
    out = Path(out).expanduser()
    blocked = specfile.blocking_ancestor(out)
    if blocked is None:
        return out
    what = "a file" if not blocked.is_dir() else "not writable"
    raise ValueError(f"--out {str(out)!r} cannot be written: {str(blocked)!r} is {what}; "
                     "allowed: a folder that can be created and written")


@dataclass(frozen=True)
class Play:
    """One trial's policy at one N: its checked evaluation."""

    trial: Trial
    n_played: int
    evaluation: Evaluation


@dataclass(frozen=True)
class ZeroShot:
    """A checked zero-shot evaluation of a sweep: every finished trial at every N."""

    run_dir: Path
    out: Path
    sizes: tuple[int, ...]
    """The N asked for (each trial also plays its own)."""
    plays: tuple[Play, ...]
    skipped: tuple[dict[str, str], ...]
    episodes: int
    seed: int
    epsilon: float

    @classmethod
    def prepare(cls, run_dir: str | os.PathLike, sizes: Sequence[int] | None,
                episodes: int = 10, seed: int = 0, epsilon: float = 0.0,
                out: str | os.PathLike | None = None, envs: int = 1) -> ZeroShot:
        """Read and check everything (no Ray, nothing written): bad input raises ValueError,
        one line naming it. `sizes` None: the N the sweep's trials were trained at; `envs`:
        as `Evaluation.prepare`'s."""
        run_dir = Path(run_dir).expanduser()
        if sizes is not None and not len(sizes):
            raise ValueError("--n-agents '' is invalid: it names no N; allowed: an integer >= "
                             "1, or a comma-separated list of them (e.g. 25,100,1000)")
        for n in sizes or ():  # the CLI has checked them; a call from Python has not
            specfile.check_value("--n-agents", n, specfile.typed(kind="int", low=1))
        out = check_out(out if out is not None else run_dir / runfiles.ZERO_SHOT_DIR)
        trials, skipped = find_trials(run_dir)
        if sizes is None:
            sizes = sorted({trial.n_trained for trial in trials})
        plays = []
        for trial in trials:
            for n in sorted(set(sizes) | {trial.n_trained}):
                evaluation = Evaluation.prepare(trial.checkpoint, RANDOM, None, episodes, seed,
                                                epsilon, n_agents=n, envs=envs)
                plays.append(Play(trial, n, evaluation))
        return cls(run_dir, out, tuple(sorted(set(sizes))), tuple(plays), tuple(skipped),
                   episodes, seed, float(epsilon))

    def groups(self) -> list[list[Play]]:
        """The plays in one env (one N, one side), each group played in one Arena."""
        grouped: dict[str, list[Play]] = {}
        for play in self.plays:
            env = play.evaluation.env_config.to_dict()
            env.pop("seed", None)  # each trial's own; every game resets the env with its seed
            key = json.dumps([env, list(play.evaluation.sides)], sort_keys=True, default=str)
            grouped.setdefault(key, []).append(play)
        return list(grouped.values())

    def run(self, num_env_runners: int, log: Callable[[str], None] = print) -> pd.DataFrame:
        """Play every group on up to `num_env_runners` EnvRunners (0: in this process); the
        per-(trial, N) table. Ray must be running."""
        rows = []
        for plays in self.groups():
            started = time.perf_counter()
            first = plays[0].evaluation
            mine, theirs = first.sides
            contestants = {f"p{i}": play.evaluation.sides[mine] for i, play in enumerate(plays)}
            games = []
            for key, play in zip(contestants, plays):
                games += play.evaluation.games(key=key, first_index=len(games))
            games += first.games(first_index=len(games), random=True)
            runners = min(num_env_runners, len(games))
            arena = Arena(first.env_config, contestants, runners)
            try:
                results = arena.play(games)
            finally:
                arena.stop()
            random = [r for r in results if r["sides"][mine] is None]
            level = side_summary(random, mine, theirs)[keys.RETURN_PER_AGENT]["mean"]
            for key, play in zip(contestants, plays):
                own = [r for r in results if r["sides"][mine] == key]
                rows.append(_row(play, contestants[key].describe(),
                                 side_summary(own, mine, theirs), level))
            log(f"N={plays[0].n_played}: {len(plays)} policies x {self.episodes} episodes and "
                f"the random level in {time.perf_counter() - started:.1f} s on "
                f"{max(runners, 1)} EnvRunner(s)")
        table = pd.DataFrame(rows, columns=list(COLUMNS))
        return table.sort_values(["algorithm", "variant", "n_trained", "seed", "n_played"],
                                 ignore_index=True)

    def write(self, table: pd.DataFrame) -> dict[str, str]:
        """The three tables into `out`, each whole or not at all; their paths."""
        summary = summarize(table)
        files = {runfiles.ZERO_SHOT_CSV: table.to_csv(index=False),
                 runfiles.ZERO_SHOT_SUMMARY_CSV: summary.to_csv(index=False),
                 runfiles.ZERO_SHOT_MD: markdown(summary, self) + "\n"}
        self.out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            handle, temporary = tempfile.mkstemp(prefix=f".{name}-", dir=self.out)
            try:
                with os.fdopen(handle, "w") as stream:
                    stream.write(text)
                os.replace(temporary, self.out / name)
            finally:
                if os.path.exists(temporary):
                    os.unlink(temporary)
        return {name: str(self.out / name) for name in files}


def _row(play: Play, policy: dict[str, Any], summary: dict[str, Any],
         random_level: float) -> dict[str, Any]:
    returns = summary[keys.RETURN_PER_AGENT]
    low, high = returns["ci95"] or (np.nan, np.nan)
    trial = play.trial
    return {"trial": trial.name, "algorithm": trial.algorithm, "variant": trial.variant,
            "seed": trial.seed, "n_trained": trial.n_trained, "n_played": play.n_played,
            "episodes": returns["n"], keys.RETURN_PER_AGENT: returns["mean"],
            "return_std": returns["std"], "ci95_low": low, "ci95_high": high,
            "random_level": random_level, "n_active": policy["n_active"],
            "iteration": policy["iteration"], "checkpoint": trial.checkpoint}


# ---- the summary ------------------------------------------------------------------------------
def summarize(table: pd.DataFrame, by: Sequence[str] = GROUP) -> pd.DataFrame:
    """Per group of `by` (a policy configuration at an N played; the last key is the N
    played, the one before it the N trained at): `seeds`, `mean` and `std` over seeds of each
    trial's mean return per agent, the 95% t-interval of the mean over seeds (`ci_over`
    'seeds': each seed's mean of K episodes is one replicate, so the episodes' noise is inside
    it; with one seed, that trial's interval over its episodes, `ci_over` 'episodes'),
    `random_level` (the mean of its trials'), and

    - `transfer_ratio`: mean at this N over the mean at the N trained at (NaN where that is 0
      or was not played);
    - `gain_ratio`: how much of its gain over the random level it keeps, (mean - random) at
      this N over (mean - random) at the N trained at (NaN where that gain is not > 0)."""
    by = list(by)
    rows = []
    for key, group in table.groupby(by, sort=True, dropna=False):
        over = stats.t_interval(group[keys.RETURN_PER_AGENT].to_numpy())
        if over["ci95"] is not None:
            (low, high), ci_over = over["ci95"], "seeds"
        else:
            (low, high), ci_over = (group["ci95_low"].iloc[0], group["ci95_high"].iloc[0]), \
                "episodes"
        rows.append({**dict(zip(by, key)), "seeds": over["n"], "mean": over["mean"],
                     "std": over["std"] if over["n"] > 1 else np.nan, "ci95_low": low,
                     "ci95_high": high, "ci_over": ci_over,
                     "random_level": group["random_level"].mean()})
    summary = pd.DataFrame(rows, columns=[*by, "seeds", "mean", "std", "ci95_low", "ci95_high",
                                          "ci_over", "random_level"])
    played, trained = by[-1], by[-2]
    own = summary[summary[played] == summary[trained]].set_index(by[:-1])
    reference = summary.join(own[["mean", "random_level"]].rename(
        columns={"mean": "own_mean", "random_level": "own_random"}), on=by[:-1])
    own_mean, own_gain = reference["own_mean"], reference["own_mean"] - reference["own_random"]
    summary["transfer_ratio"] = (summary["mean"] / own_mean.where(own_mean != 0)).to_numpy()
    summary["gain_ratio"] = ((summary["mean"] - summary["random_level"])
                             / own_gain.where(own_gain > 0)).to_numpy()
    return summary


def shown(summary: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """The summary as report tables show it (formatted with stats.py)."""
    frame = pd.DataFrame({"algorithm": summary["algorithm"]})
    if "variant" in summary and (summary["variant"].astype(str) != "").any():
        frame["variant"] = summary["variant"]
    frame["trained at N"] = summary["n_trained"]
    frame["N played"] = summary["n_played"]
    frame["return per agent [95% CI]"] = [
        stats.format_mean(m, low=lo, high=hi, digits=digits)
        for m, lo, hi in zip(summary["mean"], summary["ci95_low"], summary["ci95_high"])]
    frame["CI over"] = summary["ci_over"]
    frame["seeds"] = summary["seeds"]
    frame["random policy"] = summary["random_level"].map(stats.format_number)
    frame["transfer ratio"] = summary["transfer_ratio"].map(stats.format_mean)
    frame["gain over random kept"] = summary["gain_ratio"].map(stats.format_mean)
    return frame


def markdown(summary: pd.DataFrame, zero_shot: ZeroShot) -> str:
    """zero_shot.md: what was played, then the summary."""
    return (f"# Zero-shot evaluation: {zero_shot.run_dir}\n\n"
            f"Each finished trial's final policy, greedy (epsilon {zero_shot.epsilon}), "
            f"against the random team at N = {', '.join(map(str, zero_shot.sizes))} and at "
            f"the N it was trained at; {zero_shot.episodes} episodes each (seed "
            f"{zero_shot.seed}); the random policy on the same episodes. Transfer ratio: the "
            "return at N over the return at the N trained at; gain over random kept: (return "
            "- random) at N over the same at the N trained at.\n\n"
            + shown(summary).to_markdown(index=False, disable_numparse=True))
