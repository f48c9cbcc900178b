"""`marlscale report RUN_DIR [RUN_DIR ...]`: the paper's figures, tables and a report.md.

It draws what the runs hold and says what it skipped and why:

    learning_curves.png   epsilon-greedy training return   any trial vs random (Figs 3, 7 top)
    greedy_curves.png     greedy evaluation return         greedy evaluations (eval_interval > 0)
    trained_agent_curves.png  greedy return of the agents the policy controls  incremental runs
    scaling.png           final return against N           two or more N (`--budget B`: at B;
                          `--aggregate iqm`: the IQM over seeds, 4+ seeds)
    improvement.png       P(X's final > Y's) per pair of learners at each N   two learners at an N
    steps_to_threshold.png  env steps to reach a return, against N, log-log, with the
                          growth exponent alpha and censored trials   greedy evaluations
    frontier_budget.png   the frontier N at each budget      greedy evaluations, two or more N
    transfer.png          zero-shot return against the N played, per N trained at
                          a sweep's zero_shot/zero_shot.csv (`marlscale evaluate SWEEP_DIR`)
    reward_modes.png      team against individual reward   both, for one algorithm (Fig 4)
    incremental.png       with and without, trained agents both, for one algorithm and N (Fig 6)
    ablations.png         each variant's effect, 95% CI   a sweep with `variants`, one `baseline`
    league.png            cross-play reward differences    a `marlscale league` run (Fig 7 bottom)
    league_improvement.png  P(row better than column) per cross-play cell   the same
    head_to_head.png      reward difference over training  head-to-head trials (Fig 7 bottom)
    throughput.png        end-to-end env-, agent-steps/s   any trial

Each figure is one entry of `SECTIONS`, which declares when it applies (or why it is skipped)
and how it is built; adding a figure means a builder and one entry. The statistics and the
'mean ± spread' cells come from marlscale/stats.py.

Each figure has a table in report.md and a CSV beside its PNG. Files are written to a
staging folder first and moved into `--out` at the end, so an existing report is never left
half-replaced. `--wandb` also logs the figures and tables to a W&B run.
"""

from __future__ import annotations

import datetime
import itertools
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from marlscale import provenance, runfiles, specfile, stats, storage
from marlscale.evaluation import league as league_tables
from marlscale.evaluation import zero_shot
from marlscale.reports import aggregate, budget, figures
from marlscale.reports.runs import ABLATION, Runs, load

REFERENCE_ABLATION = "baseline"
"""The variant every other one of a sweep's `variants` is compared with."""


@dataclass
class Section:
    """One figure of the report with its table(s) and what they show."""

    name: str
    title: str
    text: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    """file stem -> the table as shown in report.md (also written as CSV)."""


def check_out(out: str | os.PathLike) -> Path:
    """--out: a folder, or a path where one can be made, that this user can write. Checked
    before anything is read or written; nothing is left behind here."""
    out = Path(out).expanduser()
    blocked = specfile.blocking_ancestor(out)
    if blocked is None:
        return out
    allowed = "expected: a folder that can be created and written"
    if not blocked.is_dir():
        what = "it is a file" if blocked == out.absolute() else f"{str(blocked)!r} is a file"
        raise ValueError(f"--out {str(out)!r} cannot be written: {what}; {allowed}")
    raise ValueError(f"--out {str(out)!r} cannot be written: {str(blocked)!r} is not "
                     f"writable; {allowed}")


def _cells(summary: pd.DataFrame) -> list[str]:
    """A summary's 'mean ± spread' column ('IQM [low, high]' where it holds an interval)."""
    if "high" in summary:
        return [stats.format_mean(m, low=lo, high=hi)
                for m, lo, hi in zip(summary["mean"], summary["low"], summary["high"])]
    return [stats.format_mean(m, s) for m, s in zip(summary["mean"], summary["spread"])]


def _steps(value: Any) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{int(value):,}"


def _budgets(table: pd.DataFrame, summary: pd.DataFrame, by: list[str]) -> list[str]:
    """Each summary row's budget in env steps (the largest stop among its trials)."""
    budget = table.groupby(by)["budget_env_steps"].max()
    return [_steps(b) for b in summary.join(budget, on=by)["budget_env_steps"]]


def _markdown(table: pd.DataFrame) -> str:
    return table.to_markdown(index=False, disable_numparse=True)


# ---- what the sections draw from ------------------------------------------------------------
@dataclass
class Inputs:
    """What every section's check and builder read: the runs, the report's flags, and the
    runs' trials split the ways the sections choose from (each split made once, when first
    read)."""

    runs: Runs
    ci: str
    out: Path
    """The folder the figures are drawn into."""
    last: int
    thresholds: tuple[float, ...] = ()
    """--threshold: greedy returns per agent to reach (empty: the defaults)."""
    budget: float | None = None
    """--budget: read the scaling section at this many env steps (None: each trial's end)."""
    aggregate: str = "mean"
    """--aggregate: finals, the scaling curve and league ratings over seeds as the mean or
    the IQM (stats.AGGREGATES)."""

    @cached_property
    def runnable(self) -> pd.DataFrame:
        """The trials that ran, each with its `variant` label."""
        trials = aggregate.with_variants(self.runs)
        return trials[trials["env_steps"] > 0]

    @cached_property
    def fixed(self) -> pd.DataFrame:
        """The runnable trials against the random team."""
        return self.runnable[self.runnable["opponent_algorithm"] == "random"]

    @cached_property
    def duel(self) -> pd.DataFrame:
        """The runnable trials against a learning opponent (head-to-head)."""
        return self.runnable[self.runnable["opponent_algorithm"] != "random"]

    @cached_property
    def curves(self) -> pd.DataFrame:
        """The curves of the trials against the random team."""
        return self.runs.curves.merge(self.fixed[["run", "trial"]], on=["run", "trial"])

    @cached_property
    def zero_shot(self) -> pd.DataFrame:
        """The sweeps' zero-shot tables (`marlscale evaluate SWEEP_DIR --n-agents ...`), one
        row per (trial, N played) of the trials against the random team, each with the
        report's `variant` label."""
        tables = []
        for path in self.runs.paths:
            path = path.expanduser()  # as `runs.load` names the run
            file = path / runfiles.ZERO_SHOT_DIR / runfiles.ZERO_SHOT_CSV
            if self.runs.kinds.get(str(path)) == "sweep" and file.is_file():
                table = pd.read_csv(file).drop(columns="variant", errors="ignore")
                tables.append(table.assign(run=str(path)))
        if not tables:
            return pd.DataFrame(columns=[*zero_shot.COLUMNS, "run"])
        return pd.concat(tables, ignore_index=True).merge(
            self.fixed[["run", "trial", "variant"]], on=["run", "trial"])

    @cached_property
    def finals(self) -> tuple[pd.DataFrame, str]:
        """The trials against the random team with their `final` return (read at --budget
        where given; trials that ran fewer steps are left out), and which return it is."""
        kind = aggregate.return_kind(self.curves)
        trials = aggregate.per_trial(self.runs, self.fixed)
        if self.budget is None:
            return aggregate.with_final(trials, self.runs.curves, kind, self.last), kind
        return _at_budget(trials, self.runs.curves, kind, self.budget, self.last), kind

    @cached_property
    def improvement(self) -> pd.DataFrame:
        """Per (variant, N) and pair of algorithms x < y (by name) against the random team:
        P(x's final > y's) over their seeds, with its bootstrap interval (`p`, `low`,
        `high`) and each side's seeds."""
        table, _ = self.finals
        rows = []
        for (variant, n), group in table.dropna(subset=["final"]).groupby(
                ["variant", "n_agents"], sort=True):
            finals = {name: mine["final"].to_numpy()
                      for name, mine in group.groupby("algorithm", sort=True)}
            for x, y in itertools.combinations(sorted(finals), 2):
                p, low, high = stats.probability_of_improvement(finals[x], finals[y])
                rows.append({"variant": variant, "n_agents": n, "x": x, "y": y, "p": p,
                             "low": low, "high": high,
                             "mann_whitney_p": stats.mann_whitney_p(finals[x], finals[y]),
                             "seeds_x": len(finals[x]), "seeds_y": len(finals[y])})
        return pd.DataFrame(rows)

    @cached_property
    def league_improvement(self) -> pd.DataFrame:
        """league.csv's rows with the probability of improvement of each cell (stats.
        clustered_improvement), tabulated from each league's episodes.csv."""
        tables = []
        for run, league in self.runs.league["league"].groupby("run", sort=False):
            episodes = self.runs.league["episodes"]
            episodes = episodes[episodes["run"] == run].drop(columns="run")
            both = bool((league["side"] == league_tables.BOTH).all())
            tables.append(league_tables.league_from_episodes(episodes, both).assign(run=run))
        return pd.concat(tables, ignore_index=True)

    @cached_property
    def levels(self) -> tuple[list[budget.Threshold], str]:
        """The thresholds of the sample-complexity view, and how they were chosen."""
        finals = aggregate.with_final(aggregate.per_trial(self.runs, self.fixed),
                                      self.runs.curves, "greedy_return", self.last)
        defaults, how = budget.default_thresholds(finals)
        if not self.thresholds:
            return defaults, f"The thresholds are {how}."
        given = [budget.Threshold(value, "given") for value in self.thresholds]
        if len(given) > 1:
            return given, "The thresholds are the ones given (`--threshold`)."
        return [*given, defaults[1]], (
            "The thresholds are the one given (`--threshold`) and, so that no conclusion rests "
            f"on one threshold, the default halfway level ({defaults[1].label}: {how}).")


