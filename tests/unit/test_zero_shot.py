"""Zero-shot evaluation over a grid of N (issue #28), without Ray: the summary's arithmetic on
a hand-made table, the transfer figure from a synthetic one, and every bad input refused in
one line before Ray starts, with nothing written (on a sweep directory of fake checkpoints:
their JSON only, which is all that is read before Ray)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from cli_helpers import ROOT
from conftest import record_ray_starts
from marlscale import runfiles, stats
from marlscale.cli import main
from marlscale.evaluation import zero_shot
from marlscale.reports import figures
from marlscale.runspec import SweepSpec
from marlscale.runspec.sweep import SPEC_KEY
from PIL import Image

SMOKE = ROOT / "tune_specs" / "smoke.yaml"  # pursuit, map_size 14: at most 36 predators


def _row(trial, algorithm, seed, n0, n, mean, random, low=np.nan, high=np.nan):
    return {"trial": trial, "algorithm": algorithm, "variant": "", "seed": seed,
            "n_trained": n0, "n_played": n, "episodes": 2, "return_per_agent": mean,
            "return_std": 0.5, "ci95_low": low, "ci95_high": high, "random_level": random,
            "n_active": n, "iteration": 3, "checkpoint": f"/ck/{trial}"}


def hand_made() -> pd.DataFrame:
    """qmix at N0=5, seeds 0 and 1, played at 5 and 50; mfq at N0=5, one seed."""
    return pd.DataFrame([
        _row("q0", "qmix", 0, 5, 5, 4.0, 1.0), _row("q0", "qmix", 0, 5, 50, 2.0, 0.5),
        _row("q1", "qmix", 1, 5, 5, 6.0, 1.0), _row("q1", "qmix", 1, 5, 50, 4.0, 0.5),
        _row("m0", "mfq", 0, 5, 5, 0.5, 1.0, -1.0, 2.0), _row("m0", "mfq", 0, 5, 50, -1.0, 0.5,
                                                             -3.0, 1.0),
    ], columns=list(zero_shot.COLUMNS))


def test_the_summary_gives_means_over_seeds_intervals_and_transfer_ratios():
    summary = zero_shot.summarize(hand_made()).set_index(["algorithm", "n_played"])
    qmix_small, qmix_large = summary.loc[("qmix", 5)], summary.loc[("qmix", 50)]
    assert qmix_small["mean"] == 5.0 and qmix_large["mean"] == 3.0
    assert qmix_large["seeds"] == 2 and qmix_large["ci_over"] == "seeds"
    expected = stats.t_interval([2.0, 4.0])  # the interval over the seeds' means
    assert [qmix_large["ci95_low"], qmix_large["ci95_high"]] == pytest.approx(expected["ci95"])
    assert qmix_large["std"] == pytest.approx(expected["std"])
    assert qmix_small["transfer_ratio"] == 1.0
    assert qmix_large["transfer_ratio"] == pytest.approx(3.0 / 5.0)
    assert qmix_large["gain_ratio"] == pytest.approx((3.0 - 0.5) / (5.0 - 1.0))
    assert qmix_large["random_level"] == 0.5
    # One seed: its interval over episodes; below random at N0: no gain ratio.
    mfq = summary.loc[("mfq", 50)]
    assert mfq["ci_over"] == "episodes" and (mfq["ci95_low"], mfq["ci95_high"]) == (-3.0, 1.0)
    assert math.isnan(mfq["std"]) and mfq["transfer_ratio"] == pytest.approx(-2.0)
    assert math.isnan(mfq["gain_ratio"])
    shown = zero_shot.shown(zero_shot.summarize(hand_made()))
    assert "variant" not in shown  # no variant: no column
    row = shown[(shown["algorithm"] == "qmix") & (shown["N played"] == 50)].iloc[0]
    assert row["return per agent [95% CI]"] == stats.format_mean(
        3.0, low=expected["ci95"][0], high=expected["ci95"][1])
    assert row["transfer ratio"] == "+0.60" and row["gain over random kept"] == "+0.62"


def test_a_zero_return_at_the_trained_n_gives_no_ratio():
    table = hand_made()
    table.loc[table["algorithm"] == "qmix", "return_per_agent"] = [0.0, 1.0, 0.0, 1.0]
    summary = zero_shot.summarize(table).set_index(["algorithm", "n_played"])
    assert math.isnan(summary.loc[("qmix", 50), "transfer_ratio"])


def test_the_transfer_figure_is_drawn_from_a_synthetic_table(tmp_path):
    rows = []
    for algorithm, n0, slope in (("qmix", 5, -0.3), ("mfqmix", 5, -0.1), ("qmix", 25, -0.2)):
        for seed in (0, 1, 2):
            for n in sorted({5, 25, 100, 1000, n0}):
                mean = 3.0 + slope * math.log(n / n0) + 0.2 * seed
                rows.append(_row(f"{algorithm}{n0}_{seed}", algorithm, seed, n0, n, mean,
                                 -1.0 + 0.1 * math.log(n)))
    summary = zero_shot.summarize(pd.DataFrame(rows, columns=list(zero_shot.COLUMNS)))
    summary["spread"] = stats.half_width(summary["std"], summary["seeds"], "std")
    direct = pd.DataFrame({"algorithm": ["qmix", "qmix", "mfqmix"], "variant": ["", "", ""],
                           "n_agents": [5, 25, 5], "mean": [3.1, 2.4, 2.9]})
    path = figures.transfer(summary, direct, "final greedy return", "std over seeds",
                            tmp_path / "transfer.png")
    pixels = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 600
    assert pixels.var() > 100 and (pixels < 128).mean() > 0.01  # lines, text and axes
    # A policy of a variant with no transfer line (here qmix on the averaged reward, far below
    # every line) gets no star: it would read as the summed-reward qmix line's own.
    other = pd.concat([direct, pd.DataFrame({"algorithm": ["qmix"], "variant": ["mean"],
                                             "n_agents": [25], "mean": [-40.0]})])
    again = figures.transfer(summary, other, "final greedy return", "std over seeds",
                             tmp_path / "again.png")
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(path)))


# ---- bad input, on a sweep directory of fake checkpoints --------------------------------------
def _metadata(algorithm: str, n: int, opponent: str = "random") -> dict:
    """A checkpoint's marlscale_checkpoint.json as a smoke trial writes it (pursuit, map 14)."""
    env = {"game": "adversarial_pursuit", "n_agents": n, "map_size": 14, "max_cycles": 50,
           "opponent": opponent}
    model = {"algorithm": algorithm, "mixer": "qmix", "target": "double_q", "mean_action": None,
             "hidden": 32, "embedding_dim": 16, "mixing_embed_dim": 32, "hypernet_embed": 64}
    return {"format": 1, "iteration": 3, "env": "marlscale/adversarial_pursuit",
            "env_config": env, "curriculum": {"config": {"schedule": "none"}, "state": {}},
            "n_active": {"predator": n},
            "teams": {"predator": {"algorithm": algorithm, "model_config": model,
                                   "n_actions": 13,
                                   "observation_shapes": {"views": [n, 10, 10, 5],
                                                          "state": [8, 8, 5]}}},
            "files": {runfiles.CHECKPOINT_MARKER: 2}}


