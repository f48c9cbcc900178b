"""Aggregates over seeds: the numbers every figure and table of a report shows.

Spread (`ci`) is either the standard deviation over seeds (`std`, the paper's) or the
half-width of a two-sided 95% Student-t confidence interval of the mean (`95`), computed in
marlscale/stats.py like every other statistic. Seeds of one configuration
are aligned on env steps (linear interpolation between a seed's own points, never beyond its
first or last one), so runs with different iteration sizes still average correctly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from marlscale import stats
from marlscale.reports.runs import ABLATION, Runs

FINAL_EVALUATIONS = 3
"""'Final' = the mean of a trial's last FINAL_EVALUATIONS greedy evaluations."""
RETURN_KINDS = {
    "greedy_return": "greedy evaluation return per agent",
    "train_return": "\u03b5-greedy training return per agent",
    "active_greedy_return": "greedy return per trained agent",
}


def summarize(frame: pd.DataFrame, by: list[str], value: str, ci: str,
              aggregate: str = "mean") -> pd.DataFrame:
    """mean, spread (see `ci`), n (seeds) of `value` per group of `by`. With `aggregate`
    'iqm', `mean` holds the interquartile mean instead, `low` and `high` its stratified
    bootstrap 95% interval over seeds, and `spread` is NaN (the interval is not symmetric)."""
    grouped = frame.dropna(subset=[value]).groupby(by, dropna=False, sort=True)[value]
    table = grouped.agg(mean="mean", std="std", n="count").reset_index()
    table["spread"] = stats.half_width(table["std"], table["n"], ci)
    if aggregate == "iqm":
        intervals = [stats.iqm_interval([values.to_numpy()]) for _, values in grouped]
        table["mean"], table["low"], table["high"] = (list(column)
                                                      for column in zip(*intervals))
        table["spread"] = np.nan
    return table.drop(columns="std")