def _most_values(curves: pd.DataFrame, column: str) -> int:
    """The most values of `column` that one trial's curve holds (0 where none does)."""
    counts = curves.dropna(subset=[column]).groupby(["run", "trial"]).size()
    return int(counts.max()) if len(counts) else 0


def _incremental_trials(inputs: Inputs) -> pd.DataFrame:
    """The trials against random of each algorithm and N run both with and without
    incremental learning (`variant` leaves the schedule out: the figure compares it)."""
    trials = aggregate.with_variants(inputs.runs, exclude=("incremental",)).loc[
        inputs.fixed.index]
    schedules = trials.assign(on=trials["incremental"] != "none").groupby(
        ["algorithm", "variant", "n_agents"])["on"].nunique()
    pairs = schedules[schedules > 1].reset_index()[["algorithm", "variant", "n_agents"]]
    return trials.merge(pairs, on=["algorithm", "variant", "n_agents"])


def _reward_mode_trials(inputs: Inputs) -> pd.DataFrame:
    """The trials against random of each algorithm run with both team and individual reward
    (`variant` leaves the reward mode out: the figure compares it)."""
    trials = aggregate.with_variants(inputs.runs, exclude=("reward_mode",)).loc[
        inputs.fixed.index]
    modes = trials.groupby(["algorithm", "variant"])["reward_mode"].nunique()
    return trials.merge(modes[modes > 1].reset_index()[["algorithm", "variant"]])


def _staged(inputs: Inputs) -> pd.DataFrame:
    """The trials against random with incremental learning."""
    return inputs.fixed[inputs.fixed["incremental"] != "none"]


def _ablations(inputs: Inputs) -> pd.Series:
    """Each trial's ablation (the sweep's `variants` name; empty without one)."""
    fixed = inputs.fixed
    return fixed[ABLATION].astype(str) if ABLATION in fixed else pd.Series(dtype=str)


# ---- the sections ---------------------------------------------------------------------------
CURVE_SECTIONS = {
    "train_return": ("learning_curves", "Learning curves"),
    "greedy_return": ("greedy_curves", "Greedy evaluation curves"),
    "active_greedy_return": ("trained_agent_curves", "Greedy return of the trained agents"),
}


def _curve_section(inputs: Inputs, trials: pd.DataFrame, kind: str) -> Section:
    runs, ci, out, last = inputs.runs, inputs.ci, inputs.out, inputs.last
    curves = aggregate.curves_of(runs, trials)
    by = ["algorithm", "variant", "n_agents"]
    what = aggregate.RETURN_KINDS[kind]
    name, title = CURVE_SECTIONS[kind]
    random = None
    if kind == "active_greedy_return":  # the level the trained agents start from
        random = curves.dropna(subset=["random_return"]).groupby("n_agents")[
            "random_return"].mean().to_dict()
    figures.learning_curves(aggregate.seed_curves(curves, kind, by, ci),
                            stats.spread_label(ci), out / f"{name}.png",
                            title=f"The {what} over training", random=random)
    table = aggregate.with_final(trials, curves, kind, last)
    summary = aggregate.summarize(table, by, "final", ci)
    shown = pd.DataFrame({
        "algorithm": summary["algorithm"], "variant": summary["variant"],
        "N": summary["n_agents"],
        f"final {what}": _cells(summary),
        "seeds": summary["n"], "budget (env steps)": _budgets(table, summary, by)})
    kind_text = {
        "train_return": "epsilon-greedy training episodes (the latest 20 finished episodes "
                        "per iteration, exploration on)",
        "greedy_return": "greedy evaluation episodes (exploration off, a separate env)",
        "active_greedy_return": "the agents the policy controls (incremental learning: the "
                                "others act at random) in greedy evaluation episodes",
    }[kind]
    return Section(name, title,
                   f"Return per agent of {kind_text}, against env steps; one panel per N, "
                   f"one line per algorithm. Final: the mean of each trial's last {last} "
                   "values, then over seeds.", {name: shown})


def _scaling_section(inputs: Inputs) -> Section:
    ci, out, last = inputs.ci, inputs.out, inputs.last
    table, kind = inputs.finals
    summary = aggregate.scaling(table, ci, inputs.aggregate)
    edges = aggregate.frontiers(summary)
    what = aggregate.RETURN_KINDS[kind]
    at = "" if inputs.budget is None else f" at {inputs.budget:,.0f} env steps"
    iqm = inputs.aggregate == "iqm"
    figures.scaling(summary, edges, f"final {what}",
                    "95% bootstrap CI over seeds" if iqm else stats.spread_label(ci),
                    out / "scaling.png", title=f"Final return per agent against N{at}",
                    centre=inputs.aggregate)
    shown = pd.DataFrame({
        "algorithm": summary["algorithm"], "variant": summary["variant"],
        "N": summary["n_agents"],
        f"final {what}" + (" (IQM)" if iqm else ""): _cells(summary),
        "seeds": summary["n"], "random policy": summary["random_level"].map(stats.format_number),
        "above random": [("n/a" if pd.isna(r) else "yes" if m > r else "no")
                         for m, r in zip(summary["mean"], summary["random_level"])],
        "budget (env steps)": summary["budget_env_steps"].map(_steps)})
    frontier = pd.DataFrame({
        "algorithm": edges["algorithm"], "variant": edges["variant"],
        "frontier N (above random and clearly above 0)": edges["frontier"].map(_n),
        "largest N above random": edges["largest_n_above_random"].map(_n),
        "largest N clearly above 0": edges["largest_n_above_zero"].map(_n)})
    greedy = kind == "greedy_return"
    final = (f"the mean of a trial's last {last} greedy evaluations" + (
        "" if inputs.budget is None else f" at or before {inputs.budget:,.0f} env steps "
        "(`--budget`; trials that ran fewer steps are left out)") if greedy else
             f"the mean of a trial's last {last} training iterations' epsilon-greedy return "
             "(these runs hold no greedy evaluations: set training.eval_interval)")
    over = ("the interquartile mean (IQM) over seeds, with its stratified-bootstrap 95% "
            "interval" if iqm else "the mean over seeds")
    clearly = ("the lower end of the IQM's bootstrap interval" if iqm
               else "the lower end of the mean's 95% t-interval over seeds")
    return Section("scaling", f"Scaling with N{at}",
                   f"Final return per agent against N. **Final** is {final}, then {over}. "
                   "The random policy's level is the same evaluation with every "
                   "agent acting uniformly at random, logged by each trial (dashed grey). "
                   "A circle marks each line's **frontier**: the largest N up to which the "
                   "final return stays above the random level and clearly above 0 at every N "
                   f"run (**clearly**: {clearly} is above 0, so a collapsed line at +0.05 "
                   "\u00b1 0.1 is not).",
                   {"scaling": shown, "frontier": frontier})


