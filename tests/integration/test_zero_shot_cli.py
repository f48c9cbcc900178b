"""Zero-shot evaluation of a real sweep (issue #28): the smoke sweep's 8 policies (trained at
N = 3 and 5) played at N = 3 and 8 by `marlscale evaluate SWEEP_DIR`, then the transfer figure
drawn by `marlscale report` from a copy of the sweep holding the tables."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from cli_helpers import marlscale
from marlscale import runfiles, stats
from marlscale.evaluation import zero_shot
from PIL import Image

pytestmark = pytest.mark.integration


def test_every_trial_plays_every_n_and_the_report_draws_the_transfer(smoke_sweep, tmp_path):
    source, _ = smoke_sweep
    out = tmp_path / "zero_shot"
    done = marlscale("evaluate", source, "--n-agents", "3,8", "--episodes", "2", "--out", out,
                     "--num-cpus", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (source / runfiles.ZERO_SHOT_DIR).exists()  # --out: the fixture's dir untouched
    printed = json.loads(done.stdout[done.stdout.index("\n{") + 1:])
    assert printed["n_played"] == [3, 8] and printed["trials"] == 8 and not printed["skipped"]
    assert "| transfer ratio" in done.stdout  # the markdown table

    table = pd.read_csv(out / runfiles.ZERO_SHOT_CSV)
    trials = pd.read_csv(source / runfiles.TRIALS_CSV)
    expected = {(t, n) for t, n0 in zip(trials["trial"], trials["n_agents"])
                for n in {3, 8, n0}}
    assert set(zip(table["trial"], table["n_played"])) == expected and len(table) == 20
    assert (table["episodes"] == 2).all() and (table["n_active"] == table["n_played"]).all()
    assert (table["ci95_low"] <= table["return_per_agent"]).all()
    assert (table["return_per_agent"] <= table["ci95_high"]).all()
    assert table.groupby("n_played")["random_level"].nunique().eq(1).all()  # same episodes
    assert table.groupby("trial")[["algorithm", "n_trained", "seed"]].nunique().eq(1).all().all()

    summary = pd.read_csv(out / runfiles.ZERO_SHOT_SUMMARY_CSV, keep_default_na=False,
                          na_values=[""]).set_index(["algorithm", "n_trained", "n_played"])
    assert len(summary) == 10
    for (algorithm, n0, n), group in table.groupby(["algorithm", "n_trained", "n_played"]):
        row = summary.loc[(algorithm, n0, n)]
        over_seeds = stats.t_interval(group["return_per_agent"].to_numpy())
        assert row["seeds"] == 2 and row["ci_over"] == "seeds"
        assert row["mean"] == pytest.approx(over_seeds["mean"])
        assert [row["ci95_low"], row["ci95_high"]] == pytest.approx(over_seeds["ci95"])
        own = table[(table["algorithm"] == algorithm) & (table["n_trained"] == n0)
                    & (table["n_played"] == n0)]["return_per_agent"].mean()
        assert row["transfer_ratio"] == pytest.approx(over_seeds["mean"] / own)
    # The same numbers again from the tables, as the report computes them.
    recomputed = zero_shot.summarize(table)
    assert np.allclose(recomputed["mean"], summary["mean"])

    copy = tmp_path / "smoke"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("report", "wandb"))
    shutil.copytree(out, copy / runfiles.ZERO_SHOT_DIR)
    done = marlscale("report", copy, "--out", tmp_path / "report")
    assert done.returncode == 0, done.stderr[-3000:]
    png = tmp_path / "report" / "transfer.png"
    pixels = np.asarray(Image.open(png).convert("L"), dtype=float)
    assert pixels.shape[0] > 300 and pixels.var() > 100 and (pixels < 128).mean() > 0.01
    shown = pd.read_csv(tmp_path / "report" / "transfer.csv", dtype=str, keep_default_na=False)
    assert len(shown) == 10
    report = (tmp_path / "report" / runfiles.REPORT_MD).read_text()
    assert "## Zero-shot transfer across N" in report and "transfer:" not in report
