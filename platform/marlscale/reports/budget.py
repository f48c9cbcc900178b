"""Budget as an axis: how many env steps a learner needs to reach a return, how that grows
with N, and what a scaling result says at each budget (issue #26).

All of it is read from the greedy evaluation curves the runs log (`training.eval_interval`):

* **steps to threshold**: the first env step at which a trial's greedy return per agent
  reaches a threshold, linearly interpolated between the evaluation below it and the first one
  at or above it. A trial whose first evaluation is already there is placed at that
  evaluation (an upper bound; `at_first_evaluation`). A trial that never reaches it is
  **censored** at its last evaluation: it needs more than that, and is never counted as
  reaching it.
* **growth exponent**: log(steps) = a + alpha log N, fitted by least squares over the
  uncensored trials of one learner, with a 95% percentile-bootstrap interval that resamples
  seeds within each N (stats.stratified_interval, seeded, so a report redraws the same). Censored
  trials are left out and listed: where the largest N are censored, alpha is a lower bound.
* **at a budget B**: a trial's final return at B is the mean of its last LAST greedy
  evaluations at or before B; only trials that ran at least B env steps count at B.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from marlscale import stats

DEFAULT_FRACTIONS = (0.25, 0.5, 0.75)
"""Default thresholds: these fractions of the way from the random level to the best final
return at the smallest N (0.5 is 'halfway')."""
BUDGET_STEPS = (1, 2, 5)
"""Budgets read: 10k, 20k, 50k, 100k, 200k, ... env steps (a 1-2-5 series), up to the
longest run."""
SMALLEST_BUDGET = 10_000
STEPS_KEYS = ["algorithm", "variant", "n_agents"]


@dataclass(frozen=True)
class Threshold:
    """A greedy return per agent to reach, and how it was chosen."""

    value: float
    how: str
    """'given' (--threshold) or e.g. '50% of the way from random to best'."""

    @property
    def label(self) -> str:
        return f"{self.value:+.2f}"


def default_thresholds(finals: pd.DataFrame,
                       fractions: tuple[float, ...] = DEFAULT_FRACTIONS
                       ) -> tuple[list[Threshold], str]:
    """The default thresholds from `finals` (one row per trial: algorithm, variant, n_agents,
    final, random_level), and the sentence that says how they were chosen: fractions of the
    way from the random level at the smallest N to the best (algorithm, variant)'s mean final
    return there."""
    data = finals.dropna(subset=["final"])
    smallest = int(data["n_agents"].min())
    at = data[data["n_agents"] == smallest]
    means = at.groupby(["algorithm", "variant"])["final"].mean()
    best_key = means.idxmax()
    best = float(means.max())
    random = at["random_level"].dropna()
    base, base_what = ((float(random.mean()), f"the random policy's {random.mean():+.2f}")
                       if len(random) else (0.0, "0 (no random level recorded)"))
    who = best_key[0].upper() + (f" ({best_key[1]})" if best_key[1] else "")
    levels = [Threshold(base + f * (best - base), f"{f:.0%} of the way from random to best")
              for f in fractions]
    how = (f"{', '.join(f'{f:.0%}' for f in fractions)} of the way from the random level to "
           f"the best final greedy return at the smallest N (N = {smallest}: from "
           f"{base_what} to {who}'s {best:+.2f} per agent)")
    return levels, how


def crossing(steps: np.ndarray, values: np.ndarray, threshold: float) -> tuple[float, bool]:
    """(env step, at_first_evaluation) where the curve first reaches `threshold`, linearly
    interpolated from the evaluation before; (nan, False) where it never does."""
    reached = np.flatnonzero(values >= threshold)
    if not len(reached):
        return math.nan, False
    i = int(reached[0])
    if i == 0:
        return float(steps[0]), True
    x0, x1, y0, y1 = steps[i - 1], steps[i], values[i - 1], values[i]
    return float(x0 + (threshold - y0) / (y1 - y0) * (x1 - x0)), False


def steps_to_threshold(curves: pd.DataFrame, trials: pd.DataFrame,
                       thresholds: list[Threshold], value: str = "greedy_return"
                       ) -> pd.DataFrame:
    """One row per trial x threshold: steps (nan where censored), censored, censored_at (the
    trial's last evaluation step), at_first_evaluation. `trials` gives each trial's
    algorithm, variant, n_agents and seed."""
    data = curves.dropna(subset=[value]).sort_values("env_steps")
    rows = []
    for trial in trials.to_dict("records"):
        mine = data[(data["run"] == trial["run"]) & (data["trial"] == trial["trial"])]
        if not len(mine):
            continue
        steps = mine["env_steps"].to_numpy(dtype=float)
        values = mine[value].to_numpy(dtype=float)
        for threshold in thresholds:
            at, first = crossing(steps, values, threshold.value)
            rows.append({"run": trial["run"], "trial": trial["trial"],
                         **{k: trial[k] for k in (*STEPS_KEYS, "seed")},
                         "threshold": threshold.value, "steps": at,
                         "censored": math.isnan(at), "censored_at": float(steps[-1]),
                         "at_first_evaluation": first})
    return pd.DataFrame(rows, columns=["run", "trial", *STEPS_KEYS, "seed", "threshold",
                                       "steps", "censored", "censored_at",
                                       "at_first_evaluation"])


def _fit(log_n: np.ndarray, log_steps: np.ndarray) -> tuple[float, float]:
    """(alpha, a) of log steps = a + alpha log N, least squares."""
    alpha, intercept = np.polyfit(log_n, log_steps, 1)
    return float(alpha), float(intercept)


def growth_exponent(points: pd.DataFrame) -> dict:
    """alpha (the slope of log steps on log N) over the uncensored rows of `points` (one
    learner, one threshold), its 95% bootstrap interval over seeds within each N, and what
    was left out. alpha is nan with fewer than two N uncensored; the interval is nan where no
    N has two uncensored seeds to resample."""
    kept = points[~points["censored"]]
    left_out = points[points["censored"]].sort_values(["n_agents", "seed"])
    sizes = sorted(kept["n_agents"].unique())
    out = {"alpha": math.nan, "intercept": math.nan, "low": math.nan, "high": math.nan,
           "points": len(kept),
           "at_first_evaluation": int(kept["at_first_evaluation"].sum()),
           "sizes": ", ".join(str(int(n)) for n in sizes),
           "left_out": "; ".join(f"N={int(r['n_agents'])} seed {r['seed']}"
                                 for r in left_out.to_dict("records")) or "none"}
    if len(sizes) < 2:
        return out
    out["alpha"], out["intercept"] = _fit(np.log(kept["n_agents"].to_numpy(float)),
                                          np.log(kept["steps"].to_numpy(float)))
    log_n = [math.log(n) for n in sizes]
    strata = [np.log(kept.loc[kept["n_agents"] == n, "steps"].to_numpy(float)) for n in sizes]

    xs = np.concatenate([np.full(len(y), x) for x, y in zip(log_n, strata)])

    def slope(*log_steps: np.ndarray) -> np.ndarray:  # one least-squares fit per resample
        ys = np.concatenate(log_steps, axis=-1)
        return np.polyfit(xs, ys.reshape(-1, len(xs)).T, 1)[0].reshape(ys.shape[:-1])

    out["low"], out["high"] = stats.stratified_interval(strata, slope)
    return out


def growth_exponents(steps: pd.DataFrame) -> pd.DataFrame:
    """growth_exponent per (algorithm, variant, threshold)."""
    rows = []
    for (algorithm, variant, threshold), group in steps.groupby(
            ["algorithm", "variant", "threshold"], sort=True):
        rows.append({"algorithm": algorithm, "variant": variant, "threshold": threshold,
                     **growth_exponent(group)})
    return pd.DataFrame(rows)


def final_at(curves: pd.DataFrame, value: str, budget: float, last: int) -> pd.Series:
    """Per trial (run, trial) that ran at least `budget` env steps: the mean of its last
    `last` values of `value` at or before `budget`."""
    reached = curves.groupby(["run", "trial"])["env_steps"].max()
    data = curves.dropna(subset=[value])
    data = data[data["env_steps"] <= budget].sort_values("env_steps")
    finals = data.groupby(["run", "trial"])[value].apply(lambda s: s.tail(last).mean())
    return finals[reached.reindex(finals.index) >= budget]


def budgets(longest: float, given: float | None = None) -> list[int]:
    """The budgets read: 10k, 20k, 50k, ... up to `longest` env steps, with `longest`
    itself and `given` (--budget)."""
    found, scale = [], SMALLEST_BUDGET
    while scale <= longest:
        found += [scale * step for step in BUDGET_STEPS if scale * step <= longest]
        scale *= 10
    found += [int(longest)] + ([int(given)] if given else [])
    return sorted(set(found))
