"""The report's budget axis on hand-made curves (no Ray, no runs): steps to a threshold
(interpolation, censoring), the growth exponent alpha and its seeded bootstrap, the final
return and frontier at a budget, the default thresholds, and --threshold/--budget checks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from marlscale.reports import aggregate, budget
from marlscale.reports.report import check_reading
from marlscale.reports.runs import Runs

EVALUATIONS = np.arange(5_000, 100_001, 5_000)
LONG = np.arange(5_000, 400_001, 5_000)
"""The evaluations of the known-alpha curves, whose crossings run from 6.7k to 230k."""


def curve_rows(trial: str, n: int, seed: int, steps, values, algorithm="iql") -> list[dict]:
    return [{"run": "r", "trial": trial, "algorithm": algorithm, "variant": "", "n_agents": n,
             "seed": seed, "env_steps": float(x), "greedy_return": float(y)}
            for x, y in zip(steps, values)]


def trials_of(curves: pd.DataFrame) -> pd.DataFrame:
    return curves.groupby(["run", "trial"], as_index=False)[
        ["algorithm", "variant", "n_agents", "seed"]].first()


def ramp_reaching(threshold: float, at: float, slope: float = 1e-3,
                  steps: np.ndarray = EVALUATIONS) -> np.ndarray:
    """A greedy curve through `threshold` at env step `at`, linear in env steps (so the
    interpolated crossing is exact)."""
    return threshold + slope * (steps - at)


def test_the_crossing_is_interpolated_between_the_evaluations_around_it():
    steps = np.array([5_000.0, 10_000.0, 15_000.0, 20_000.0])
    values = np.array([-3.0, 5.0, 15.0, 12.0])
    assert budget.crossing(steps, values, 10.0) == (12_500.0, False)  # 5 -> 15 at 10k -> 15k
    assert budget.crossing(steps, values, 15.0) == (15_000.0, False)  # reached exactly
    assert budget.crossing(steps, values, -5.0) == (5_000.0, True)  # by the first evaluation
    at, first = budget.crossing(steps, values, 15.5)
    assert math.isnan(at) and not first  # never: censored


def test_a_curve_that_crosses_and_falls_back_is_placed_at_its_first_crossing():
    steps = np.array([5_000.0, 10_000.0, 15_000.0])
    assert budget.crossing(steps, np.array([0.0, 20.0, 0.0]), 10.0)[0] == 7_500.0


def test_a_run_that_never_reaches_the_threshold_is_censored_at_its_last_evaluation():
    rows = curve_rows("a", 10, 0, EVALUATIONS[:4], [0.0, 1.0, 2.0, 3.0])  # to 20k only
    rows += curve_rows("b", 10, 1, EVALUATIONS[:4], [0.0, 4.0, 8.0, 12.0])
    curves = pd.DataFrame(rows)
    found = budget.steps_to_threshold(curves, trials_of(curves),
                                      [budget.Threshold(10.0, "given")])
    a, b = (found[found["trial"] == t].iloc[0] for t in ("a", "b"))
    assert a["censored"] and math.isnan(a["steps"]) and a["censored_at"] == 20_000
    assert not b["censored"] and b["steps"] == pytest.approx(17_500.0)


def known_alpha_curves(alpha: float, sizes=(5, 10, 25, 50), seeds=(0, 1, 2),
                       threshold: float = 10.0) -> pd.DataFrame:
    """Curves whose crossings are 600 N^alpha 10^(1.5 - alpha) env steps (6.7k at N = 5),
    times a seed factor (the same at every N, so the fit is exact), ramping linearly through
    the threshold."""
    rows = []
    for n in sizes:
        for seed in seeds:
            at = 600.0 * n ** alpha * 10 ** (1.5 - alpha) * (1.0 + 0.1 * (seed - 1))
            rows += curve_rows(f"N{n}_s{seed}", n, seed, LONG,
                               ramp_reaching(threshold, at, slope=1e-4, steps=LONG))
    return pd.DataFrame(rows)


def test_the_fit_recovers_a_known_growth_exponent():
    curves = known_alpha_curves(1.5)
    steps = budget.steps_to_threshold(curves, trials_of(curves),
                                      [budget.Threshold(10.0, "given")])
    assert not steps["censored"].any() and not steps["at_first_evaluation"].any()
    (row,) = budget.growth_exponents(steps).to_dict("records")
    assert row["alpha"] == pytest.approx(1.5, abs=1e-9)
    assert row["low"] <= 1.5 <= row["high"] and row["high"] - row["low"] < 0.2
    assert row["points"] == 12 and row["sizes"] == "5, 10, 25, 50" and row["left_out"] == "none"


def test_censored_trials_are_left_out_of_the_fit_and_listed():
    curves = known_alpha_curves(1.0)
    stuck = curve_rows("N100_s0", 100, 0, LONG, np.zeros(len(LONG)))
    stuck += curve_rows("N100_s1", 100, 1, LONG, np.zeros(len(LONG)))
    curves = pd.concat([curves, pd.DataFrame(stuck)], ignore_index=True)
    steps = budget.steps_to_threshold(curves, trials_of(curves),
                                      [budget.Threshold(10.0, "given")])
    (row,) = budget.growth_exponents(steps).to_dict("records")
    assert row["alpha"] == pytest.approx(1.0, abs=1e-9)  # N = 100 does not enter it
    assert row["left_out"] == "N=100 seed 0; N=100 seed 1" and row["points"] == 12


def test_one_n_reached_gives_no_exponent_and_one_seed_per_n_no_interval():
    curves = known_alpha_curves(1.0, sizes=(5,))
    steps = budget.steps_to_threshold(curves, trials_of(curves),
                                      [budget.Threshold(10.0, "given")])
    assert math.isnan(budget.growth_exponent(steps)["alpha"])
    curves = known_alpha_curves(1.0, seeds=(0,))
    steps = budget.steps_to_threshold(curves, trials_of(curves),
                                      [budget.Threshold(10.0, "given")])
    fit = budget.growth_exponent(steps)
    assert fit["alpha"] == pytest.approx(1.0) and math.isnan(fit["low"])


def test_the_bootstrap_is_seeded_so_a_report_redraws_the_same_interval():
    rng = np.random.default_rng(7)
    points = pd.DataFrame([{"n_agents": n, "seed": s, "censored": False,
                            "at_first_evaluation": False,
                            "steps": 300.0 * n * math.exp(rng.normal(0, 0.3))}
                           for n in (5, 10, 25, 50) for s in range(3)])
    first, second = budget.growth_exponent(points), budget.growth_exponent(points)
    assert (first["low"], first["high"]) == (second["low"], second["high"])
    assert first["low"] < first["alpha"] < first["high"]


def test_the_final_return_at_a_budget_reads_the_last_evaluations_before_it():
    rows = curve_rows("long", 5, 0, EVALUATIONS, EVALUATIONS / 1_000.0)  # value = k steps
    rows += curve_rows("short", 5, 1, EVALUATIONS[:4], [1.0, 2.0, 3.0, 4.0])  # to 20k
    curves = pd.DataFrame(rows)
    at_20k = budget.final_at(curves, "greedy_return", 20_000, last=3)
    assert at_20k.loc[("r", "long")] == pytest.approx((10 + 15 + 20) / 3)
    assert at_20k.loc[("r", "short")] == pytest.approx((2 + 3 + 4) / 3)
    at_50k = budget.final_at(curves, "greedy_return", 50_000, last=3)
    assert list(at_50k.index) == [("r", "long")]  # the short run did not reach 50k
    assert at_50k.iloc[0] == pytest.approx((40 + 45 + 50) / 3)


def test_the_frontier_moves_with_the_budget_on_synthetic_finals():
    """IQL at N = 25 learns late: below 0 at 20k, clearly above at 100k; N = 50 never."""
    rows = []
    for seed in range(3):
        late = np.where(EVALUATIONS < 40_000, -1.0, 20.0 + seed)
        rows += curve_rows(f"N10_s{seed}", 10, seed, EVALUATIONS, np.full(20, 30.0 + seed))
        rows += curve_rows(f"N25_s{seed}", 25, seed, EVALUATIONS, late)
        rows += curve_rows(f"N50_s{seed}", 50, seed, EVALUATIONS, np.full(20, 0.01 * seed))
    curves = pd.DataFrame(rows)
    trials = trials_of(curves).assign(random_level=-10.0, budget_env_steps=100_000.0,
                                      env_steps=100_000.0)
    frontier = {}
    for steps in (20_000, 100_000):
        table = trials.copy()
        finals = budget.final_at(curves, "greedy_return", steps, last=3)
        table["final"] = finals.reindex(pd.MultiIndex.from_frame(table[["run", "trial"]])
                                        ).to_numpy()
        summary = aggregate.scaling(table, "std")
        frontier[steps] = aggregate.frontiers(summary)["frontier"].iloc[0]
    assert frontier == {20_000: 10, 100_000: 25}


def test_budgets_read_are_a_1_2_5_series_up_to_the_longest_run():
    assert budget.budgets(100_000) == [10_000, 20_000, 50_000, 100_000]
    assert budget.budgets(70_000, given=30_000) == [10_000, 20_000, 30_000, 50_000, 70_000]
    assert budget.budgets(5_000) == [5_000]


def test_default_thresholds_run_from_the_random_level_to_the_best_at_the_smallest_n():
    finals = pd.DataFrame({
        "algorithm": ["iql", "iql", "vdn", "vdn", "iql"], "variant": [""] * 5,
        "n_agents": [5, 5, 5, 5, 25], "final": [30.0, 34.0, 20.0, 22.0, 90.0],
        "random_level": [-10.0, -12.0, -11.0, -11.0, -10.0]})
    levels, how = budget.default_thresholds(finals)
    best, random = 32.0, -11.0  # IQL's mean at N = 5; the random level at N = 5
    assert [t.value for t in levels] == pytest.approx(
        [random + f * (best - random) for f in (0.25, 0.5, 0.75)])
    assert "N = 5" in how and "IQL's +32.00" in how and "-11.00" in how


def runs_with(greedy: bool) -> Runs:
    curves = pd.DataFrame(curve_rows("a", 5, 0, EVALUATIONS[:4], [1.0, 2.0, 3.0, 4.0]))
    if not greedy:
        curves["greedy_return"] = np.nan
    trials = trials_of(curves).assign(opponent_algorithm="random", env_steps=20_000)
    return Runs(paths=[], kinds={}, names={}, trials=trials, curves=curves)


@pytest.mark.parametrize("thresholds, budget_steps, greedy, expected", [
    ((math.nan,), None, True, "--threshold nan is invalid; allowed: a finite number"),
    ((), math.inf, True, "--budget inf is invalid; allowed: a finite number of env steps > 0"),
    ((), 0.0, True, "--budget 0 is invalid"),
    ((), 30_000.0, True, "--budget 30000 is beyond every run's last step (the longest ran "
                         "20,000 env steps); allowed: a number of env steps in (0, 20000]"),
    ((5.0,), None, False, "--threshold needs greedy evaluations"),
    ((), 10_000.0, False, "the sample-complexity view needs training.eval_interval > 0"),
])
def test_bad_thresholds_and_budgets_are_named_with_what_is_allowed(thresholds, budget_steps,
                                                                   greedy, expected):
    with pytest.raises(ValueError, match="^") as error:
        check_reading(thresholds, budget_steps, runs_with(greedy))
    assert expected in str(error.value)


def test_good_thresholds_and_budgets_pass():
    check_reading((5.0, -2.5), 20_000.0, runs_with(True))
    check_reading((), None, runs_with(False))  # nothing asked of the greedy curves