def too_few_for_iqm(frame: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """The groups of `by` with fewer than stats.MIN_IQM_SEEDS values of `value` (and their
    count `n`): an IQM over them would be their mean."""
    counts = frame.dropna(subset=[value]).groupby(by, dropna=False, sort=True)[value].count()
    return counts[counts < stats.MIN_IQM_SEEDS].rename("n").reset_index()


def with_variants(runs: Runs, exclude: tuple[str, ...] = ()) -> pd.DataFrame:
    """The trials with a `variant` label: the settings besides algorithm, N, seed (and
    `exclude`, which a figure compares itself) that tell them apart (reward mode, incremental
    learning, any further grid axis); empty if none."""
    trials = runs.trials.copy()
    columns = [c for c in ("reward_mode", "incremental", *runs.extra_axes) if c not in exclude]
    varying = [c for c in columns if trials[c].astype(str).nunique() > 1]
    names = {"reward_mode": lambda v: f"{v} reward",
             "incremental": lambda v: "no incremental" if v == "none" else f"incremental ({v})",
             ABLATION: str}

    def label(row) -> str:
        return ", ".join(names.get(c, lambda v, c=c: f"{c.split('.')[-1]}={v}")(row[c])
                         for c in varying)

    trials["variant"] = trials.apply(label, axis=1) if len(trials) else []
    return trials


def curves_of(runs: Runs, trials: pd.DataFrame) -> pd.DataFrame:
    keep = trials[["run", "trial", "variant"]] if "variant" in trials else trials[["run", "trial"]]
    return runs.curves.merge(keep, on=["run", "trial"])


def seed_curves(curves: pd.DataFrame, value: str, by: list[str], ci: str) -> pd.DataFrame:
    """Per group of `by`: env_steps, mean, spread, n of `value` over the group's trials."""
    out = []
    data = curves.dropna(subset=[value])
    for key, group in data.groupby(by, dropna=False, sort=True):
        wide = group.pivot_table(index="env_steps", columns=["run", "trial"], values=value,
                                 aggfunc="last").sort_index()
        wide = wide.interpolate(method="index", limit_area="inside")
        n = wide.count(axis=1)
        frame = pd.DataFrame({"env_steps": wide.index, "mean": wide.mean(axis=1).to_numpy(),
                              "n": n.to_numpy()})
        frame["spread"] = stats.half_width(wide.std(axis=1), n, ci).to_numpy()
        for column, part in zip(by, key if isinstance(key, tuple) else (key,)):
            frame[column] = part
        out.append(frame)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def final_values(curves: pd.DataFrame, value: str, last: int = FINAL_EVALUATIONS) -> pd.Series:
    """Per trial (run, trial): the mean of its last `last` non-missing values of `value`."""
    data = curves.dropna(subset=[value]).sort_values("env_steps")
    return data.groupby(["run", "trial"])[value].apply(lambda s: s.tail(last).mean())


def with_final(trials: pd.DataFrame, curves: pd.DataFrame, value: str,
               last: int = FINAL_EVALUATIONS) -> pd.DataFrame:
    """The trials with a `final` column: each one's mean of its last `last` values of `value`."""
    table = trials.copy()
    table["final"] = final_values(curves, value, last).reindex(
        pd.MultiIndex.from_frame(trials[["run", "trial"]])).to_numpy()
    return table


def first_values(curves: pd.DataFrame, value: str) -> pd.Series:
    data = curves.dropna(subset=[value]).sort_values("env_steps")
    return data.groupby(["run", "trial"])[value].first()


def return_kind(curves: pd.DataFrame) -> str:
    """greedy_return where the runs hold greedy evaluations, else train_return."""
    return "greedy_return" if curves["greedy_return"].notna().any() else "train_return"


def per_trial(runs: Runs, trials: pd.DataFrame) -> pd.DataFrame:
    """Trials with `random_level` and end-to-end throughput columns."""
    curves = runs.curves
    index = pd.MultiIndex.from_frame(trials[["run", "trial"]])
    table = trials.copy()
    table["random_level"] = first_values(curves, "random_return").reindex(index).to_numpy()
    last = curves.sort_values("env_steps").groupby(["run", "trial"]).last()
    wall = last["wall_s"].fillna(last["time_total_s"]).reindex(index).to_numpy()
    table["env_steps_per_s"] = table["env_steps"].to_numpy() / wall
    table["agent_steps_per_s"] = table["env_steps_per_s"] * table["learning_agents"]
    sampling = curves.groupby(["run", "trial"])["sampling_env_steps_per_s"].mean()
    table["sampling_env_steps_per_s"] = sampling.reindex(index).to_numpy()
    return table


def scaling(table: pd.DataFrame, ci: str, aggregate: str = "mean") -> pd.DataFrame:
    """Final return per (algorithm, variant, N) over seeds, beside the random level at N, with
    `low`: the lower end of the mean's 95% t-interval (the mean itself with one seed), which
    the frontier uses whatever spread the report shows; with `aggregate` 'iqm', the IQM and
    its bootstrap interval (`low`, `high`) instead (see `summarize`)."""
    keys = ["algorithm", "variant", "n_agents"]
    summary = summarize(table, keys, "final", ci, aggregate)
    if aggregate == "iqm":
        low = summary.set_index(keys)["low"]
        summary = summary.drop(columns="low")
    else:
        low = summarize(table, keys, "final", "95").set_index(keys)
        low = (low["mean"] - low["spread"].fillna(0.0)).rename("low")
    budget = table.groupby(keys)["budget_env_steps"].max()
    reached = table.groupby(keys)["env_steps"].mean()
    random = table.groupby("n_agents")["random_level"].mean()
    summary = summary.join(budget, on=keys).join(reached.rename("mean_env_steps"), on=keys)
    summary = summary.join(low, on=keys)
    summary["random_level"] = summary["n_agents"].map(random)
    return summary


def frontiers(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (algorithm, variant): the largest N whose mean final return is above the random
    level (where recorded), the largest N whose return is clearly above 0 (the lower end of
    its 95% interval over seeds, `low`, is; the mean where no `low` is given), and the
    frontier: the largest N up to which the return stays above both at every N run. A line
    that has collapsed to a mean of +0.05 +- 0.1 is at 0, not above it."""
    rows = []
    for (algorithm, variant), group in summary.groupby(["algorithm", "variant"], sort=True):
        group = group.sort_values("n_agents")
        low = group["low"] if "low" in group else group["mean"]
        above_random = group["random_level"].isna() | (group["mean"] > group["random_level"])
        above_zero = low > 0
        holds = (above_random & above_zero).cummin()  # stays: no N below it fails
        rows.append({"algorithm": algorithm, "variant": variant,
                     "largest_n_above_random": _largest(group, group["mean"]
                                                        > group["random_level"]),
                     "largest_n_above_zero": _largest(group, above_zero),
                     "frontier": _largest(group, holds)})
    return pd.DataFrame(rows)


def _largest(group: pd.DataFrame, mask: pd.Series):
    chosen = group.loc[mask.to_numpy(), "n_agents"]
    return chosen.max() if len(chosen) else None


def effects(table: pd.DataFrame, reference: str) -> pd.DataFrame:
    """One-factor-at-a-time ablations: per (algorithm, variant, N) and ablation, the final
    return (mean, std, n over seeds) and its effect, the difference from the `reference`
    ablation's mean, with the 95% Welch t-interval of that difference (unequal variances;
    a difference of two constant groups has a zero-width interval)."""
    keys = ["algorithm", "variant", "n_agents"]
    finals = (table.dropna(subset=["final"]).groupby([*keys, ABLATION], sort=True)["final"]
              .agg(mean="mean", std="std", n="count").reset_index())
    base = finals[finals[ABLATION] == reference].set_index(keys)
    rows = []
    for record in finals.to_dict("records"):
        key = tuple(record[k] for k in keys)
        row = {**record, "effect": np.nan, "ci95_low": np.nan, "ci95_high": np.nan}
        if key in base.index and record[ABLATION] != reference:
            b = base.loc[key]
            row["effect"] = record["mean"] - b["mean"]
            row["ci95_low"], row["ci95_high"] = stats.welch_interval(
                record["mean"], record["std"], record["n"], b["mean"], b["std"], b["n"])
        rows.append(row)
    return pd.DataFrame(rows)


def throughput(table: pd.DataFrame, ci: str) -> pd.DataFrame:
    """End-to-end env-steps/s and agent-steps/s, and the sampling rate, per (algorithm, N)."""
    parts = [summarize(table, ["algorithm", "n_agents"], column, ci)
             .rename(columns={"mean": column, "spread": f"{column}_spread"})
             .set_index(["algorithm", "n_agents"])
             for column in ("env_steps_per_s", "agent_steps_per_s", "sampling_env_steps_per_s")]
    merged = parts[0].drop(columns="n").join(parts[1].drop(columns="n")).join(parts[2])
    return merged.reset_index()