LEVEL_P = 1 - stats.LEVEL
"""A test's p-value below this is significant (at the intervals' level)."""


def _resolved(low: Any, high: Any, x: str, y: str) -> str:
    """Whether a probability of improvement's interval excludes 0.5, and for whom."""
    if pd.isna(low) or pd.isna(high):
        return "n/a"
    return f"yes: {x}" if low > 0.5 else f"yes: {y}" if high < 0.5 else "no"


def _improvement_section(inputs: Inputs) -> Section:
    table = inputs.improvement
    _, kind = inputs.finals
    at = "" if inputs.budget is None else f" at {inputs.budget:,.0f} env steps"
    figures.improvement(table, inputs.out / "improvement.png",
                        f"Probability of improvement: final return{at}")
    shown = pd.DataFrame({
        "variant": table["variant"], "N": table["n_agents"], "X": table["x"],
        "Y": table["y"], "P(X > Y) [95% CI]": [
            stats.format_mean(p, low=lo, high=hi, signed=False)
            for p, lo, hi in zip(table["p"], table["low"], table["high"])],
        "CI excludes 0.5": [_resolved(lo, hi, x, y) for lo, hi, x, y in zip(
            table["low"], table["high"], table["x"], table["y"])],
        "Mann-Whitney p": table["mann_whitney_p"].map(lambda v: f"{v:.3f}"),
        "resolved": [_resolved(lo, hi, x, y) if p < LEVEL_P else "no" for lo, hi, x, y, p in zip(
            table["low"], table["high"], table["x"], table["y"], table["mann_whitney_p"])],
        "seeds X": table["seeds_x"], "seeds Y": table["seeds_y"]})
    return Section(
        "improvement", f"Probability of improvement{at}",
        f"For each pair of learners at the same N (and variant): the probability that a run "
        f"of X ends with a higher final {aggregate.RETURN_KINDS[kind]} than a run of Y "
        "(Agarwal et al. 2021): over every pair of their seeds, a tie counting one half (the "
        "Mann-Whitney U over n m). Its 95% interval is a percentile bootstrap that resamples "
        f"X's seeds and Y's seeds separately ({stats.RESAMPLES:,} resamples, seeded). Over "
        "a few seeds that interval is too narrow: where every seed of one beats every seed "
        "of the other, each resample does too, and the interval shrinks to the point 0 or "
        "1. So a difference is **resolved** only where the interval excludes 0.5 *and* the "
        "two-sided Mann-Whitney U test of the same seeds (exact: scipy) gives p < 0.05. With "
        "3 seeds a side the smallest p is 0.10: no 3-seed comparison is resolved, however "
        "the seeds fall; it takes 4 v 4 (p = 0.029 at complete separation). Finals as in "
        "the scaling section.",
        {"improvement": shown})


def _n(value: Any) -> str:
    return "none" if value is None or pd.isna(value) else str(int(value))


def _reward_section(inputs: Inputs) -> Section:
    runs, ci, out, last = inputs.runs, inputs.ci, inputs.out, inputs.last
    trials = _reward_mode_trials(inputs)
    curves = aggregate.curves_of(runs, trials)
    by = ["algorithm", "variant", "reward_mode", "n_agents"]
    kind = "train_return"
    what = aggregate.RETURN_KINDS[kind]
    figures.reward_modes(aggregate.seed_curves(curves, kind, by, ci), what,
                         stats.spread_label(ci), out / "reward_modes.png")
    table = aggregate.with_final(trials, curves, kind, last)
    summary = aggregate.summarize(table, by, "final", ci)
    wide = summary.pivot_table(index=["algorithm", "variant", "n_agents"],
                               columns="reward_mode", values=["mean", "spread", "n"],
                               aggfunc="first", dropna=False)
    shown = pd.DataFrame({"algorithm": [a for a, _, _ in wide.index],
                          "variant": [v for _, v, _ in wide.index],
                          "N": [n for _, _, n in wide.index]})
    for mode in sorted(summary["reward_mode"].unique()):
        shown[f"final, {mode} reward"] = [stats.format_mean(m, s) for m, s in zip(
            wide[("mean", mode)], wide[("spread", mode)])]
        shown[f"seeds ({mode})"] = wide[("n", mode)].fillna(0).astype(int).to_numpy()
    budget = table.groupby(["algorithm", "variant", "n_agents"])["budget_env_steps"].max()
    shown["budget (env steps)"] = [_steps(budget.get(key)) for key in wide.index]
    return Section("reward_modes", "Team against individual reward",
                   f"The {what} against env steps with the shared team reward and with each "
                   "agent's own reward, one line per N (the paper's Fig 4). "
                   f"Final: the mean of each trial's last {last} values.",
                   {"reward_modes": shown})


def _incremental_section(inputs: Inputs) -> Section:
    runs, ci, out, last = inputs.runs, inputs.ci, inputs.out, inputs.last
    chosen = _incremental_trials(inputs)
    curves = aggregate.curves_of(runs, chosen)
    by = ["algorithm", "variant", "n_agents", "incremental"]
    kind = "train_return"
    what = aggregate.RETURN_KINDS[kind]
    active = aggregate.seed_curves(curves[curves["incremental"] != "none"], "n_active",
                                   ["algorithm", "variant", "n_agents"], ci)
    figures.incremental(aggregate.seed_curves(curves, kind, by, ci), active, what,
                        stats.spread_label(ci), out / "incremental.png")
    table = aggregate.with_final(chosen, curves, kind, last)
    summary = aggregate.summarize(table, by, "final", ci)
    shown = pd.DataFrame({
        "algorithm": summary["algorithm"], "variant": summary["variant"],
        "N": summary["n_agents"], "incremental": summary["incremental"],
        f"final {what}": _cells(summary),
        "seeds": summary["n"], "budget (env steps)": _budgets(table, summary, by)})
    return Section("incremental", "Incremental learning",
                   f"The {what} with incremental learning (solid) and without (dashed) for "
                   "each algorithm and N run both ways; grey, right axis: the "
                   f"agents the policy controls (the paper's Fig 6). Final: the mean of each "
                   f"trial's last {last} values.", {"incremental": shown})


def _effect(ablation: str, effect: Any, low: Any, high: Any) -> str:
    """An ablation's effect with its interval; the reference has none, nor a one-seed one."""
    if ablation == REFERENCE_ABLATION:
        return "reference"
    one_seed = not pd.isna(effect) and pd.isna(low)
    return stats.format_mean(effect, low=low, high=high) + (
        " (no interval: one seed)" if one_seed else "")


