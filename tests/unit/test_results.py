"""results.csv / trials.csv of a head-to-head sweep: each row says who played whom."""

import json

import pandas as pd
from marlscale.runspec.sweep import SPEC_KEY, SweepSpec
from marlscale.sweeps import results


def _head_to_head_trial(run_dir, red_return, blue_return):
    spec = SweepSpec.from_dict({
        "experiment": "h2h", "game": "battle", "env_config": {"opponent": "learned"},
        "grid": {"algorithm": ["qmix"], "training.opponent_algorithm": ["mfq"],
                 "n_agents": [4]},
        "stop": {"iterations": 2}, "wandb": {"mode": "disabled"},
    })
    point = spec.points()[0]
    trial = run_dir / "qmix_mfq_N4_0001"
    trial.mkdir(parents=True)
    (trial / "params.json").write_text(json.dumps({SPEC_KEY: spec.to_dict(), **point}))
    rows = []
    for iteration in (1, 2):
        rows.append({
            "trial_id": "0001", "training_iteration": iteration,
            "env_steps_sampled_lifetime": 100 * iteration,
            "teams": {"red": {"algorithm": "qmix"}, "blue": {"algorithm": "mfq"}},
            "episodes": {
                "red": {"return_per_agent": red_return,
                        "reward_difference": red_return - blue_return},
                "blue": {"return_per_agent": blue_return,
                         "reward_difference": blue_return - red_return},
            },
            "reward_difference": red_return - blue_return,
        })
    (trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return spec


def test_trials_csv_reports_the_learning_team_and_both_sides(tmp_path):
    # Blue sorts before red: the old table took blue's return as the trial's.
    spec = _head_to_head_trial(tmp_path, red_return=3.0, blue_return=-5.0)
    results.write_tables(tmp_path, spec.axes)
    trial = pd.read_csv(tmp_path / "trials.csv").iloc[0]
    assert trial["team"] == "red"
    assert trial["return_per_agent"] == 3.0
    assert trial["reward_difference"] == 8.0
    assert (trial["red_algorithm"], trial["blue_algorithm"]) == ("qmix", "mfq")
    assert (trial["red_return_per_agent"], trial["blue_return_per_agent"]) == (3.0, -5.0)
    rows = pd.read_csv(tmp_path / "results.csv")
    assert len(rows) == 2
    for column, value in (("teams/red/algorithm", "qmix"), ("teams/blue/algorithm", "mfq"),
                          ("episodes/red/return_per_agent", 3.0),
                          ("episodes/blue/return_per_agent", -5.0),
                          ("reward_difference", 8.0)):
        assert rows[column].tolist() == [value, value]
