"""`marlscale report` on real runs: the smoke sweep (2 algorithms x 2 N x 2 seeds), the same
sweep with a trial deleted, a `marlscale train` run, W&B offline, and bad input."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import marlscale
from PIL import Image

pytestmark = pytest.mark.integration

SWEEP_FIGURES = ["learning_curves", "greedy_curves", "scaling", "steps_to_threshold",
                 "frontier_budget", "throughput"]
TEAM = "predator"
FINAL = 3  # the report's default --last


def table_after(markdown: str, heading: str) -> pd.DataFrame:
    """The first markdown table after `heading` in report.md, as strings."""
    lines = markdown[markdown.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return pd.DataFrame(rows[2:], columns=rows[0])


def assert_not_blank(png: Path) -> None:
    pixels = np.asarray(Image.open(png).convert("L"), dtype=float)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 300, png
    assert pixels.var() > 100, png  # a blank or near-blank image has almost no variance
    assert (pixels < 128).mean() > 0.01, png  # lines, text and axes were drawn


def expected_finals(results: pd.DataFrame, column: str) -> pd.DataFrame:
    """Recomputed from results.csv: per (algorithm, N), the mean and std over seeds of each
    trial's mean of its last FINAL values of `column`."""
    rows = results.dropna(subset=[column]).sort_values("env_steps_sampled_lifetime")
    final = rows.groupby("trial")[column].apply(lambda s: s.tail(FINAL).mean())
    trials = results.groupby("trial")[["algorithm", "n_agents", "seed"]].first()
    return trials.join(final.rename("final")).groupby(["algorithm", "n_agents"])["final"] \
        .agg(["mean", "std", "count"])


def check_numbers(report: str, results: pd.DataFrame) -> None:
    for heading, column, metric in [
        ("## Scaling with N", f"evaluation/{TEAM}/return_per_agent",
         "final greedy evaluation return per agent"),
        ("## Learning curves", f"episodes/{TEAM}/return_per_agent",
         "final \u03b5-greedy training return per agent"),
    ]:
        shown = table_after(report, heading)
        expected = expected_finals(results, column)
        assert len(shown) == len(expected) == 4
        for _, row in shown.iterrows():
            mean, std, count = expected.loc[(row["algorithm"], int(row["N"]))]
            assert row[metric] == f"{mean:+.2f} \u00b1 {std:.2f}", (heading, row.to_dict())
            assert int(row["seeds"]) == count == 2
    random = results.dropna(subset=[f"random/{TEAM}/return_per_agent"])
    levels = random.groupby("trial").first().groupby("n_agents")[
        f"random/{TEAM}/return_per_agent"].mean()
    shown = table_after(report, "## Scaling with N")
    for _, row in shown.iterrows():
        assert row["random policy"] == f"{levels[int(row['N'])]:+.2f}"


def test_the_sweep_cli_reports_every_figure_with_numbers_from_results_csv(smoke_sweep):
    run_dir, done = smoke_sweep
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report_md = run_dir / "report" / "report.md"
    assert f"report: {report_md}" in done.stdout  # where its report is, printed at the end
    for name in SWEEP_FIGURES:
        assert_not_blank(run_dir / "report" / f"{name}.png")
        assert f"]({name}.png)" in report_md.read_text()
    report = report_md.read_text()
    check_numbers(report, pd.read_csv(run_dir / "results.csv"))
    assert "None: every trial of every grid is present and complete." in report
    for skipped in ("reward modes:", "incremental learning:", "league:", "head-to-head:"):
        assert skipped in report[report.index("## Skipped figures"):]
    assert re.search(r"commit `[0-9a-f]{40}`", report)  # provenance.json of the sweep
    throughput = table_after(report, "## Throughput")
    assert (throughput["env-steps/s"].str.replace(",", "").str.split(" ").str[0]
            .astype(float) > 0).all()


