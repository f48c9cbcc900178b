"""Sweep spec validation (no Ray): every error names the file, the key path and the value."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from marlscale.cli import main
from marlscale.runspec import SpecError, SweepSpec

SPECS = Path(__file__).resolve().parents[2] / "tune_specs"
GOOD = {
    "experiment": "t",
    "game": "adversarial_pursuit",
    "env_config": {"max_cycles": 50},
    "training": {"rollout_length": 50},
    "grid": {"algorithm": ["qmix", "mfqmix"], "n_agents": [3, 5], "seed": [0, 1]},
    "stop": {"iterations": 3},
}


def spec_with(**changes) -> dict:
    values = copy.deepcopy(GOOD)
    for path, value in changes.items():
        tree = values
        keys = path.split("__")
        for key in keys[:-1]:
            tree = tree.setdefault(key, {})
        if value is KeyError:
            del tree[keys[-1]]
        else:
            tree[keys[-1]] = value
    return values


def test_a_good_spec_expands_to_the_grid_product():
    spec = SweepSpec.from_dict(GOOD, source="good.yaml")
    points = spec.points()
    assert len(points) == 8 and points[0] == {"algorithm": "qmix", "n_agents": 3, "seed": 0}
    trial = spec.train_spec(points[-1])
    assert trial.training["algorithm"] == "mfqmix" and trial.env_config["n_agents"] == 5
    assert trial.seed == 1 and trial.env_config["max_cycles"] == 50
    assert spec.group(points[-1]) == "t/mfqmix/adversarial_pursuit/N5"
    assert spec.trial_name(points[-1]) == "mfqmix_N5_seed1"


def test_further_axes_reach_env_training_and_curriculum_and_split_groups():
    spec = SweepSpec.from_dict(spec_with(grid__env_config_reward_mode=None) | {
        "grid": {"algorithm": ["mfq"], "n_agents": [4], "seed": [0, 1],
                 "env_config.reward_mode": ["team", "individual"],
                 "training.curriculum.schedule": ["none", "linear"]},
    })
    point = spec.points()[-1]
    trial = spec.train_spec(point)
    assert trial.env_config["reward_mode"] == "individual"
    assert trial.training["curriculum"] == {"schedule": "linear"}
    assert spec.group(point) == ("t/mfq/adversarial_pursuit/N4/reward_mode=individual/"
                                 "schedule=linear")


@pytest.mark.parametrize("values, message", [
    (spec_with(colour="red"), "bad.yaml: key 'colour' is unknown; allowed: experiment"),
    (spec_with(experiment=KeyError), "bad.yaml: key 'experiment' is missing"),
    (spec_with(experiment="a b"), "bad.yaml: experiment='a b' is invalid"),
    (spec_with(game="tag"), "bad.yaml: game='tag' is invalid; allowed: adversarial_pursuit"),
    (spec_with(grid={}), "bad.yaml: grid={} is invalid; allowed: a mapping of axes"),
    (spec_with(grid__n_agents=[]), "bad.yaml: grid.n_agents=[] is invalid; allowed: a "
                                   "non-empty list"),
    (spec_with(grid__n_agents=5), "bad.yaml: grid.n_agents=5 is invalid; allowed: a non-empty"),
    (spec_with(grid__seed=[0, 0]), "bad.yaml: grid.seed=[0, 0] is invalid; allowed: a list "
                                   "without repeated"),
    (spec_with(grid__lr=[0.1]), "bad.yaml: key 'grid.lr' is unknown; allowed: algorithm"),
    (spec_with(grid__n_agents=["five"]), "bad.yaml: grid point (algorithm='qmix', "
                                         "n_agents='five', seed=0): env config: n_agents='five' is "
                                         "invalid; allowed: an integer >= 1"),
    (spec_with(grid__algorithm=["qmix", "maddpg"]), "algorithm='maddpg' is invalid; allowed:"),
    (spec_with(env_config__n_agents=4), "bad.yaml: grid.n_agents=[3, 5] is invalid; allowed: "
                                        "an axis not also fixed at 'env_config.n_agents'=4"),
    (spec_with(env_config__speed=3), "bad.yaml: key 'env_config.speed' is unknown"),
    (spec_with(training__lr="fast"), "bad.yaml: grid point (algorithm='qmix', n_agents=3, "
                                     "seed=0): lr='fast' is invalid"),
    (spec_with(training__learning_rate=1), "bad.yaml: key 'training.learning_rate' is unknown"),
    (spec_with(stop={}), "bad.yaml: stop={} is invalid; allowed: at least one of iterations"),
    (spec_with(stop__episodes=3), "bad.yaml: key 'stop.episodes' is unknown"),
    (spec_with(stop__iterations=0),
     "bad.yaml: stop.iterations=0 is invalid; allowed: a finite number"),
    (spec_with(resources__num_cpus=0),
     "resources.num_cpus=0 is invalid; allowed: a finite number > 0"),
    (spec_with(resources__cpus=1), "bad.yaml: key 'resources.cpus' is unknown; allowed: "
                                   "num_cpus"),
    (spec_with(max_failures=-1), "bad.yaml: max_failures=-1 is invalid; allowed: an integer"),
    (spec_with(wandb__mode="cloud"), "bad.yaml: wandb.mode='cloud' is invalid; allowed: auto"),
    (spec_with(wandb__api_key="x"), "bad.yaml: key 'wandb.api_key' is unknown"),
    # Impossible combinations, found by expanding every grid point:
    (spec_with(training__curriculum={"schedule": "linear", "start": 4}),
     "bad.yaml: grid point (algorithm='qmix', n_agents=3, seed=0): curriculum.start=4 is "
     "invalid; allowed: 1..3"),
    (spec_with(training__opponent_algorithm="qmix"),
     "opponent_algorithm='qmix' is invalid with env opponent='random'"),
    (spec_with(env_config__map_size=4), "grid point (algorithm='qmix', n_agents=3, seed=0): "
                                        "env config: map_size=4 is invalid; allowed: an integer "
                                        ">= 7"),
])
def test_bad_specs_fail_naming_file_key_and_value(values, message):
    with pytest.raises(SpecError) as error:
        SweepSpec.from_dict(values, source="bad.yaml")
    assert message in str(error.value)


def test_a_missing_or_broken_file_is_named(tmp_path):
    with pytest.raises(SpecError, match="nope.yaml: the spec file does not exist"):
        SweepSpec.load(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("grid: [unclosed\n")
    with pytest.raises(SpecError, match="broken.yaml: not valid YAML"):
        SweepSpec.load(broken)


STUDY_SWEEPS = [p for p in sorted(SPECS.glob("study/*.yaml")) if not p.name.startswith("c4_")]
"""The studies' sweep specs (c4_*.yaml are league specs: tests/unit/test_league.py)."""


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")) + STUDY_SWEEPS,
                         ids=lambda p: p.name)
