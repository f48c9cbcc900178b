"""marlscale/stats.py on hand-computed cases: the t-interval, the spread over seeds, the Welch
interval of a difference, the league's interval over seeds and which interval it is read
with, and how estimates are written."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from marlscale import stats
from scipy import stats as scipy_stats

T_975_DF1 = 12.7062047  # Student-t quantiles at 0.975, from a table
T_975_DF2 = 4.30265273
T_975_DF3 = 3.18244631
T_975_DF4 = 2.77644511


def test_the_t_interval_of_a_mean_by_hand():
    values = [1.0, 2.0, 3.0, 4.0]
    std = math.sqrt((1.5 ** 2 + 0.5 ** 2 + 0.5 ** 2 + 1.5 ** 2) / 3)
    half = T_975_DF3 * std / 2  # sqrt(4) values
    out = stats.t_interval(values)
    assert out["mean"] == 2.5 and out["n"] == 4
    assert out["std"] == pytest.approx(std)
    assert out["ci95"] == pytest.approx([2.5 - half, 2.5 + half], rel=1e-8)


def test_one_value_has_no_interval_and_no_spread():
    assert stats.t_interval(np.array([3.0])) == {"mean": 3.0, "std": 0.0, "ci95": None, "n": 1}


def test_the_spread_over_seeds_is_the_std_or_the_t_half_width_and_none_from_one_seed():
    std, n = pd.Series([1.0, 2.0, 3.0]), pd.Series([5, 2, 1])
    half = stats.half_width(std, n, "95")
    assert half.iloc[0] == pytest.approx(T_975_DF4 * 1.0 / math.sqrt(5), rel=1e-6)
    assert half.iloc[1] == pytest.approx(T_975_DF1 * 2.0 / math.sqrt(2), rel=1e-6)
    assert math.isnan(half.iloc[2])
    spread = stats.half_width(std, n, "std")
    assert list(spread.iloc[:2]) == [1.0, 2.0] and math.isnan(spread.iloc[2])
    assert stats.spread_label("std") == "std over seeds"
    assert stats.spread_label("95") == "95% CI over seeds"
    assert "Student t" in stats.spread_label("95", short=False)


def test_the_welch_interval_of_a_difference_by_hand_and_against_scipy():
    variant, reference = [20.0, 21.0, 22.0], [10.0, 12.0, 14.0]  # variances 1 and 4
    se = math.sqrt(1.0 / 3 + 4.0 / 3)
    df = (5.0 / 3) ** 2 / ((1.0 / 3) ** 2 / 2 + (4.0 / 3) ** 2 / 2)
    assert df == pytest.approx(50 / 17)
    half = scipy_stats.t.ppf(0.975, df) * se
    low, high = stats.welch_interval(21.0, 1.0, 3, 12.0, 2.0, 3)
    assert (low, high) == pytest.approx((9.0 - half, 9.0 + half))
    scipy_ci = scipy_stats.ttest_ind(variant, reference, equal_var=False).confidence_interval()
    assert (low, high) == pytest.approx((scipy_ci.low, scipy_ci.high))


def test_the_welch_interval_of_constant_groups_is_the_difference_and_one_seed_has_none():
    assert stats.welch_interval(5.0, 0.0, 3, 2.0, 0.0, 4) == (3.0, 3.0)
    for one_seed in (stats.welch_interval(5.0, np.nan, 1, 2.0, 1.0, 3),
                     stats.welch_interval(5.0, 1.0, 3, 2.0, np.nan, 1)):
        assert all(math.isnan(v) for v in one_seed)


def episodes(row_seed_means: dict[int, float], column_seeds: int) -> pd.DataFrame:
    """One league cell's episodes: each row seed's value against every column seed."""
    return pd.DataFrame([{"seed": seed, "opponent_seed": other, "value": mean + 0.1 * other}
                         for seed, mean in row_seed_means.items()
                         for other in range(column_seeds)])


def test_the_interval_over_seeds_takes_the_wider_grouping():
    frame = episodes({0: 3.0, 1: -2.0, 2: 0.5}, column_seeds=3)
    row_means = [3.1, -1.9, 0.6]  # each row seed's mean over the column seeds 0, 1, 2
    half = T_975_DF2 * np.std(row_means, ddof=1) / math.sqrt(3)
    seeds, low, high = stats.widest_interval_over_groups(frame, "value",
                                                         ("seed", "opponent_seed"))
    assert seeds == 3
    assert (low, high) == pytest.approx((np.mean(row_means) - half, np.mean(row_means) + half),
                                        rel=1e-6)
    # grouped by the column's seeds alone, the interval is far narrower: not the one taken
    _, narrow_low, narrow_high = stats.widest_interval_over_groups(frame, "value",
                                                                   ("opponent_seed",))
    assert narrow_high - narrow_low < high - low


def test_no_interval_over_seeds_where_a_grouping_has_one_seed_or_none_applies():
    one_row_seed = episodes({0: 1.0}, column_seeds=3)
    seeds, low, high = stats.widest_interval_over_groups(one_row_seed, "value",
                                                         ("seed", "opponent_seed"))
    assert seeds == 1 and math.isnan(low) and math.isnan(high)
    against_random = episodes({0: 1.0, 1: 2.0}, column_seeds=1).assign(opponent_seed=np.nan)
    seeds, low, high = stats.widest_interval_over_groups(against_random, "value",
                                                         ("seed", "opponent_seed"))
    assert seeds == 2 and low < 1.5 < high  # random has no seeds: the row's alone
    assert stats.widest_interval_over_groups(against_random, "value", ("run",))[0] == 0


def test_a_league_table_is_read_with_its_interval_over_seeds_where_it_has_one():
    columns = {"ci95_low": [0.0, 1.0], "ci95_high": [2.0, 3.0]}
    with_seeds = pd.DataFrame({**columns, "seed_ci95_low": [np.nan, 0.5],
                               "seed_ci95_high": [np.nan, 4.0]})
    assert stats.ci_columns(with_seeds) == ("seed_ci95_low", "seed_ci95_high", "seeds")
    one_seed = with_seeds.assign(seed_ci95_low=np.nan, seed_ci95_high=np.nan)
    assert stats.ci_columns(one_seed) == ("ci95_low", "ci95_high", "episodes")
    assert stats.ci_columns(pd.DataFrame(columns)) == ("ci95_low", "ci95_high", "episodes")


def test_an_estimate_is_written_one_way_everywhere():
    assert stats.format_mean(1.234, 0.5) == "+1.23 \u00b1 0.50"
    assert stats.format_mean(-1.0, float("nan")) == "-1.00"  # one seed: no spread
    assert stats.format_mean(float("nan"), 1.0) == "n/a"
    assert stats.format_mean(None) == "n/a"
    assert stats.format_mean(0.5, low=-0.25, high=1.0) == "+0.50 [-0.25, +1.00]"
    assert stats.format_mean(0.5, low=np.nan, high=np.nan) == "+0.50"
    assert stats.format_mean(0.123, 0.0456, digits=3) == "+0.123 \u00b1 0.046"
    assert stats.format_mean(12345.6, 789.4, digits=0, signed=False, grouped=True) == \
        "12,346 \u00b1 789"
    assert stats.format_interval(-0.25, 1.0) == "[-0.25, +1.00]"
    assert stats.format_interval(np.nan, 1.0) == "n/a" and stats.format_interval(None, None) == \
        "n/a"
    assert stats.format_number(-2.0) == "-2.00" and stats.format_number(np.nan) == ""


# ---- bootstrap statistics --------------------------------------------------------------------
def test_probability_of_improvement_is_0_one_half_and_1_in_the_hand_computed_cases():
    low, high = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]
    assert stats.probability_of_improvement(high, low)[0] == 1.0  # every pair won
    assert stats.probability_of_improvement(low, high)[0] == 0.0  # every pair lost
    assert stats.probability_of_improvement(low, low)[0] == 0.5  # 3 ties of 9 pairs count 1/2
    # [1, 3] against [2, 2]: pairs (1,2) (1,2) lost, (3,2) (3,2) won -> 2 of 4
    assert stats.probability_of_improvement([1.0, 3.0], [2.0, 2.0])[0] == 0.5
    # [2, 3, 4] against [1, 3]: wins 2>1, 3>1, 4>1, 4>3; tie 3=3; loss 2<3 -> (4 + 0.5) / 6
    assert stats.probability_of_improvement([2.0, 3.0, 4.0], [1.0, 3.0])[0] == \
        pytest.approx(4.5 / 6)
    x, y = np.round(np.random.default_rng(1).normal(size=(2, 7)), 1)  # ties included
    assert stats.probability_of_improvement(x, y)[0] == pytest.approx(
        scipy_stats.mannwhitneyu(x, y).statistic / 49)  # the Mann-Whitney U over n m


def test_the_interval_of_a_probability_of_improvement_is_seeded_and_brackets_it():
    rng = np.random.default_rng(3)
    x, y = rng.normal(1.0, 1.0, 5), rng.normal(0.0, 1.0, 5)
    first, second = (stats.probability_of_improvement(x, y) for _ in range(2))
    assert first == second  # the same runs give the same interval
    p, low, high = first
    assert 0.0 <= low <= p <= high <= 1.0 and high - low > 0.05
    assert stats.probability_of_improvement([4.0, 5.0], [1.0, 2.0])[1:] == (1.0, 1.0)


def test_the_iqm_of_a_known_array_is_the_mean_of_its_middle_half():
    values = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 100.0]  # trim 2 from each end
    assert stats.iqm(values) == pytest.approx((2.0 + 3.0 + 4.0 + 5.0) / 4)
    assert stats.iqm([3.0, 1.0, 2.0, 4.0]) == pytest.approx(2.5)  # middle two of four
    iqm, low, high = stats.iqm_interval([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    assert iqm == pytest.approx(4.5) and low < iqm < high


def test_a_stratum_of_one_value_is_held_fixed_and_none_resampled_gives_no_interval():
    difference = lambda a, b: a.mean(-1) - b.mean(-1)  # noqa: E731 - vectorized: last axis
    assert all(np.isnan(stats.stratified_interval([[1.0], [2.0]], difference)))
    low, high = stats.stratified_interval([[5.0], [1.0, 1.0, 1.0]], difference)
    assert low == high == 4.0  # the fixed stratum and a constant one: no spread


def test_the_vectorized_bootstrap_gives_what_one_call_per_resample_gives():
    """stratified_interval evaluates all resamples at once; scipy's one-call-per-resample
    bootstrap (the slow way, same seed: the same resamples) gives the same interval: exactly
    for the IQM and P(X > Y), to 1e-12 for a growth exponent's slope (one least-squares
    solve for all resamples rounds differently from one per resample)."""
    from marlscale.reports import budget

    rng = np.random.default_rng(7)
    x, y = rng.normal(size=5), rng.normal(size=6)

    def slow(strata, statistic):
        result = scipy_stats.bootstrap(strata, statistic, vectorized=False,
                                       method="percentile", n_resamples=stats.RESAMPLES,
                                       confidence_level=stats.LEVEL,
                                       rng=np.random.default_rng(stats.BOOTSTRAP_SEED))
        return result.confidence_interval.low, result.confidence_interval.high

    assert stats.iqm_interval([x, y])[1:] == slow([x, y], lambda a, b: stats.iqm(
        np.concatenate([a, b])))
    chance = lambda a, b: ((a[:, None] > b[None]).mean()  # noqa: E731
                           + 0.5 * (a[:, None] == b[None]).mean())
    assert stats.probability_of_improvement(x, y)[1:] == slow([x, y], chance)
    points = pd.DataFrame({"n_agents": [5] * 3 + [10] * 3 + [25],
                           "steps": np.exp(rng.normal(size=7)) * 1e4, "seed": range(7),
                           "censored": False, "at_first_evaluation": False})
    fit = budget.growth_exponent(points)
    logs = [np.log(points["steps"].to_numpy()[i]) for i in (slice(0, 3), slice(3, 6))]
    xs = np.log([5.0] * 3 + [10.0] * 3 + [25.0])
    slope = lambda a, b: np.polyfit(xs, np.concatenate(  # noqa: E731 - the 25 held fixed
        [a, b, [np.log(points["steps"].iloc[6])]]), 1)[0]
    low, high = slow(logs, slope)
    assert fit["low"] == pytest.approx(low, rel=1e-12, abs=1e-12)
    assert fit["high"] == pytest.approx(high, rel=1e-12, abs=1e-12)


def test_a_head_to_head_probability_of_improvement_is_0_one_half_and_1_by_hand():
    rows, columns = [0, 0, 1, 1, 2, 2], [0, 1, 0, 1, 0, 1]
    assert stats.clustered_improvement([1.0] * 6, rows, columns) == (1.0, 1.0, 1.0)
    assert stats.clustered_improvement([0.0] * 6, rows, columns) == (0.0, 0.0, 0.0)
    # against every column seed, every row seed wins one episode and loses one: 0.5,
    # whichever seeds are drawn
    p, low, high = stats.clustered_improvement([1] * 6 + [0] * 6, rows * 2, columns * 2)
    assert (p, low, high) == (0.5, 0.5, 0.5)
    # ties count one half
    assert stats.clustered_improvement([0.5] * 6, rows, columns)[0] == 0.5


def test_the_cluster_bootstrap_resamples_seeds_not_episodes_and_is_seeded():
    """Row seed 0 always wins, seed 1 always loses (10 episodes each, one column seed): P is
    0.5 and the interval spans the seeds' disagreement (a resample of seeds can be all 0s
    or all 1s); an episode bootstrap would give a narrow interval around 0.5."""
    scores = [1.0] * 10 + [0.0] * 10
    rows, columns = [0] * 10 + [1] * 10, [7] * 20
    p, low, high = stats.clustered_improvement(scores, rows, columns)
    assert p == 0.5 and low == 0.0 and high == 1.0
    assert stats.clustered_improvement(scores, rows, columns) == (p, low, high)
    # one cluster a side: nothing to resample
    p, low, high = stats.clustered_improvement([1.0, 0.0], [0, 0], [None, None])
    assert p == 0.5 and math.isnan(low) and math.isnan(high)


def test_the_mann_whitney_p_of_complete_separation_by_hand():
    """P(U at its extreme) = 2 / C(n + m, n): 2/20 with 3 v 3, 2/70 with 4 v 4."""
    assert stats.mann_whitney_p([1, 2, 3], [4, 5, 6]) == pytest.approx(2 / 20)
    assert stats.mann_whitney_p([5, 6, 7, 8], [1, 2, 3, 4]) == pytest.approx(2 / 70)
    assert stats.mann_whitney_p([1, 3, 5], [2, 4, 6]) > 0.5