def test_a_sweep_with_a_trial_deleted_still_reports_and_names_it(smoke_sweep, tmp_path):
    source, _ = smoke_sweep
    run_dir = tmp_path / "partial"
    shutil.copytree(source, run_dir, ignore=shutil.ignore_patterns("report", "wandb"))
    deleted = next(run_dir.glob("qmix_N5_seed1_*"))
    shutil.rmtree(deleted)
    out = tmp_path / "out"
    done = marlscale("report", run_dir, "--out", out, "--ci", "95")
    assert done.returncode == 0, done.stderr[-3000:]
    report = (out / "report.md").read_text()
    missing = table_after(report, "## Missing or failed trials")
    assert list(missing["trial"]) == ["qmix_N5_seed1"]
    assert missing["reason"].iloc[0].startswith("missing")
    scaling = table_after(report, "## Scaling with N")
    row = scaling[(scaling["algorithm"] == "qmix") & (scaling["N"] == "5")].iloc[0]
    assert row["seeds"] == "1" and "\u00b1" not in row["final greedy evaluation return per agent"]
    assert "95% CI of the mean over seeds" in report
    for name in SWEEP_FIGURES:
        assert_not_blank(out / f"{name}.png")


def test_report_wandb_logs_figures_and_tables_to_an_offline_run(smoke_sweep, tmp_path):
    run_dir, _ = smoke_sweep
    out = tmp_path / "out"
    done = marlscale("report", run_dir, "--out", out, "--wandb", without_wandb=True)
    assert done.returncode == 0, done.stderr[-3000:]
    (offline,) = (out / "wandb").glob("offline-run-*")
    assert list(offline.glob("run-*.wandb"))
    images = {p.name.rsplit("_", 2)[0] for p in (offline / "files" / "media" / "images")
              .rglob("*.png")}
    assert set(SWEEP_FIGURES) <= images, images
    tables = {p.name.rsplit("_", 2)[0] for p in (offline / "files" / "media" / "table")
              .rglob("*.table.json")}
    assert {"scaling", "frontier", "learning_curves", "throughput"} <= tables, tables


