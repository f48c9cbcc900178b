"""Every statistic of the platform, and how an estimate is written: evaluation, the league
and reports all use these.

Intervals
    `t_interval`          the mean of values with its 95% Student-t interval (evaluation's
                          episodes, a league cell's episodes)
    `half_width`          a report's spread of a mean over seeds: the std (`std`, the paper's)
                          or the 95% t-interval's half-width (`95`); `spread_label` says which
    `welch_interval`      the 95% Welch interval of a difference of two means (ablations)
    `widest_interval_over_groups`  the t-interval over independent replicates (a league
                          cell's training seeds), each group's mean one value
    `ci_columns`          which of a league table's two intervals to read

Formatting: `format_number`, `format_interval`, `format_mean` ('+1.23 ± 0.45',
'+1.23 [+0.50, +1.96]'); every table and printout writes its estimates with these.

Bootstrap statistics (Agarwal et al. 2021, "rliable"), each with a 95% percentile interval
from a stratified bootstrap (`scipy.stats.bootstrap`: every stratum, e.g. the seeds of one N or
of one algorithm, resampled on its own), seeded so a report redraws the same numbers:
    `stratified_interval`  the interval of any statistic of several strata (the growth
                          exponent of reports/budget.py uses it)
    `iqm`, `iqm_interval`  the interquartile mean (the mean of the middle 50%, scipy's
                          trim_mean at 25%) and its interval
    `probability_of_improvement`  P(X > Y) over pairs of runs, ties counting one half, and its
                          interval; `mann_whitney_p` the exact test of the same comparison
    `clustered_improvement`  P(row beats column) over head-to-head episodes, its interval
                          from a two-way cluster bootstrap over the two sides' training seeds
    `AGGREGATES`, `MIN_IQM_SEEDS`  what a report's finals, scaling curves and ratings
                          show over seeds: the mean, or the IQM (4 seeds or more)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

LEVEL = 0.95
"""The confidence level of every interval (two-sided)."""
SPREADS = ("std", "95")
"""What a report's ± shows: the std over seeds, or the 95% t-interval's half-width."""
EPISODE_CI = ("ci95_low", "ci95_high")
"""A league table's interval columns over episodes."""
SEED_CI = ("seed_ci95_low", "seed_ci95_high")
"""A league table's interval columns over training seeds."""


def _t(df: Any) -> Any:
    """The two-sided Student-t quantile at LEVEL with `df` degrees of freedom."""
    return scipy_stats.t.ppf(0.5 + LEVEL / 2, df)