def _ablation_section(inputs: Inputs) -> Section:
    runs, ci, out, last = inputs.runs, inputs.ci, inputs.out, inputs.last
    kind = aggregate.return_kind(inputs.curves)
    others = aggregate.with_variants(runs, exclude=(ABLATION,)).loc[inputs.fixed.index]
    table = aggregate.with_final(others, runs.curves, kind, last)
    effects = aggregate.effects(table, REFERENCE_ABLATION)
    effects["spread"] = stats.half_width(effects["std"], effects["n"], ci)
    effects = effects.sort_values(  # the reference first in each group, then by name
        ["algorithm", "variant", "n_agents", ABLATION],
        key=lambda c: c.map(lambda v: (v != REFERENCE_ABLATION, v)) if c.name == ABLATION
        else c).reset_index(drop=True)
    what = aggregate.RETURN_KINDS[kind]
    figures.ablations(effects, REFERENCE_ABLATION, what, stats.spread_label(ci),
                      out / "ablations.png")
    settings = {name: ", ".join(f"{k}={v}" for k, v in changes.items()) or "the spec's own"
                for name, changes in runs.variants.items()}
    excluded = [("" if pd.isna(lo) else "yes" if lo > 0 or hi < 0 else "no")
                for lo, hi in zip(effects["ci95_low"], effects["ci95_high"])]
    shown = pd.DataFrame({
        "algorithm": effects["algorithm"], "variant": effects["variant"],
        "N": effects["n_agents"], "ablation": effects[ABLATION],
        "settings": effects[ABLATION].map(lambda a: settings.get(a, "")),
        f"final {what}": _cells(effects),
        "seeds": effects["n"],
        f"effect vs {REFERENCE_ABLATION} [95% CI]": [
            _effect(*row) for row in zip(effects[ABLATION], effects["effect"],
                                         effects["ci95_low"], effects["ci95_high"])],
        "CI excludes 0": excluded})
    return Section("ablations", "Ablations: one factor at a time",
                   f"Each variant of the sweep changes one setting from the "
                   f"'{REFERENCE_ABLATION}' (the settings column). Final: the mean of each "
                   f"trial's last {last} values of the {what}, then over seeds. **Effect**: "
                   f"the variant's mean minus the {REFERENCE_ABLATION}'s, with the 95% Welch "
                   "t-interval of that difference over seeds; where it excludes 0 the "
                   "factor changed the result at this budget.", {"ablations": shown})


def _league_section(inputs: Inputs) -> Section:
    runs = inputs.runs
    league = runs.league["league"]
    figures.league_matrix(league, inputs.out / "league.png")
    shown = pd.DataFrame({
        "policy": league["algorithm"], "side": league["side"],
        "opponent": league["column_algorithm"],
        **_league_intervals(league, "reward_difference", "reward difference"),
        "win rate": league["win_rate"].map(lambda v: f"{v:.2f}"),
        "episodes": league["episodes"]})
    tables = {"league": shown}
    if "ratings" in runs.league:
        ratings = runs.league["ratings"]
        tables["ratings"] = pd.DataFrame({
            "algorithm": ratings["algorithm"], "side": ratings["side"],
            **_league_intervals(ratings, "rating", "rating"),
            "win rate": ratings["win_rate"].map(lambda v: f"{v:.2f}")})
        if inputs.aggregate == "iqm":
            tables["ratings"]["rating, IQM over seeds [95% bootstrap CI]"] = _iqm_ratings(
                inputs, ratings)
    return Section("league", "League: cross-play",
                   "Every final policy against every other algorithm's (and the random "
                   "team), greedy: the row's return per agent minus the column's, mean over "
                   "episodes with its 95% t-interval over episodes and, where the league "
                   "trained 2+ seeds, over seeds (each seed's mean is one value). Read the "
                   "one over seeds: one policy's episodes are not independent training runs. "
                   "The figure shows it. From the league's league.csv.", tables)


def _iqm_ratings(inputs: Inputs, ratings: pd.DataFrame) -> list[str]:
    """Each ratings.csv row's rating as the IQM over its seeds' mean reward differences
    against the other algorithms, with its stratified-bootstrap interval."""
    episodes = inputs.runs.league.get("episodes")
    if episodes is None:  # a league cross-played before episodes.csv was written
        return ["n/a (no episodes.csv)"] * len(ratings)
    seeds = {}  # per run: each (algorithm, side, seed)'s rating, computed once
    for run, mine in episodes.groupby("run", sort=False):
        both = bool((ratings.loc[ratings["run"] == run, "side"] == league_tables.BOTH).all())
        seeds[run] = league_tables.seed_ratings(mine, both).set_index(["algorithm", "side"])
    cells = []
    for row in ratings.to_dict("records"):
        table = seeds.get(row["run"])
        key = (row["algorithm"], row["side"])
        values = (table.loc[[key], "rating"].to_numpy()
                  if table is not None and key in table.index else np.array([]))
        if len(values) < stats.MIN_IQM_SEEDS:
            cells.append("n/a")
            continue
        centre, low, high = stats.iqm_interval([values])
        cells.append(stats.format_mean(centre, low=low, high=high))
    return cells


def _league_improvement_section(inputs: Inputs) -> Section:
    table = inputs.league_improvement
    figures.league_improvement(table, inputs.out / "league_improvement.png")
    low, high = league_tables.IMPROVEMENT[1:]
    shown = pd.DataFrame({
        "policy": table["algorithm"], "side": table["side"],
        "opponent": table["column_algorithm"],
        "P(row better) [95% CI over seeds]": [
            stats.format_mean(p, low=lo, high=hi, signed=False)
            for p, lo, hi in zip(table["improvement"], table[low], table[high])],
        "resolved (CI excludes 0.5)": [
            _resolved(lo, hi, "row", "column") for lo, hi in zip(table[low], table[high])],
        "seeds": table["seeds"], "episodes": table["episodes"]})
    return Section(
        "league_improvement", "League: probability of improvement",
        "The league heat map's companion: for each cell, the probability that the row's "
        "policy gets the higher return per agent in a cross-play episode (reward difference "
        "> 0; a tie counts one half), over every episode of every pair of the two "
        "algorithms' policies. Its 95% interval is a two-way cluster bootstrap over training "
        "seeds: each resample draws the row's seeds and the column's seeds with replacement "
        f"and weighs each episode by how often both were drawn ({stats.RESAMPLES:,} "
        "resamples, seeded), since episodes of one policy are not independent replicates. "
        "A difference is **resolved** where the interval excludes 0.5. With 3 seeds a side "
        "the bootstrap draws from only 3 x 3 seed pairs and its interval is too narrow "
        "(percentile bootstraps over few clusters are): read a 3-seed league's resolved "
        "cells beside the reward difference's t-interval over seeds. Tabulated from the "
        "league's episodes.csv.", {"league_improvement": shown})


def _league_intervals(table: pd.DataFrame, value: str, label: str) -> dict[str, list[str]]:
    """'mean [low, high]' over episodes, and '[low, high]' over seeds where there is one."""
    episodes_low, episodes_high = stats.EPISODE_CI
    shown = {f"{label} [95% CI over episodes]": [
        stats.format_mean(v, low=lo, high=hi)
        for v, lo, hi in zip(table[value], table[episodes_low], table[episodes_high])]}
    low, high, over = stats.ci_columns(table)
    if over == "seeds":
        shown[f"95% CI over {int(table['seeds'].max())} seeds"] = [
            stats.format_interval(lo, hi) for lo, hi in zip(table[low], table[high])]
    return shown


