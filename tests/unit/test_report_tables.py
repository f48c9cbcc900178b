"""The report's arithmetic on small hand-made tables: seeds aligned on env steps, spreads,
'final' values, frontiers, conflicting runs, the sections drawn (no Ray, no runs; the
statistics themselves: test_stats.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from marlscale.reports import aggregate
from marlscale.reports.report import check_out
from marlscale.reports.runs import Runs, check_consistent
from scipy import stats as scipy_stats

ROOT = Path(__file__).resolve().parents[2]


def curves(*trials) -> pd.DataFrame:
    """(trial, seed, [(env_steps, value), ...]) -> curve rows of one configuration."""
    rows = [{"run": "r", "trial": t, "seed": s, "algorithm": "qmix", "variant": "",
             "n_agents": 5, "env_steps": x, "train_return": y}
            for t, s, points in trials for x, y in points]
    return pd.DataFrame(rows)


def test_seeds_are_aligned_on_env_steps_by_interpolation_never_beyond_a_seed():
    frame = curves(("a", 0, [(100, 0.0), (300, 2.0)]),
                   ("b", 1, [(100, 2.0), (200, 4.0), (300, 6.0), (400, 8.0)]))
    out = aggregate.seed_curves(frame, "train_return", ["algorithm", "n_agents"], "std")
    by_step = out.set_index("env_steps")
    assert by_step.loc[200, "mean"] == pytest.approx((1.0 + 4.0) / 2)  # a interpolated at 200
    assert by_step.loc[400, "n"] == 1 and by_step.loc[400, "mean"] == 8.0  # a ended at 300
    assert math.isnan(by_step.loc[400, "spread"])  # no spread from one seed
    assert by_step.loc[100, "spread"] == pytest.approx(np.std([0.0, 2.0], ddof=1))


def test_final_is_the_mean_of_the_last_values_that_exist():
    frame = curves(("a", 0, [(100, 1.0), (200, np.nan), (300, 3.0), (400, 5.0), (500, 7.0)]))
    final = aggregate.final_values(frame, "train_return", last=3)
    assert final.loc[("r", "a")] == pytest.approx((3.0 + 5.0 + 7.0) / 3)


def test_frontier_is_the_largest_n_above_random_and_zero():
    summary = pd.DataFrame({
        "algorithm": ["qmix"] * 4, "variant": [""] * 4, "n_agents": [5, 10, 25, 50],
        "mean": [3.0, 1.0, 0.5, -1.0], "random_level": [-2.0, -1.0, 0.8, -3.0]})
    (row,) = aggregate.frontiers(summary).to_dict("records")
    assert row["largest_n_above_random"] == 50  # -1 > -3
    assert row["largest_n_above_zero"] == 25
    assert row["frontier"] == 10  # N=25 is below random, N=50 below 0


def test_a_collapsed_line_is_not_above_zero_and_the_frontier_must_hold_at_every_smaller_n():
    """Final returns per seed: N=5 and N=10 clearly above 0; N=25 a collapsed +0.05 (its 95%
    interval over 3 seeds reaches below 0); N=50 clearly above 0 again, but past a gap."""
    finals = {5: [40.0, 42.0, 41.0], 10: [20.0, 25.0, 22.0], 25: [0.0, 0.0, 0.15],
              50: [5.0, 6.0, 7.0]}
    table = pd.DataFrame([
        {"algorithm": "mfq", "variant": "", "n_agents": n, "final": value, "seed": seed,
         "budget_env_steps": 100, "env_steps": 100, "random_level": -10.0}
        for n, values in finals.items() for seed, value in enumerate(values)])
    summary = aggregate.scaling(table, "std")
    low = summary.set_index("n_agents")["low"]
    assert low[25] == pytest.approx(0.05 - 4.30265273 * np.std([0, 0, 0.15], ddof=1)
                                    / math.sqrt(3), rel=1e-6)
    assert low[25] < 0 < summary.set_index("n_agents")["mean"][25]
    (row,) = aggregate.frontiers(summary).to_dict("records")
    assert row["largest_n_above_zero"] == 50
    assert row["largest_n_above_random"] == 50
    assert row["frontier"] == 10


def runs_of(trials: list[dict]) -> Runs:
    defaults = {"opponent_algorithm": "random", "reward_mode": "team", "incremental": "none"}
    table = pd.DataFrame([{**defaults, **trial} for trial in trials])
    return Runs(paths=[Path(t["run"]) for t in trials], kinds={}, names={}, trials=table,
                curves=pd.DataFrame())


def test_runs_of_two_games_or_the_same_trial_twice_conflict():
    base = {"algorithm": "qmix", "n_agents": 5, "seed": 0}
    with pytest.raises(ValueError, match=r"runs whose axes conflict: 'a' holds "
                       r"adversarial_pursuit; 'b' holds battle"):
        check_consistent(runs_of([{"run": "a", "game": "adversarial_pursuit", **base},
                                  {"run": "b", "game": "battle", **base}]))
    with pytest.raises(ValueError, match="is in both 'a' and 'b'"):
        check_consistent(runs_of([{"run": "a", "game": "battle", **base},
                                  {"run": "b", "game": "battle", **base}]))
    check_consistent(runs_of([{"run": "a", "game": "battle", **base},
                              {"run": "b", "game": "battle", **base, "seed": 1}]))


def test_variants_name_only_the_settings_that_differ():
    runs = runs_of([{"run": "a", "game": "battle", "algorithm": "qmix", "n_agents": 5,
                     "seed": 0, "reward_mode": mode, "incremental": "none"}
                    for mode in ("team", "individual")])
    runs.extra_axes = []
    assert list(aggregate.with_variants(runs)["variant"]) == ["team reward", "individual reward"]
    assert list(aggregate.with_variants(runs, exclude=("reward_mode",))["variant"]) == ["", ""]


def test_out_checks(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="cannot be written: .* is a file"):
        check_out(tmp_path / "file" / "report")
    assert check_out(tmp_path / "new" / "report") == tmp_path / "new" / "report"
    assert not (tmp_path / "new").exists()  # checked, not created


def synthetic_runs() -> Runs:
    """2 N x 2 reward modes x with/without incremental x 2 seeds of QMIX, plus one
    head-to-head trial: every figure but the league's has something to draw."""
    trials, rows = [], []
    grid = [(n, mode, schedule, seed) for n in (3, 30) for mode in ("team", "individual")
            for schedule in ("none", "linear") for seed in (0, 1)]
    grid.append((3, "team", "none", 0, "mfq"))
    for number, point in enumerate(grid):
        n, mode, schedule, seed, *opponent = point
        name = f"t{number}"
        trials.append({"run": "r", "trial": name, "game": "adversarial_pursuit",
                       "algorithm": "qmix", "opponent_algorithm": (opponent or ["random"])[0],
                       "n_agents": n, "reward_mode": mode, "incremental": schedule,
                       "seed": seed, "learning_agents": n, "budget_env_steps": 500,
                       "env_steps": 500, "status": "complete"})
        for step in range(100, 600, 100):
            gain = step / 100 * (2 if mode == "individual" else 1) + seed
            rows.append({"run": "r", "trial": name, "algorithm": "qmix", "n_agents": n,
                         "reward_mode": mode, "incremental": schedule,
                         "opponent_algorithm": (opponent or ["random"])[0],
                         "env_steps": step, "iteration": step // 100, "train_return": gain,
                         "greedy_return": gain + 1, "random_return": -1.0,
                         "active_greedy_return": gain + 2 if schedule != "none" else math.nan,
                         "reward_difference": gain - 2,
                         "n_active": min(n, step // 100) if schedule != "none" else n,
                         "env_steps_per_s": 100.0, "agent_steps_per_s": 100.0 * n,
                         "sampling_env_steps_per_s": 400.0, "wall_s": step / 100,
                         "time_total_s": step / 100, "date": None, "hostname": "h"})
    return Runs(paths=[Path("r")], kinds={"r": "sweep"}, names={"r": "synthetic"},
                trials=pd.DataFrame(trials), curves=pd.DataFrame(rows))


def test_the_report_draws_each_figure_its_runs_allow_and_skips_the_rest(tmp_path):
    from marlscale.reports.report import sections

    drawn, skipped = sections(synthetic_runs(), "std", tmp_path, 3)
    names = [section.name for section in drawn]
    assert names == ["learning_curves", "greedy_curves", "trained_agent_curves", "scaling",
                     "steps_to_threshold", "frontier_budget", "reward_modes", "incremental",
                     "head_to_head", "throughput"]
    # transfer: no zero_shot/zero_shot.csv (`marlscale evaluate SWEEP_DIR`) in the runs
    # probability of improvement: one algorithm (QMIX) against the random team
    assert [reason.split(":")[0] for reason in skipped] == [
        "probability of improvement", "transfer", "ablations", "league",
        "league probability of improvement"]
    for name in names:
        pixels = np.asarray(__import__("PIL.Image").Image.open(tmp_path / f"{name}.png")
                            .convert("L"), dtype=float)
        assert pixels.var() > 100, name
    modes = next(s for s in drawn if s.name == "reward_modes").tables["reward_modes"]
    # 2 seeds per (variant, mode, N): incremental is a variant here, never pooled as a seed
    assert set(modes["seeds (team)"]) == {2} and len(modes) == 4
    row = modes[(modes["variant"] == "no incremental") & (modes["N"] == 3)].iloc[0]
    # last 3 of 2, 4, ..., 10 (+ seed): 8 and 9 over the two seeds
    assert row["final, individual reward"] == "+8.50 \u00b1 0.71"
    scaling = next(s for s in drawn if s.name == "scaling").tables["frontier"]
    frontier = dict(zip(scaling["variant"],
                        scaling["frontier N (above random and clearly above 0)"]))
    # team reward: finals 5 and 6 over 2 seeds, a 95% interval of 5.5 +- 6.4 reaches below 0
    assert frontier == {
        "individual reward, no incremental": "30", "individual reward, incremental (linear)": "30",
        "team reward, no incremental": "none", "team reward, incremental (linear)": "none"}


def test_an_ablation_effect_is_the_difference_from_baseline_with_its_welch_interval():
    finals = {"baseline": [10.0, 12.0, 14.0], "lr": [20.0, 21.0, 22.0], "same": [9.0, 12.0, 15.0],
              "one": [30.0]}
    table = pd.DataFrame([{"algorithm": "mfq", "variant": "", "n_agents": 25, "ablation": a,
                           "final": v} for a, values in finals.items() for v in values])
    effects = aggregate.effects(table, "baseline").set_index("ablation")
    lr = effects.loc["lr"]
    assert lr["effect"] == pytest.approx(21.0 - 12.0)
    se = math.sqrt(4.0 / 3 + 1.0 / 3)  # variances 4 and 1 over 3 seeds each
    df = (4.0 / 3 + 1.0 / 3) ** 2 / ((4.0 / 3) ** 2 / 2 + (1.0 / 3) ** 2 / 2)
    half = scipy_stats.t.ppf(0.975, df) * se
    assert (lr["ci95_low"], lr["ci95_high"]) == pytest.approx((9.0 - half, 9.0 + half))
    assert lr["ci95_low"] > 0  # a real effect
    same = effects.loc["same"]
    assert same["ci95_low"] < 0 < same["ci95_high"]  # no effect: the interval holds 0
    assert math.isnan(effects.loc["one"]["ci95_low"])  # one seed: no interval
    assert math.isnan(effects.loc["baseline"]["effect"])


def test_the_report_of_a_committed_ablation_sweep_names_each_variant_its_setting_and_effect(
        tmp_path):
    """docs/results/ablations/qmix_n25: QMIX at N = 25, variants of one factor each."""
    from marlscale.reports.report import sections
    from marlscale.reports.runs import load

    runs = load(ROOT / "docs" / "results" / "ablations" / "qmix_n25")
    drawn, skipped = sections(runs, "std", tmp_path, 3)
    (section,) = [s for s in drawn if s.name == "ablations"]
    table = section.tables["ablations"].set_index("ablation")
    assert table.loc["baseline", "effect vs baseline [95% CI]"] == "reference"
    assert table.loc["mixer_lr_1e-4", "settings"] == "training.mixer_lr=0.0001"
    effect, interval = table.loc["mixer_lr_1e-4", "effect vs baseline [95% CI]"].split(" ", 1)
    low, high = (float(v) for v in interval.strip("[]").split(", "))
    assert low < float(effect) < high and table.loc["mixer_lr_1e-4", "CI excludes 0"] == (
        "yes" if low > 0 or high < 0 else "no")
    assert "one seed" in table.loc["grad_clip_100", "effect vs baseline [95% CI]"]
    # every other figure groups by the variant's name too (no merge of two 'variant's)
    curves = next(s for s in drawn if s.name == "greedy_curves").tables["greedy_curves"]
    assert set(curves["variant"]) == set(table.index)
    pixels = np.asarray(__import__("PIL.Image").Image.open(tmp_path / "ablations.png")
                        .convert("L"), dtype=float)
    assert pixels.var() > 100


def test_a_run_without_a_grid_axis_is_labelled_with_the_value_its_trials_ran_with(tmp_path):
    """Two sweeps, the second with a one-value axis `training.team_reward: [mean]` (the
    committed report_example run, copied and relabelled): the first run's trials get the
    value they ran with (the default, sum), so the two are told apart, not in conflict."""
    import shutil

    import yaml
    from marlscale.reports.runs import load

    first = ROOT / "docs" / "results" / "report_example" / "run"
    second = tmp_path / "mean_run"
    shutil.copytree(first, second)
    spec = yaml.safe_load((second / "sweep.yaml").read_text())
    spec["experiment"] = "report_example_mean"
    spec["grid"] = {"training.team_reward": ["mean"], **spec["grid"]}
    (second / "sweep.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    for name in ("results.csv", "trials.csv"):
        table = pd.read_csv(second / name)
        table["trial"] = "mean_" + table["trial"]
        if name == "results.csv":
            table.insert(2, "training.team_reward", "mean")
        table.to_csv(second / name, index=False)
    runs = load(first, second)
    assert "training.team_reward" in runs.extra_axes
    by_run = runs.trials.groupby("run")["training.team_reward"].unique()
    assert list(by_run[str(first)]) == ["sum"] and list(by_run[str(second)]) == ["mean"]
    labels = aggregate.with_variants(runs).groupby("run")["variant"].unique()
    assert list(labels[str(first)]) == ["team_reward=sum"]
    assert list(labels[str(second)]) == ["team_reward=mean"]
    assert set(runs.curves["training.team_reward"]) == {"sum", "mean"}


def test_a_league_with_seeds_is_shown_with_its_interval_over_seeds(tmp_path):
    """The league table shows both intervals; the heat map annotates the one over seeds."""
    from marlscale import stats
    from marlscale.evaluation.league import tables
    from marlscale.reports.report import Inputs, _league_improvement_section, _league_section

    rows = [{"algorithm": a, "side": "red", "seed": seed, "policy": f"{a}{seed}",
             "opponent_algorithm": b, "opponent_policy": f"{b}{seed}", "episode": e,
             "opponent_seed": None if b == "random" else seed,
             "reward_difference": sign * (seed - 0.5 + e / 10), "return_per_agent": 0.0,
             "outcome": 1.0}
            for seed in (0, 1, 2) for e in range(4)
            for a, b, sign in (("qmix", "mfq", 1), ("mfq", "qmix", -1), ("qmix", "random", 1))]
    out = tables(rows, interchangeable=True)
    runs = Runs(paths=[Path("r")], kinds={"r": "league"}, names={"r": "l"},
                trials=pd.DataFrame(), curves=pd.DataFrame(),
                league={"league": out["league"], "ratings": out["ratings"]})
    section = _league_section(Inputs(runs, "std", tmp_path, 3))
    league = section.tables["league"].set_index(["policy", "opponent"])
    cell = out["league"].set_index(["algorithm", "column_algorithm"]).loc[("qmix", "mfq")]
    assert league.loc[("qmix", "mfq"), "95% CI over 3 seeds"] == \
        f"[{cell['seed_ci95_low']:+.2f}, {cell['seed_ci95_high']:+.2f}]"
    assert league.loc[("qmix", "mfq"), "reward difference [95% CI over episodes]"].startswith(
        f"{cell['reward_difference']:+.2f} [{cell['ci95_low']:+.2f}")
    assert "95% CI over 3 seeds" in section.tables["ratings"].columns
    pixels = np.asarray(__import__("PIL.Image").Image.open(tmp_path / "league.png")
                        .convert("L"), dtype=float)
    assert pixels.var() > 100
    # the companion: qmix's reward difference is > 0 in no episode of seed 0 and in every
    # episode of seeds 1 and 2: P = 8/12, and its mirror cell 4/12
    runs.league["episodes"] = pd.DataFrame(rows).assign(run="r")
    runs.league["league"] = runs.league["league"].assign(run="r")
    section = _league_improvement_section(Inputs(runs, "std", tmp_path, 3))
    cells = section.tables["league_improvement"].set_index(["policy", "opponent"])
    qmix_mfq = out["league"].set_index(["algorithm", "column_algorithm"]).loc[("qmix", "mfq")]
    assert qmix_mfq["improvement"] == pytest.approx(
        np.mean([seed - 0.5 + e / 10 > 0 for seed in (0, 1, 2) for e in range(4)]))
    assert cells.loc[("qmix", "mfq"), "P(row better) [95% CI over seeds]"] == \
        stats.format_mean(qmix_mfq["improvement"], low=qmix_mfq["improvement_ci95_low"],
                          high=qmix_mfq["improvement_ci95_high"], signed=False)
    assert cells.loc[("mfq", "qmix"), "P(row better) [95% CI over seeds]"].startswith(
        f"{1 - qmix_mfq['improvement']:.2f}")
    pixels = np.asarray(__import__("PIL.Image").Image.open(tmp_path / "league_improvement.png")
                        .convert("L"), dtype=float)
    assert pixels.var() > 100


def test_an_iqm_summary_is_the_middle_half_with_a_bootstrap_interval_and_needs_4_seeds():
    frame = pd.DataFrame({"algorithm": ["qmix"] * 5 + ["vdn"] * 3,
                          "final": [1.0, 2.0, 3.0, 4.0, 100.0, 1.0, 2.0, 3.0],
                          "seed": [0, 1, 2, 3, 4, 0, 1, 2]})
    table = aggregate.summarize(frame, ["algorithm"], "final", "std", "iqm").set_index(
        "algorithm")
    # 5 values: int(5 / 4) = 1 trimmed from each end, the mean of 2, 3, 4
    assert table.loc["qmix", "mean"] == pytest.approx(3.0)
    assert table.loc["qmix", "low"] <= 3.0 <= table.loc["qmix", "high"]
    assert math.isnan(table.loc["qmix", "spread"])
    assert aggregate.summarize(frame, ["algorithm"], "final", "std").set_index(
        "algorithm").loc["qmix", "mean"] == pytest.approx(22.0)  # the mean is unchanged
    few = aggregate.too_few_for_iqm(frame, ["algorithm"], "seed")
    assert few.to_dict("records") == [{"algorithm": "vdn", "n": 3}]


def test_the_report_refuses_an_unknown_aggregate_and_an_iqm_over_3_seeds(tmp_path):
    from marlscale.reports.report import build

    with pytest.raises(ValueError, match=r"--aggregate 'median' is invalid; allowed: mean, iqm"):
        build([ROOT / "docs/results/study/c1_budget_n25/run"], tmp_path / "a",
              aggregate_by="median")
    with pytest.raises(ValueError, match=r"needs at least 4 seeds .* \(iql vs random, N = 25: "
                                         r"3; mfq vs random"):
        build([ROOT / "docs/results/study/c1_budget_n25/run"], tmp_path / "b",
              aggregate_by="iqm")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_probability_of_improvement_table_and_the_iqm_scaling(tmp_path):
    """Four seeds per (algorithm, N): qmix's finals beat vdn's at N = 3 in every pair (P = 1,
    Mann-Whitney p = 2/70: resolved); at N = 30 they interleave."""
    from marlscale.reports.report import Inputs, _improvement_section, _scaling_section

    trials, rows = [], []
    for algorithm in ("qmix", "vdn"):
        for n in (3, 30):
            for seed in range(4):
                name = f"{algorithm}-{n}-{seed}"
                value = (10.0 if algorithm == "qmix" else 0.0) + seed if n == 3 else \
                    seed + (0.5 if algorithm == "qmix" else 0.0)
                trials.append({"run": "r", "trial": name, "game": "adversarial_pursuit",
                               "algorithm": algorithm, "opponent_algorithm": "random",
                               "n_agents": n, "reward_mode": "team", "incremental": "none",
                               "seed": seed, "learning_agents": n, "budget_env_steps": 300,
                               "env_steps": 300, "status": "complete"})
                rows += [{"run": "r", "trial": name, "env_steps": step, "train_return": value,
                          "greedy_return": value, "random_return": -1.0, "wall_s": 3.0,
                          "time_total_s": 3.0, "sampling_env_steps_per_s": 1.0}
                         for step in (100, 200, 300)]
    runs = Runs(paths=[Path("r")], kinds={"r": "sweep"}, names={"r": "synthetic"},
                trials=pd.DataFrame(trials), curves=pd.DataFrame(rows))
    inputs = Inputs(runs, "std", tmp_path, 3, aggregate="iqm")
    table = _improvement_section(inputs).tables["improvement"].set_index("N")
    assert list(table["X"] + ">" + table["Y"]) == ["qmix>vdn", "qmix>vdn"]
    assert table.loc[3, "P(X > Y) [95% CI]"] == "1.00 [1.00, 1.00]"
    assert table.loc[3, "Mann-Whitney p"] == f"{2 / 70:.3f}"
    assert table.loc[3, "resolved"] == "yes: qmix"
    # N = 30: qmix's seed s (s + 0.5) beats vdn's seeds <= s: 10 of 16 pairs
    assert table.loc[30, "P(X > Y) [95% CI]"].startswith("0.62 [")
    assert table.loc[30, "resolved"] == "no"
    scaling = _scaling_section(inputs).tables["scaling"].set_index(["algorithm", "N"])
    column = next(c for c in scaling.columns if c.endswith("(IQM)"))
    assert scaling.loc[("qmix", 3), column].startswith("+11.50 [")  # the IQM of 10..13
    for name in ("improvement", "scaling"):
        pixels = np.asarray(__import__("PIL.Image").Image.open(tmp_path / f"{name}.png")
                            .convert("L"), dtype=float)
        assert pixels.var() > 100, name


def test_iqm_ratings_are_the_middle_half_of_the_seeds_ratings(tmp_path):
    """Four seeds of qmix against mfq, each seed's episodes averaging seed * 1.0: the ratings'
    IQM is the mean of the middle two seeds (1 and 2), 1.5; mfq's is -1.5."""
    from marlscale import stats
    from marlscale.evaluation.league import tables
    from marlscale.reports.report import Inputs, _league_section

    rows = [{"algorithm": a, "side": "red", "seed": seed, "policy": f"{a}{seed}",
             "opponent_algorithm": b, "opponent_policy": f"{b}{seed}", "episode": e,
             "opponent_seed": seed, "reward_difference": sign * (seed + (e - 1.5) / 10),
             "return_per_agent": 0.0, "outcome": 1.0}
            for seed in range(4) for e in range(4)
            for a, b, sign in (("qmix", "mfq", 1), ("mfq", "qmix", -1))]
    out = tables(rows, interchangeable=True)
    runs = Runs(paths=[Path("r")], kinds={"r": "league"}, names={"r": "l"},
                trials=pd.DataFrame(), curves=pd.DataFrame(),
                league={"league": out["league"].assign(run="r"),
                        "ratings": out["ratings"].assign(run="r"),
                        "episodes": pd.DataFrame(rows).assign(run="r")})
    section = _league_section(Inputs(runs, "std", tmp_path, 3, aggregate="iqm"))
    ratings = section.tables["ratings"].set_index("algorithm")
    column = "rating, IQM over seeds [95% bootstrap CI]"
    low, high = stats.iqm_interval([np.array([0.0, 1.0, 2.0, 3.0])])[1:]
    assert ratings.loc["qmix", column] == stats.format_mean(1.5, low=low, high=high)
    assert ratings.loc["mfq", column].startswith("-1.50 [")
