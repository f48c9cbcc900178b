"""Trained runs shared by the learning tests: each trained once per session, on disk (a
`marlscale train` run directory with its checkpoints), so that several tests read one run."""

import pytest
from cli_helpers import ROOT
from marlscale.runspec import TrainSpec
from marlscale.train import run


@pytest.fixture(scope="session")
def pursuit_run(ray_local, tmp_path_factory):
    """tune_specs/train/qmix_pursuit_small.yaml, `make run`'s: QMIX, 4 predators against 8
    random prey on an 18x18 map, 8,000 env steps. (run directory, final summary)."""
    spec = TrainSpec.load(ROOT / "tune_specs" / "train" / "qmix_pursuit_small.yaml")
    run_dir = tmp_path_factory.mktemp("learning") / "pursuit_n4"
    return run_dir, run(spec, run_dir, log=lambda line: None)


@pytest.fixture(scope="session")
def battle_run(ray_local, tmp_path_factory):
    """QMIX, battle 12 v 12 against a random blue team, 100-step episodes, 4,000 env steps
    (the pursuit spec's training settings, half as many updates per env step). (run
    directory, final summary: its greedy evaluation over 5 episodes)."""
    pursuit = TrainSpec.load(ROOT / "tune_specs" / "train" / "qmix_pursuit_small.yaml")
    spec = TrainSpec.from_dict({
        "env": "battle", "env_config": {"n_agents": 12, "max_cycles": 100},
        "training": {**pursuit.training, "updates_per_env_step": 0.5},
        "stop": {"iterations": 40}, "seed": 1,
    })
    run_dir = tmp_path_factory.mktemp("learning") / "battle_n12"
    return run_dir, run(spec, run_dir, log=lambda line: None)