def _head_to_head_section(inputs: Inputs) -> Section:
    runs, ci, out, last = inputs.runs, inputs.ci, inputs.out, inputs.last
    trials = inputs.duel
    curves = runs.curves.merge(trials[["run", "trial"]], on=["run", "trial"])
    by = ["algorithm", "opponent_algorithm", "n_agents"]
    figures.head_to_head(aggregate.seed_curves(curves, "reward_difference", by, ci),
                         stats.spread_label(ci), out / "head_to_head.png")
    table = aggregate.with_final(trials, curves, "reward_difference", last)
    summary = aggregate.summarize(table, by, "final", ci)
    shown = pd.DataFrame({
        "first team": summary["algorithm"], "second team": summary["opponent_algorithm"],
        "N per team": summary["n_agents"],
        "final reward difference": _cells(summary),
        "seeds": summary["n"], "budget (env steps)": _budgets(table, summary, by)})
    return Section("head_to_head", "Head-to-head training",
                   "Reward difference per agent (first team's epsilon-greedy return per agent "
                   "minus the second's) over training, for each trained pair (the paper's "
                   f"Fig 7, bottom). Final: the mean of each trial's last {last} values.",
                   {"head_to_head": shown})


def _throughput_section(inputs: Inputs) -> Section:
    table = aggregate.per_trial(inputs.runs, inputs.runnable)
    duel = table["opponent_algorithm"] != "random"
    table.loc[duel, "algorithm"] = table["algorithm"] + "-vs-" + table["opponent_algorithm"]
    summary = aggregate.throughput(table, inputs.ci)
    figures.throughput(summary, inputs.out / "throughput.png", stats.spread_label(inputs.ci))

    def rates(column: str) -> list[str]:  # '1,234 ± 56': whole steps, thousands grouped
        return [stats.format_mean(m, s, digits=0, signed=False, grouped=True)
                for m, s in zip(summary[column], summary[f"{column}_spread"])]

    shown = pd.DataFrame({
        "algorithm": summary["algorithm"], "N": summary["n_agents"],
        "env-steps/s": rates("env_steps_per_s"), "agent-steps/s": rates("agent_steps_per_s"),
        "sampling-only env-steps/s": rates("sampling_env_steps_per_s"),
        "trials": summary["n"]})
    return Section("throughput", "Throughput",
                   "End to end: a trial's env steps over its wall-clock training time "
                   "(sampling, learning, evaluation, checkpoints); agent-steps/s multiplies by "
                   "the learning agents (both teams' in head-to-head). The sampling-only rate "
                   "leaves learning out.", {"throughput": shown})


def _at_budget(trials: pd.DataFrame, curves: pd.DataFrame, kind: str, steps: float,
               last: int) -> pd.DataFrame:
    """The trials that ran at least `steps` env steps, each with its `final` return read at
    `steps` and its budget and env steps set to `steps`."""
    finals = budget.final_at(curves, kind, steps, last)
    table = trials.copy()
    table["final"] = finals.reindex(pd.MultiIndex.from_frame(trials[["run", "trial"]])
                                    ).to_numpy()
    table = table.dropna(subset=["final"])
    table["budget_env_steps"] = steps
    table["env_steps"] = steps
    return table


def _seed_cells(group: pd.DataFrame) -> str:
    """One cell of the steps-to-threshold table: each seed's env steps, '> B' where censored,
    '<= S' where the first evaluation already reached it."""
    cells = []
    for row in group.sort_values("seed").to_dict("records"):
        if row["censored"]:
            cells.append(f"> {row['censored_at']:,.0f}")
        else:
            cells.append(("≤ " if row["at_first_evaluation"] else "")
                         + f"{row['steps']:,.0f}")
    return "; ".join(cells)


def _steps_section(inputs: Inputs) -> Section:
    levels, how = inputs.levels
    steps = budget.steps_to_threshold(inputs.curves, inputs.fixed, levels)
    alphas = budget.growth_exponents(steps)
    figures.steps_to_threshold(steps, alphas, levels, inputs.out / "steps_to_threshold.png")
    rows = []
    for (algorithm, variant, n), group in steps.groupby(budget.STEPS_KEYS, sort=True):
        row = {"algorithm": algorithm, "variant": variant, "N": n,
               "seeds": group["seed"].nunique()}
        for level in levels:
            mine = group[group["threshold"] == level.value]
            row[f"env steps to {level.label} (per seed)"] = _seed_cells(mine)
            row[f"censored at {level.label}"] = int(mine["censored"].sum())
        rows.append(row)
    by_threshold = {level.value: level.label for level in levels}
    exponents = pd.DataFrame({
        "algorithm": alphas["algorithm"], "variant": alphas["variant"],
        "threshold": alphas["threshold"].map(by_threshold),
        "alpha": alphas["alpha"].map(lambda a: "n/a" if pd.isna(a) else f"{a:.2f}"),
        "95% interval (bootstrap over seeds)": [
            "n/a" if pd.isna(lo) else stats.format_interval(lo, hi)
            for lo, hi in zip(alphas["low"], alphas["high"])],
        "N fitted": alphas["sizes"].replace("", "none"), "trials fitted": alphas["points"],
        "of which at the first evaluation (\u2264)": alphas["at_first_evaluation"],
        "censored, left out": alphas["left_out"]})
    return Section(
        "steps_to_threshold", "Sample complexity: env steps to a threshold",
        "For each trial, the first env step at which its greedy return per agent reaches a "
        "threshold, linearly interpolated between the evaluation below it and the first at "
        "or above it (≤: its first evaluation was already there). A trial that never "
        "reaches it is **censored**: '> B' gives its last evaluation, open triangles draw "
        "it at that step, and it is never counted as reaching the threshold. "
        f"{how} The growth exponent **alpha** fits log(env steps) = a + alpha log N by "
        "least squares over each learner's uncensored trials; its 95% interval is a "
        f"percentile bootstrap ({stats.RESAMPLES:,} resamples, seeded) that resamples the "
        "seeds within each N. Censored trials are left out of the fit and listed: where the "
        "largest N are censored, alpha is a lower bound. A trial that reached the threshold "
        "by its first evaluation is fitted at that step, an upper bound: where most did, the "
        "threshold is too low to measure growth, and alpha is pulled towards 0.",
        {"steps_to_threshold": pd.DataFrame(rows), "growth_exponent": exponents})