def test_every_shipped_sweep_spec_is_valid(path):
    spec = SweepSpec.load(path)
    assert spec.points() and all(spec.train_spec(p) for p in spec.points())


def test_the_cli_rejects_a_bad_spec_before_ray_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(spec_with(grid__n_agents=[])))
    run_dir = tmp_path / "out"
    assert main(["sweep", str(bad), "--run-dir", str(run_dir)]) == 2
    assert "grid.n_agents=[] is invalid" in capsys.readouterr().err
    assert not run_dir.exists()
    assert main(["sweep", "--resume", str(tmp_path)]) == 2
    assert "--resume" in capsys.readouterr().err and not run_dir.exists()
    run_dir.mkdir()
    (run_dir / "keep.txt").write_text("x")
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(GOOD))
    assert main(["sweep", str(good), "--run-dir", str(run_dir)]) == 2
    assert "a new or empty folder" in capsys.readouterr().err
    assert sorted(p.name for p in run_dir.iterdir()) == ["keep.txt"]


ABLATION = {**GOOD, "grid": {"variant": ["baseline", "mean"], "seed": [0, 1]},
            "variants": {"baseline": {}, "mean": {"training.team_reward": "mean",
                                                  "env_config.state_grid": 16}}}


def test_variants_set_their_settings_one_factor_at_a_time():
    spec = SweepSpec.from_dict(ABLATION, source="ablation.yaml")
    points = spec.points()
    assert [p["variant"] for p in points] == ["baseline", "baseline", "mean", "mean"]
    base, mean = spec.train_spec(points[0]), spec.train_spec(points[2])
    assert "team_reward" not in base.training and mean.training["team_reward"] == "mean"
    assert mean.env_config["state_grid"] == 16 and mean.training["rollout_length"] == 50
    assert spec.trial_name(points[2]) == "variant-mean_seed0"
    assert spec.group(points[2]).endswith("/variant=mean")


@pytest.mark.parametrize("changes, expected", [
    ({"grid": {"variant": ["nope"]}}, "grid.variant='nope' is invalid; allowed: names defined "
                                      "under 'variants' (baseline, mean)"),
    ({"variants": {"baseline": {}, "mean": {"training.speed": 1}}},
     "key 'variants.mean.training.speed' is unknown; allowed: env_config.<field>"),
    ({"variants": {"baseline": {}, "mean": {"seed": 3}}},
     "variants.mean.seed=3 is invalid; allowed: a setting no grid axis sets (grid.seed does)"),
    ({"variants": {"baseline": {}, "mean": "fast"}}, "variants.mean='fast' is invalid"),
    ({"grid": {"seed": [0]}}, "variants=['baseline', 'mean'] is invalid; allowed: used by a "
                              "'grid.variant' axis"),
    ({"variants": {"baseline": {}, "mean": {"training.lr": float("nan")}}},
     "grid point (variant='mean', seed=0): lr=nan is invalid"),
])
def test_bad_variants_name_the_key_the_value_and_what_is_allowed(changes, expected):
    with pytest.raises(SpecError, match=None) as error:
        SweepSpec.from_dict({**ABLATION, **changes}, source="ablation.yaml")
    assert expected in str(error.value), str(error.value)


def test_the_ablation_specs_are_valid():
    for path in sorted((SPECS / "ablations").glob("*.yaml")):
        assert SweepSpec.load(path).points()