def fake_sweep(root, status: str = "TERMINATED", spec_file=SMOKE):
    """A sweep run dir whose trials each hold a checkpoint of JSON only (never unpickled)."""
    run_dir = root / "sweep"
    run_dir.mkdir()
    shutil.copy(spec_file, run_dir / runfiles.SWEEP_SPEC)
    spec = SweepSpec.load(spec_file)
    rows = []
    for point in spec.points():
        name = spec.trial_name(point)
        checkpoint = run_dir / name / "checkpoint_000002"
        checkpoint.mkdir(parents=True)
        (run_dir / name / runfiles.PARAMS_JSON).write_text(
            json.dumps({SPEC_KEY: spec.to_dict(), **point}))
        (checkpoint / runfiles.CHECKPOINT_MARKER).write_text("{}")
        algorithm = point.get("algorithm") or point["pair"][0]
        opponent = "learned" if "pair" in point else "random"
        (checkpoint / runfiles.CHECKPOINT_META).write_text(
            json.dumps(_metadata(algorithm, point.get("n_agents", 4), opponent)))
        rows.append({"trial": name, "status": status})
    pd.DataFrame(rows).to_csv(run_dir / runfiles.TRIALS_CSV, index=False)
    return run_dir


def test_a_fake_sweep_prepares_every_trial_at_every_n_and_its_own(tmp_path):
    run_dir = fake_sweep(tmp_path)
    prepared = zero_shot.ZeroShot.prepare(run_dir, [3, 8], episodes=2)
    plays = {(p.trial.name, p.n_played) for p in prepared.plays}
    assert len(plays) == 4 * 2 + 4 * 3  # N=3 trials at 3, 8; N=5 trials at 3, 5, 8
    assert {p.trial.n_trained for p in prepared.plays} == {3, 5}
    assert sorted(len(group) for group in prepared.groups()) == [4, 8, 8]  # one env per N
    assert prepared.out == run_dir / runfiles.ZERO_SHOT_DIR and not prepared.out.exists()
    default = zero_shot.ZeroShot.prepare(run_dir, None, episodes=2)
    assert default.sizes == (3, 5)  # the sweep's own N