def _budget_section(inputs: Inputs) -> Section:
    runs, ci, last = inputs.runs, inputs.ci, inputs.last
    trials = aggregate.per_trial(runs, inputs.fixed)
    longest = inputs.curves.dropna(subset=["greedy_return"])["env_steps"].max()
    read = budget.budgets(longest, inputs.budget)
    frontier_rows, final_rows, edges_at = {}, {}, {}
    for steps in read:
        summary = aggregate.scaling(_at_budget(trials, runs.curves, "greedy_return", steps,
                                               last), ci)
        if not len(summary):
            continue
        edges = aggregate.frontiers(summary)
        edges_at[steps] = edges
        column = f"{steps:,}"
        for edge in edges.to_dict("records"):
            key = (edge["algorithm"], edge["variant"])
            frontier_rows.setdefault(key, {})[column] = _n(edge["frontier"])
        for row in summary.to_dict("records"):
            key = (row["algorithm"], row["variant"], row["n_agents"])
            final_rows.setdefault(key, {})[column] = (
                f"{stats.format_mean(row['mean'], row['spread'])} ({row['n']})")
    columns = [f"{steps:,}" for steps in edges_at]
    frontier = pd.DataFrame([{"algorithm": a, "variant": v,
                              **{c: cells.get(c, "not run") for c in columns}}
                             for (a, v), cells in sorted(frontier_rows.items())])
    finals = pd.DataFrame([{"algorithm": a, "variant": v, "N": n,
                            **{c: cells.get(c, "not run") for c in columns}}
                           for (a, v, n), cells in sorted(final_rows.items())])
    figures.frontier_budget(edges_at, sorted(inputs.fixed["n_agents"].unique()),
                            inputs.out / "frontier_budget.png")
    return Section(
        "frontier_budget", "The frontier at each budget",
        "The scaling section's frontier (the largest N up to which the final greedy return "
        "stays above the random level and clearly above 0) read at each budget B from the "
        f"same curves: a trial's final return at B is the mean of its last {last} greedy "
        "evaluations at or before B, and only trials that ran at least B env steps count at "
        "B ('not run': none did). The second table gives those final returns per agent "
        f"(mean ± {stats.spread_label(ci)}, seeds in brackets); columns are budgets in "
        "env steps.", {"frontier_budget": frontier, "final_at_budget": finals})


def _transfer_section(inputs: Inputs) -> Section:
    runs, ci, last = inputs.runs, inputs.ci, inputs.last
    summary = zero_shot.summarize(inputs.zero_shot)
    summary["spread"] = stats.half_width(summary["std"], summary["seeds"], ci)
    kind = aggregate.return_kind(inputs.curves)
    direct = aggregate.scaling(aggregate.with_final(aggregate.per_trial(runs, inputs.fixed),
                                                    runs.curves, kind, last), ci)
    what = f"final {aggregate.RETURN_KINDS[kind]}"
    figures.transfer(summary, direct, what, stats.spread_label(ci),
                     inputs.out / "transfer.png")
    shown = zero_shot.shown(summary)
    shown.insert(shown.columns.get_loc("return per agent [95% CI]"),
                 f"return per agent (\u00b1 {stats.spread_label(ci)})",
                 [stats.format_mean(m, s) for m, s in zip(summary["mean"], summary["spread"])])
    trained_here = direct.set_index(["algorithm", "variant", "n_agents"])
    shown[f"trained at N played: {what}"] = [
        stats.format_mean(*trained_here.loc[key, ["mean", "spread"]])
        if key in trained_here.index else ""
        for key in zip(summary["algorithm"], summary["variant"], summary["n_played"])]
    files = ", ".join(f"`{path}/{runfiles.ZERO_SHOT_DIR}/{runfiles.ZERO_SHOT_CSV}`"
                      for path in sorted(inputs.zero_shot["run"].unique()))
    return Section(
        "transfer", "Zero-shot transfer across N",
        "Each policy trained at one N played greedily at other N against the random team, "
        "without training (its shared network kept, its slot embeddings grown or cut: "
        "`marlscale evaluate SWEEP_DIR --n-agents ...`, from " + files + "). One line per "
        "algorithm and N it was trained at: the mean over seeds of each trial's mean return "
        "per agent over its episodes; the 95% CI is the t-interval over seeds (over the "
        "episodes where one seed). The random policy played the same episodes (dashed grey). "
        f"A star marks the {what} of the runs' trials trained at that N directly. **Transfer "
        "ratio**: the return at N over the return at the N trained at; **gain over random "
        "kept**: (return - random level) at N over the same at the N trained at (n/a where "
        "the policy was not above random there).", {"transfer": shown})


def _no_greedy(inputs: Inputs) -> str:
    return (f"the runs ({', '.join(_without_greedy(inputs.runs))}) hold no greedy "
            "evaluations; the sample-complexity view needs training.eval_interval > 0")


def _without_greedy(runs: Runs) -> list[str]:
    """The run dirs none of whose trials logged a greedy evaluation."""
    held = runs.curves.dropna(subset=["greedy_return"])["run"].unique()
    return [str(path) for path in runs.paths if str(path) not in held]


# ---- the registry ---------------------------------------------------------------------------
def _no_learning_curves(inputs: Inputs) -> str:
    return ("no trial against the random team has finished an episode"
            + (" (the runs are head-to-head: see Head-to-head training)"
               if len(inputs.duel) and not len(inputs.fixed) else ""))


def _sizes(inputs: Inputs) -> list[int]:
    """The N of the trials against the random team."""
    return sorted(inputs.fixed["n_agents"].unique())


def _no_ablations(inputs: Inputs) -> str:
    ablations = _ablations(inputs)
    held = (f"the variants ({', '.join(sorted(ablations.unique()))}) hold none named"
            if ablations.nunique() > 1 else "no sweep with `variants` and one named")
    return f"{held} '{REFERENCE_ABLATION}' to compare the others with"


@dataclass(frozen=True)
class SectionSpec:
    """One section of the report, declared: when it applies (else why it is skipped) and how
    it is built. Adding a figure: its builder and one entry in SECTIONS."""

    label: str
    """How 'Skipped figures' names it."""
    applies: Callable[[Inputs], Any]
    """True where the runs allow it."""
    skipped: str | Callable[[Inputs], str]
    """Why the runs do not allow it (the reason, or a function of the inputs giving it)."""
    build: Callable[[Inputs], Section]
    """Draws its figure into `Inputs.out` and returns its tables."""

    def skip_reason(self, inputs: Inputs) -> str | None:
        """None where the section applies, else 'label: why not'."""
        if self.applies(inputs):
            return None
        return f"{self.label}: {self.skipped(inputs) if callable(self.skipped) else self.skipped}"


SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec("learning curves",
                applies=lambda i: len(i.fixed) and i.curves["train_return"].notna().any(),
                skipped=_no_learning_curves,
                build=lambda i: _curve_section(i, i.fixed, "train_return")),
    SectionSpec("greedy evaluation curves",
                applies=lambda i: _most_values(i.curves, "greedy_return") >= 2,
                skipped="the trials hold fewer than two greedy evaluations each (set "
                        "training.eval_interval)",
                build=lambda i: _curve_section(i, i.fixed, "greedy_return")),
    SectionSpec("greedy return of the trained agents",
                applies=lambda i: _most_values(i.curves.merge(_staged(i)[["run", "trial"]]),
                                               "active_greedy_return") >= 2,
                skipped="no incremental-learning trial holds two greedy evaluations of it",
                build=lambda i: _curve_section(i, _staged(i), "active_greedy_return")),
    SectionSpec("scaling", applies=lambda i: len(_sizes(i)) >= 2,
                skipped=lambda i: "needs two or more N against the random team; the runs hold "
                                  f"N = {', '.join(map(str, _sizes(i))) or 'none'}",
                build=_scaling_section),
    SectionSpec("probability of improvement", applies=lambda i: len(i.improvement),
                skipped="no N at which two or more algorithms were run against the random "
                        "team",
                build=_improvement_section),
    SectionSpec("sample complexity",
                applies=lambda i: _most_values(i.curves, "greedy_return") >= 2,
                skipped=_no_greedy, build=_steps_section),
    SectionSpec("frontier against budget",
                applies=lambda i: _most_values(i.curves, "greedy_return") >= 2
                and len(_sizes(i)) >= 2,
                skipped=lambda i: _no_greedy(i) if _most_values(i.curves, "greedy_return") < 2
                else "needs two or more N against the random team",
                build=_budget_section),
    SectionSpec("transfer", applies=lambda i: len(i.zero_shot),
                skipped="no zero-shot table in the sweeps (write one with `marlscale evaluate "
                        f"SWEEP_DIR --n-agents N,N,...`: SWEEP_DIR/{runfiles.ZERO_SHOT_DIR}/"
                        f"{runfiles.ZERO_SHOT_CSV})",
                build=_transfer_section),
    SectionSpec("reward modes", applies=lambda i: len(_reward_mode_trials(i)),
                skipped="no algorithm was run with both team and individual reward",
                build=_reward_section),
    SectionSpec("incremental learning", applies=lambda i: len(_incremental_trials(i)),
                skipped="no algorithm and N was run both with and without incremental "
                        "learning",
                build=_incremental_section),
    SectionSpec("ablations",
                applies=lambda i: _ablations(i).nunique() > 1
                and (_ablations(i) == REFERENCE_ABLATION).any(),
                skipped=_no_ablations, build=_ablation_section),
    SectionSpec("league", applies=lambda i: "league" in i.runs.league,
                skipped="no `marlscale league` run with its league.csv (cross-play not run "
                        "yet)",
                build=_league_section),
    SectionSpec("league probability of improvement",
                applies=lambda i: "episodes" in i.runs.league,
                skipped="no `marlscale league` run with its episodes.csv (cross-play not run "
                        "yet)",
                build=_league_improvement_section),
    SectionSpec("head-to-head",
                applies=lambda i: len(i.duel) and i.runs.curves.merge(
                    i.duel[["run", "trial"]])["reward_difference"].notna().any(),
                skipped="no trial against a learning opponent", build=_head_to_head_section),
    SectionSpec("throughput", applies=lambda i: len(i.runnable),
                skipped="no trial has run an env step yet", build=_throughput_section),
)
"""The report's sections, in report.md's order."""