# ---- intervals --------------------------------------------------------------------------------
def t_interval(values: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """{mean, std, ci95: [low, high], n} of `values`, the interval the 95% Student-t one of the
    mean; with one value std is 0.0 and ci95 None (no interval from one value)."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    if n < 2:
        return {"mean": mean, "std": std, "ci95": None, "n": n}
    half = float(_t(n - 1) * std / math.sqrt(n))
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": n}


def half_width(std: pd.Series, n: pd.Series, spread: str) -> pd.Series:
    """The ± of means over n seeds: the std (`spread` 'std'), or the 95% t-interval's
    half-width ('95'); NaN where n is 1, since one seed has no spread."""
    std = std.where(n > 1)
    if spread == "std":
        return std
    t = pd.Series(_t(np.maximum(n - 1, 1)), index=n.index)
    return t * std / np.sqrt(n)


def spread_label(spread: str, short: bool = True) -> str:
    """What ± means: short for figure titles, long for report.md's definitions."""
    if spread == "std":
        return "std over seeds"
    return "95% CI over seeds" if short else "95% CI of the mean over seeds (Student t)"


def welch_interval(m1: float, s1: float, n1: int, m0: float, s0: float,
                   n0: int) -> tuple[float, float]:
    """The 95% Welch interval of m1 - m0, from each group's mean, std and count (unequal
    variances). NaN where a group has one value; two constant groups give a zero-width
    interval at the difference."""
    if n1 < 2 or n0 < 2:
        return np.nan, np.nan
    v1, v0 = s1 ** 2 / n1, s0 ** 2 / n0
    se = np.sqrt(v1 + v0)
    if se == 0:
        return m1 - m0, m1 - m0
    df = (v1 + v0) ** 2 / (v1 ** 2 / (n1 - 1) + v0 ** 2 / (n0 - 1))
    half = _t(df) * se
    return m1 - m0 - half, m1 - m0 + half


def widest_interval_over_groups(frame: pd.DataFrame, value: str,
                                groupings: Sequence[str]) -> tuple[int, float, float]:
    """(groups, low, high): the 95% t-interval of the mean of `value` over groups, each group's
    mean one value, grouped by each column of `groupings` that `frame` holds values of; the
    widest of these intervals (the first of equally wide ones). A league cell's episodes can be
    grouped by the row policies' training seeds or by the column policies', and the wider one
    makes a cell and its mirror get the same interval. No interval (NaN, with that grouping's
    count) as soon as one grouping has fewer than 2 groups; (0, NaN, NaN) where none applies."""
    widest = (0, math.nan, math.nan)
    for column in groupings:
        if column not in frame or frame[column].isna().all():
            continue
        means = frame.groupby(column)[value].mean()
        ci = t_interval(means.to_numpy())["ci95"]
        if ci is None:
            return len(means), math.nan, math.nan
        _, low, high = widest
        if math.isnan(low) or ci[1] - ci[0] > high - low:
            widest = (len(means), ci[0], ci[1])
    return widest


def ci_columns(table: pd.DataFrame) -> tuple[str, str, str]:
    """The interval a league or ratings table is best read with: over training seeds where it
    has one (policies trained with different seeds are the independent replicates), else over
    episodes (one seed). Returns the low and high columns and what the interval is over."""
    if SEED_CI[0] in table.columns and np.isfinite(table[SEED_CI[0]]).any():
        return SEED_CI[0], SEED_CI[1], "seeds"
    return EPISODE_CI[0], EPISODE_CI[1], "episodes"


# ---- bootstrap statistics ---------------------------------------------------------------------
RESAMPLES = 4000
"""Bootstrap resamples of every bootstrap interval."""
BOOTSTRAP_SEED = 0
"""The seed of every bootstrap: the same runs give the same interval."""


def stratified_interval(strata: Sequence[Sequence[float] | np.ndarray],
                        statistic) -> tuple[float, float]:
    """The 95% percentile-bootstrap interval of `statistic(*strata)`, each stratum resampled
    on its own (with replacement, its size kept). A stratum of one value is held fixed (there
    is nothing to resample); NaN, NaN where no stratum has two values.

    `statistic` is vectorized: each stratum comes as an array whose last axis holds its values
    (the leading axes, if any, index resamples), and it reduces that last axis. All resamples
    are drawn and evaluated at once (`scipy.stats.bootstrap(vectorized=True)`): the same
    resamples as one call per resample (tests/unit/test_stats.py), without 4,000 Python calls
    per interval (docs/benchmarks.md: a report in 0.60 of the time)."""
    strata = [np.asarray(values, dtype=float) for values in strata]
    moving = [i for i, values in enumerate(strata) if len(values) >= 2]
    if not moving:
        return math.nan, math.nan

    def resampled(*samples, axis=-1) -> np.ndarray:
        batch = samples[0].shape[:-1]
        values = [np.broadcast_to(v, (*batch, len(v))) for v in strata]
        for i, sample in zip(moving, samples):
            values[i] = sample
        return statistic(*values)

    result = scipy_stats.bootstrap([strata[i] for i in moving], resampled, vectorized=True,
                                   method="percentile", n_resamples=RESAMPLES,
                                   confidence_level=LEVEL,
                                   rng=np.random.default_rng(BOOTSTRAP_SEED))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def iqm(values: Sequence[float] | np.ndarray, axis: int | None = None) -> Any:
    """The interquartile mean: the mean of the middle 50% of the values (25% trimmed from
    each end, as rliable computes it); a float, or with `axis` an array reduced over it (a
    batch of bootstrap resamples)."""
    trimmed = scipy_stats.trim_mean(np.asarray(values, dtype=float), 0.25, axis=axis)
    return float(trimmed) if axis is None else trimmed


def iqm_interval(strata: Sequence[Sequence[float] | np.ndarray]) -> tuple[float, float, float]:
    """(IQM, low, high): the IQM of all strata's values together, and its stratified bootstrap
    interval (e.g. one stratum per N, each N's seeds resampled)."""
    def pooled(*values: np.ndarray) -> np.ndarray:
        return iqm(np.concatenate(values, axis=-1), axis=-1)

    return (float(pooled(*[np.asarray(v, dtype=float) for v in strata])),
            *stratified_interval(strata, pooled))


def clustered_improvement(scores: Sequence[float] | np.ndarray, rows: Sequence[Any],
                          columns: Sequence[Any]) -> tuple[float, float, float]:
    """(P, low, high) of head-to-head episodes: P is the mean of `scores` (1 where the row's
    side did better, 0.5 a tie, 0 worse), and the interval a two-way cluster bootstrap: each
    resample draws the row's clusters (`rows`, e.g. its training seeds) and, independently,
    the column's (`columns`) with replacement, and weighs every episode by how often both of
    its clusters were drawn. Episodes of one policy are not independent replicates; its
    training seeds are. A side with one cluster is held fixed; NaN, NaN where neither side
    has two."""
    scores = np.asarray(scores, dtype=float)
    _, row = np.unique(np.asarray([str(v) for v in rows]), return_inverse=True)
    _, column = np.unique(np.asarray([str(v) for v in columns]), return_inverse=True)
    shape = (row.max() + 1, column.max() + 1)
    total, count = np.zeros(shape), np.zeros(shape)
    np.add.at(total, (row, column), scores)
    np.add.at(count, (row, column), 1.0)
    p = float(scores.mean())
    if max(shape) < 2:
        return p, math.nan, math.nan
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    draws = [rng.multinomial(size, np.full(size, 1.0 / size), size=RESAMPLES)
             for size in shape]  # how often each cluster is drawn, per resample
    weight = np.einsum("sr,rc,sc->s", draws[0], count, draws[1])
    resampled = np.einsum("sr,rc,sc->s", draws[0], total, draws[1])[weight > 0] / weight[
        weight > 0]
    low, high = np.percentile(resampled, [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    return p, float(low), float(high)


AGGREGATES = ("mean", "iqm")
"""What a report's finals, scaling curves and ratings show over seeds: the mean (with the
`SPREADS` spread) or the interquartile mean (with its stratified-bootstrap 95% interval)."""
MIN_IQM_SEEDS = 4
"""The fewest seeds an IQM is computed over: with 3 or fewer, trimming a quarter from each end
removes nothing (scipy's trim_mean cuts int(n / 4) values), so the IQM would be the mean under
another name. A report refuses `--aggregate iqm` on fewer (docs/reports.md)."""


def probability_of_improvement(x: Sequence[float] | np.ndarray,
                               y: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    """(P, low, high): P(X > Y), the chance that a run of X beats a run of Y, over every
    pair (x_i, y_j), a tie counting one half (the Mann-Whitney U statistic over n m), with
    its bootstrap interval resampling x's runs and y's runs separately."""
    def chance(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # U / (n m), no p-value
        pairs = a[..., :, None], b[..., None, :]
        return ((pairs[0] > pairs[1]).mean((-2, -1))
                + 0.5 * (pairs[0] == pairs[1]).mean((-2, -1)))

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    return (float(chance(x, y)), *stratified_interval([x, y], chance))


def mann_whitney_p(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """The two-sided p-value of the Mann-Whitney U test of x against y (scipy's, exact where
    the samples are small and tie-free). It puts a bootstrap interval of P(X > Y) over a few
    seeds in proportion: with 3 seeds a side the smallest p is 0.1, however the seeds fall,
    while the percentile bootstrap's interval shrinks to a point at complete separation."""
    return float(scipy_stats.mannwhitneyu(np.asarray(x, dtype=float),
                                          np.asarray(y, dtype=float),
                                          alternative="two-sided").pvalue)


# ---- formatting -------------------------------------------------------------------------------
def format_number(value: Any, digits: int = 2, signed: bool = True,
                  grouped: bool = False) -> str:
    """'+1.23' ('1,234' with `grouped` and no sign, as rates are shown); '' where missing."""
    if value is None or pd.isna(value):
        return ""
    return f"{value:{'+' if signed else ''}{',' if grouped else ''}.{digits}f}"


def format_interval(low: Any, high: Any, digits: int = 2, signed: bool = True) -> str:
    """'[+0.50, +1.96]' ('[0.50, 1.96]' unsigned, as probabilities are shown); 'n/a' where
    there is no interval."""
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return "n/a"
    return f"[{format_number(low, digits, signed)}, {format_number(high, digits, signed)}]"


def format_mean(mean: Any, spread: Any = None, low: Any = None, high: Any = None,
                digits: int = 2, signed: bool = True, grouped: bool = False) -> str:
    """An estimate as every table writes it: '+1.23 ± 0.45' with a `spread`, '+1.23 [+0.50,
    +1.96]' with an interval (`low`, `high`); the mean alone where they are missing (one seed),
    'n/a' where the mean is. `signed`, `grouped`: as in `format_number`."""
    if mean is None or pd.isna(mean):
        return "n/a"
    text = format_number(mean, digits, signed, grouped)
    if spread is not None and not pd.isna(spread):
        text += f" \u00b1 {format_number(spread, digits, False, grouped)}"
    if low is not None and high is not None and not (pd.isna(low) or pd.isna(high)):
        text += f" {format_interval(low, high, digits, signed)}"
    return text