@pytest.fixture(scope="module")
def battle_run(tmp_path_factory):
    """A short `marlscale train` battle run (it writes its own report at the end)."""
    run_dir = tmp_path_factory.mktemp("battle") / "run"
    done = marlscale("train", "--game", "battle", "--n-agents", "3", "--max-cycles", "30",
                     "--iterations", "3", "--set", "rollout_length=30", "--set",
                     "learning_starts=30", "--set", "batch_size=8", "--set", "eval_interval=1",
                     "--set", "eval_episodes=1", "--wandb-mode", "disabled",
                     "--run-dir", run_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir, done


def test_a_train_run_reports_its_curves_and_says_what_it_skipped(battle_run):
    run_dir, done = battle_run
    report_md = run_dir / "report" / "report.md"
    assert done.stdout.rstrip().splitlines()[-1].startswith(f"report: {report_md}")
    for name in ("learning_curves", "greedy_curves", "throughput"):
        assert_not_blank(run_dir / "report" / f"{name}.png")
    report = report_md.read_text()
    assert "scaling: needs two or more N against the random team; the runs hold N = 3" in report
    learning = table_after(report, "## Learning curves")
    assert list(learning["seeds"]) == ["1"] and list(learning["N"]) == ["3"]


@pytest.mark.parametrize("case", ["empty", "nowhere", "games", "out-is-a-file"])
def test_bad_input_gets_a_clear_error_and_writes_nothing(case, smoke_sweep, battle_run,
                                                         tmp_path, cli_in_process):
    """In-process (`cli_in_process`), as the next test's bad flags: a subprocess per case
    cost its imports; the sweep CLI's reports run through real processes above."""
    sweep_dir, battle_dir = smoke_sweep[0], battle_run[0]
    out = tmp_path / "out"
    (tmp_path / "empty").mkdir()
    (tmp_path / "a-file").write_text("not a folder")
    args, expected = {
        "empty": ([tmp_path / "empty"], f"run directory '{tmp_path / 'empty'}' holds no "
                  "results; expected: a `marlscale train` run directory"),
        "nowhere": ([tmp_path / "nowhere"], f"'{tmp_path / 'nowhere'}' does not exist; "
                    "expected:"),
        "games": ([sweep_dir, battle_dir], "runs whose axes conflict: "),
        "out-is-a-file": ([sweep_dir], f"--out '{tmp_path / 'a-file' / 'out'}' cannot be "
                          "written"),
    }[case]
    if case == "out-is-a-file":
        out = tmp_path / "a-file" / "out"
    done = cli_in_process("report", *args, "--out", out)
    assert done.code == 2, done.out[-2000:] + done.err[-2000:]
    assert expected in done.err
    assert "Traceback" not in done.err and not done.ray_started
    if case == "games":
        assert "adversarial_pursuit" in done.err and "battle" in done.err
    assert not any(out.glob("*")) if out.is_dir() else True


def test_the_budget_axis_on_a_real_sweep_matches_results_csv(smoke_sweep, tmp_path):
    """Steps to a threshold and the final return at a budget, recomputed from results.csv:
    each trial's greedy evaluations, the crossing interpolated between two of them, '> B'
    where a trial never reaches it."""
    run_dir, _ = smoke_sweep
    results = pd.read_csv(run_dir / "results.csv")
    column, steps = f"evaluation/{TEAM}/return_per_agent", "env_steps_sampled_lifetime"
    greedy = results.dropna(subset=[column]).sort_values(steps)
    threshold = float(np.median(greedy[column]))
    out = tmp_path / "out"
    done = marlscale("report", run_dir, "--out", out, "--threshold", threshold,
                     "--threshold", greedy[column].max() + 1.0, "--budget", 100)
    assert done.returncode == 0, done.stderr[-3000:]
    report = (out / "report.md").read_text()
    for name in ("steps_to_threshold", "frontier_budget", "scaling"):
        assert_not_blank(out / f"{name}.png")
    label = f"{threshold:+.2f}"
    shown = table_after(report, "## Sample complexity").set_index(["algorithm", "N"])
    for (algorithm, n), trials in greedy.groupby(["algorithm", "n_agents"]):
        cells = []
        for _, trial in sorted(trials.groupby("trial"), key=lambda t: t[1]["seed"].iloc[0]):
            x, y = trial[steps].to_numpy(float), trial[column].to_numpy(float)
            above = np.flatnonzero(y >= threshold)
            if not len(above):
                cells.append(f"> {x[-1]:,.0f}")
            elif above[0] == 0:
                cells.append(f"\u2264 {x[0]:,.0f}")
            else:
                i = above[0]
                at = x[i - 1] + (threshold - y[i - 1]) / (y[i] - y[i - 1]) * (x[i] - x[i - 1])
                cells.append(f"{at:,.0f}")
        row = shown.loc[(algorithm, str(n))]
        assert row[f"env steps to {label} (per seed)"] == "; ".join(cells)
        assert int(row[f"censored at {label}"]) == sum(c.startswith(">") for c in cells)
        # above every evaluation: every trial is censored, never placed at its budget
        assert row[f"censored at {greedy[column].max() + 1.0:+.2f}"] == "2"
    assert "- **Thresholds given**: `--threshold" in report
    assert "## Scaling with N at 100 env steps" in report
    at_budget = table_after(report, "## The frontier at each budget\n\nThe scaling")
    finals = table_after(report[report.index("([frontier_budget.csv]"):], "|").set_index(
        ["algorithm", "N"])
    assert list(at_budget.columns[2:]) == ["100", "150"]
    for (algorithm, n), trials in greedy[greedy[steps] <= 100].groupby(
            ["algorithm", "n_agents"]):
        per_trial = trials.groupby("trial")[column].apply(lambda s: s.tail(FINAL).mean())
        assert finals.loc[(algorithm, str(n)), "100"] == \
            f"{per_trial.mean():+.2f} \u00b1 {per_trial.std():.2f} ({len(per_trial)})"


@pytest.mark.parametrize("flags, expected", [
    (["--budget", "1000"], "--budget 1000 is beyond every run's last step (the longest ran "
                           "150 env steps); allowed: a number of env steps in (0, 150]"),
    (["--budget", "-1"], "argument --budget: -1 is invalid; allowed: a finite number > 0"),
    (["--threshold", "nan"], "argument --threshold: nan is invalid; allowed: a finite number"),
])
def test_bad_budgets_and_thresholds_exit_2_and_write_nothing(flags, expected, smoke_sweep,
                                                             tmp_path, cli_in_process):
    out = tmp_path / "out"
    done = cli_in_process("report", smoke_sweep[0], "--out", out, *flags)
    assert done.code == 2 and expected in done.err, done.err[-2000:]
    assert "Traceback" not in done.err and not out.exists()