def sections(runs: Runs, ci: str, out: Path, last: int, thresholds: tuple[float, ...] = (),
             budget_steps: float | None = None,
             aggregate_by: str = "mean") -> tuple[list[Section], list[str]]:
    """Every figure the runs allow (drawn into `out`), and why each other one was skipped."""
    inputs = Inputs(runs, ci, out, last, tuple(thresholds), budget_steps, aggregate_by)
    drawn: list[Section] = []
    skipped: list[str] = []
    for spec in SECTIONS:
        reason = spec.skip_reason(inputs)
        if reason is None:
            drawn.append(spec.build(inputs))
        else:
            skipped.append(reason)
    return drawn, skipped


# ---- report.md ------------------------------------------------------------------------------
def _dates(runs: Runs) -> str:
    dates = pd.to_datetime(runs.curves["date"].dropna(), format="%Y-%m-%d_%H-%M-%S",
                           errors="coerce").dropna()
    if not len(dates):
        return "not recorded"
    return f"{dates.min():%Y-%m-%d %H:%M} to {dates.max():%Y-%m-%d %H:%M} (local time of the run)"


def _provenance_lines(runs: Runs) -> list[str]:
    lines = []
    recorded = {p["run"]: p for p in runs.provenance}
    for path in runs.paths:
        found = recorded.get(str(path))
        if found is None:
            hosts = sorted(runs.curves.loc[runs.curves["run"] == str(path), "hostname"]
                           .dropna().unique())
            lines.append(f"- `{path}` ({runs.kinds[str(path)]}): commit not recorded (no "
                         f"provenance.json); hosts {', '.join(hosts) or 'not recorded'}")
            continue
        machine = found.get("machine", {})
        gpus = ", ".join(machine.get("gpus") or []) or "no GPU"
        dirty = " with uncommitted changes" if found.get("dirty") else ""
        lines.append(f"- `{path}` ({runs.kinds[str(path)]}): commit `{found.get('commit')}`"
                     f"{dirty}; {machine.get('hostname')}: {machine.get('cpus')} x "
                     f"{machine.get('cpu')}, {gpus}; started {found.get('started')}"
                     + (f", resumed {len(found['resumed'])} time(s)" if found.get("resumed")
                        else ""))
    return lines