def test_unfinished_trials_are_left_out_and_named(tmp_path):
    run_dir = fake_sweep(tmp_path)
    trials = pd.read_csv(run_dir / runfiles.TRIALS_CSV)
    trials.loc[0, "status"] = "RUNNING"
    trials.to_csv(run_dir / runfiles.TRIALS_CSV, index=False)
    found, skipped = zero_shot.find_trials(run_dir)
    assert len(found) == 7
    assert skipped == [{"trial": trials.loc[0, "trial"],
                        "reason": "not finished: status RUNNING"}]


H2H = """experiment: h2h
game: battle
env_config: {opponent: learned, max_cycles: 30}
grid:
  pair: [[qmix, mfq]]
  n_agents: [4]
stop: {iterations: 2}
"""


@pytest.mark.parametrize("case, expected", [
    ("letter", "--n-agents '3,x' is invalid: 'x' is not an integer >= 1; allowed: an integer "
               ">= 1, or a comma-separated list of them (e.g. 25,100,1000)"),
    ("zero", "--n-agents '3,0' is invalid: '0' is not an integer >= 1"),
    ("empty", "--n-agents ',' is invalid: it names no N"),
    ("blank", "--n-agents '' is invalid: it names no N"),
    ("map_rules", "--n-agents 1000 is invalid for '"),
    ("unfinished", "has no finished trial with a final checkpoint (mfqmix_N3_seed0: not "
                   "finished: status RUNNING"),
    ("no_trials_csv", f"not finished: not in {runfiles.TRIALS_CSV} (the sweep has not "
                      "finished)"),
    ("head_to_head", "holds head-to-head trials (qmix-vs-mfq_N4); allowed: a sweep whose "
                     "policies were trained against the random team"),
    ("opponent", "--opponent 'elsewhere' is invalid with a sweep run directory"),
    ("side", "--side 'prey' is invalid with a sweep run directory"),
    ("list_on_a_checkpoint", "--n-agents '3,8' is invalid for a checkpoint; allowed: one N"),
    ("out_on_a_checkpoint", "is invalid for a checkpoint; allowed: --out with a sweep run "
                            "directory"),
    ("out_is_a_file", "cannot be written"),
])
def test_bad_zero_shot_input_is_one_line_before_ray_and_writes_nothing(
        case, expected, tmp_path, capsys, monkeypatch):
    started = record_ray_starts(monkeypatch)
    if case == "head_to_head":
        (tmp_path / "h2h.yaml").write_text(H2H)
        run_dir = fake_sweep(tmp_path, spec_file=tmp_path / "h2h.yaml")
    else:
        run_dir = fake_sweep(tmp_path, status="RUNNING" if case == "unfinished" else
                             "TERMINATED")
    if case == "no_trials_csv":
        (run_dir / runfiles.TRIALS_CSV).unlink()
    (tmp_path / "a_file").write_text("")
    out = tmp_path / "out"
    args = {
        "letter": ["--n-agents", "3,x"], "zero": ["--n-agents", "3,0"],
        "empty": ["--n-agents", ","], "blank": ["--n-agents", ""],
        "map_rules": ["--n-agents", "3,1000"], "unfinished": ["--n-agents", "3"],
        "no_trials_csv": ["--n-agents", "3"], "head_to_head": ["--n-agents", "8"],
        "opponent": ["--n-agents", "3", "--opponent", "elsewhere"],
        "side": ["--n-agents", "3", "--side", "prey"],
        "list_on_a_checkpoint": ["--n-agents", "3,8"], "out_on_a_checkpoint": [],
        "out_is_a_file": ["--n-agents", "3", "--out", str(tmp_path / "a_file" / "zs")],
    }[case]
    target = next(run_dir.glob("qmix_N3_seed0*")) if case.endswith("on_a_checkpoint") \
        else run_dir
    if "--out" not in args:
        args += ["--out", str(out)]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["evaluate", str(target), *args]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert err.count("\n") == 1 and "Traceback" not in err and not started
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before