def _flag(value: float) -> str:
    """A flag's number as written back into report.md: short, and exact (it is read back)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def write_markdown(runs: Runs, drawn: list[Section], skipped: list[str], ci: str,
                   last: int, path: Path, thresholds: tuple[float, ...] = (),
                   budget_steps: float | None = None, aggregate_by: str = "mean") -> None:
    me = provenance.commit()
    trials = runs.trials
    learners = (set(trials["algorithm"]) | set(trials["opponent_algorithm"])) - {"random"}
    lines = [
        f"# Report: {', '.join(runs.names.values())}", "",
        f"Game: **{runs.game}**. {len(trials)} trials "
        f"({', '.join(sorted(learners))}; N = "
        f"{', '.join(map(str, sorted(trials['n_agents'].unique())))}; seeds "
        f"{', '.join(map(str, sorted(trials['seed'].unique())))}).", "",
        "## Runs", *_provenance_lines(runs),
        f"- dates: {_dates(runs)}",
        f"- report made {provenance.now()} by `marlscale report` at commit `{me['commit']}`",
        "",
        "## Definitions",
        "- **Return per agent**: an episode's team return divided by the team's N (the "
        "paper's normalisation).",
        "- **epsilon-greedy** curves come from training episodes (exploration on); "
        "**greedy** ones from evaluation episodes in a separate env (exploration off). Each "
        "figure says which it shows.",
        f"- **\u00b1**: {stats.spread_label(ci, short=False)}; no spread is shown with one "
        "seed.",
        f"- **Final**: the mean of a trial's last {last} values of the metric shown "
        "(greedy evaluations where the figure shows greedy returns), then over seeds.",
        "- **Budget**: the env steps each trial was to run (its stop).",
    ]
    if aggregate_by == "iqm":
        lines.append("- **IQM** (`--aggregate iqm`): finals, the scaling curve and league "
                     "ratings show the interquartile mean over seeds (the mean of the middle "
                     "50%) with its 95% percentile interval from a stratified bootstrap over "
                     f"seeds ({stats.RESAMPLES:,} resamples, seed {stats.BOOTSTRAP_SEED}); "
                     "the other sections show the mean.")
    if budget_steps is not None:
        lines.append(f"- **Read at a budget**: the scaling section reads each trial at "
                     f"{budget_steps:,.0f} env steps (`--budget {_flag(budget_steps)}`).")
    if thresholds:
        lines.append("- **Thresholds given**: `"
                     + " ".join(f"--threshold {_flag(value)}" for value in thresholds) + "`.")
    lines.append("")
    for section in drawn:
        lines += [f"## {section.title}", "", section.text, "",
                  f"![{section.title}]({section.name}.png)", ""]
        for name, table in section.tables.items():
            lines += [_markdown(table), "", f"([{name}.csv]({name}.csv))", ""]
    lines += ["## Skipped figures", ""]
    lines += [f"- {reason}" for reason in skipped] or ["- none"]
    lines += ["", "## Missing or failed trials", ""]
    if runs.missing:
        lines.append(_markdown(pd.DataFrame(runs.missing)))
    else:
        lines.append("None: every trial of every grid is present and complete.")
    path.write_text("\n".join(lines) + "\n")


# ---- the command ----------------------------------------------------------------------------
def default_out(paths: list[str | os.PathLike]) -> Path:
    return Path(paths[0]).expanduser() / runfiles.REPORT_DIR


def _check_iqm_seeds(runs: Runs) -> None:
    """--aggregate iqm: every configuration that ran has at least stats.MIN_IQM_SEEDS seeds."""
    trials = aggregate.with_variants(runs)
    by = ["algorithm", "opponent_algorithm", "variant", "n_agents"]
    few = aggregate.too_few_for_iqm(trials[trials["env_steps"] > 0], by, "seed")
    if len(few):
        named = "; ".join(f"{r.algorithm} vs {r.opponent_algorithm}, N = {r.n_agents}"
                          + (f", {r.variant}" if r.variant else "") + f": {r.n}"
                          for r in few.head(3).itertuples())
        raise ValueError(
            f"--aggregate iqm needs at least {stats.MIN_IQM_SEEDS} seeds of every "
            f"configuration (with fewer the IQM is the mean), and {len(few)} have fewer "
            f"({named}{'; ...' if len(few) > 3 else ''}); allowed: --aggregate mean, or runs "
            f"with {stats.MIN_IQM_SEEDS}+ seeds each")


def check_reading(thresholds: tuple[float, ...], budget_steps: float | None,
                  runs: Runs | None = None, aggregate_by: str = "mean") -> None:
    """--threshold, --budget and --aggregate: finite, a budget > 0, mean or iqm; with the
    runs loaded, runs that hold greedy evaluations and a budget within the longest one, and
    for an IQM at least stats.MIN_IQM_SEEDS seeds of every configuration it is read over.
    Raised before anything is written."""
    if aggregate_by not in stats.AGGREGATES:
        raise ValueError(f"--aggregate {aggregate_by!r} is invalid; allowed: "
                         f"{', '.join(stats.AGGREGATES)}")
    if runs is not None and aggregate_by == "iqm":
        _check_iqm_seeds(runs)
    for value in thresholds:
        if not math.isfinite(value):
            raise ValueError(f"--threshold {value} is invalid; allowed: a finite number (a "
                             "greedy return per agent)")
    if budget_steps is not None and not (math.isfinite(budget_steps) and budget_steps > 0):
        raise ValueError(f"--budget {budget_steps:g} is invalid; allowed: a finite number of "
                         "env steps > 0")
    if runs is None or not (thresholds or budget_steps is not None):
        return
    flag = "--budget" if budget_steps is not None else "--threshold"
    against_random = runs.trials[(runs.trials["opponent_algorithm"] == "random")
                                 & (runs.trials["env_steps"] > 0)]
    greedy = runs.curves.merge(against_random[["run", "trial"]]).dropna(
        subset=["greedy_return"])
    if not len(greedy):
        raise ValueError(f"{flag} needs greedy evaluations, and the runs "
                         f"({', '.join(str(p) for p in runs.paths)}) hold none against the "
                         "random team; the sample-complexity view needs "
                         "training.eval_interval > 0")
    longest = runs.curves.merge(against_random[["run", "trial"]])["env_steps"].max()
    if budget_steps is not None and budget_steps > longest:
        raise ValueError(f"--budget {budget_steps:g} is beyond every run's last step (the "
                         f"longest ran {longest:,.0f} env steps); allowed: a number of env "
                         f"steps in (0, {longest:.0f}]")


def build(paths: list[str | os.PathLike], out: str | os.PathLike | None = None, *,
          ci: str = "std", last: int = aggregate.FINAL_EVALUATIONS, wandb: bool = False,
          thresholds: tuple[float, ...] = (), budget_steps: float | None = None,
          aggregate_by: str = "mean", log=print) -> dict[str, Any]:
    """Load the runs, draw every figure they allow into `out`, write report.md; returns
    {report, figures, skipped, missing} (and the W&B run's folder with `wandb`).
    `thresholds` (--threshold), `budget_steps` (--budget) and `aggregate_by` (--aggregate):
    see `Inputs`."""
    if ci not in stats.SPREADS:
        raise ValueError(f"--ci {ci!r} is invalid; allowed: {', '.join(stats.SPREADS)}")
    thresholds = tuple(float(value) for value in thresholds)
    check_reading(thresholds, budget_steps, aggregate_by=aggregate_by)
    if any(storage.is_uri(path) for path in [*paths, out]):
        return _build_from_storage(paths, out, ci=ci, last=last, wandb=wandb, log=log,
                                   thresholds=thresholds, budget_steps=budget_steps,
                                   aggregate_by=aggregate_by)
    out = check_out(out if out is not None else default_out(paths))
    runs = load(*paths)
    check_reading(thresholds, budget_steps, runs, aggregate_by)
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    except OSError as error:
        raise ValueError(f"--out {str(out)!r} cannot be written ({error.strerror or error}); "
                         "expected: a folder that can be created and written") from None
    try:
        drawn, skipped = sections(runs, ci, staging, last, thresholds, budget_steps,
                                  aggregate_by)
        for section in drawn:
            for name, table in section.tables.items():
                table.to_csv(staging / f"{name}.csv", index=False)
        write_markdown(runs, drawn, skipped, ci, last, staging / runfiles.REPORT_MD,
                       thresholds, budget_steps, aggregate_by)
        written = []
        for file in sorted(staging.iterdir()):
            os.replace(file, out / file.name)
            written.append(out / file.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary = {"report": str(out / runfiles.REPORT_MD),
               "figures": [str(p) for p in written if p.suffix == ".png"],
               "skipped": skipped, "missing": runs.missing}
    if wandb:
        summary["wandb"] = log_to_wandb(out, runs, drawn)
    log(f"report: {out / runfiles.REPORT_MD} ({len(summary['figures'])} figures)")
    return summary


def _build_from_storage(paths, out, **kwargs) -> dict[str, Any]:
    """`build` for runs on object storage: from local copies of their small files (see
    marlscale/storage.py); a report whose --out (default: the first run's report/) is a URI is
    drawn locally, then uploaded there."""
    with tempfile.TemporaryDirectory(prefix="marlscale-report-") as mirror:
        local = []
        for number, path in enumerate(paths):
            if storage.is_uri(path):
                name = str(path).rstrip("/").rsplit("/", 1)[-1]
                path = storage.fetch(str(path), Path(mirror, f"{number}", name), "RUN_DIR")
            local.append(path)
        first = str(paths[0]).rstrip("/")
        target = out if out is not None else (
            f"{first}/{runfiles.REPORT_DIR}" if storage.is_uri(paths[0]) else None)
        if not storage.is_uri(target):
            return build(local, target, **kwargs)
        target = str(target).rstrip("/")
        storage.filesystem(target, "--out")
        drawn = Path(mirror, "out")
        summary = build(local, drawn, **kwargs)
        storage.push(drawn, target, [p.name for p in drawn.iterdir()])
        summary["report"] = f"{target}/{runfiles.REPORT_MD}"
        summary["figures"] = [f"{target}/{Path(p).name}" for p in summary["figures"]]
        return summary


def log_to_wandb(out: Path, runs: Runs, drawn: list[Section]) -> str:
    """Log every figure (as an image) and table to one W&B run; online only if logged in."""
    import wandb

    from marlscale.wandb_logging import DEFAULT_PROJECT, resolve_mode

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run = wandb.init(project=DEFAULT_PROJECT, mode=resolve_mode("auto"), dir=str(out),
                     job_type="report", name=f"report-{'+'.join(runs.names.values())}"
                     f"-{stamp}", config={"runs": [str(p) for p in runs.paths],
                                          "game": runs.game})
    try:
        for section in drawn:
            run.log({f"figures/{section.name}": wandb.Image(str(out / f"{section.name}.png"))})
            for name in section.tables:
                run.log({f"tables/{name}": wandb.Table(
                    dataframe=pd.read_csv(out / f"{name}.csv", dtype=str,
                                          keep_default_na=False))})
        with open(out / runfiles.REPORT_MD) as handle:
            run.log({"report": wandb.Html(f"<pre>{handle.read()}</pre>")})
    finally:
        run.finish()
    return str(Path(run.dir).parent)
