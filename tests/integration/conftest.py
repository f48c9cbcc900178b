"""Fixtures shared by the integration tests' modules."""

import pytest
from marlscale.runspec import TrainSpec
from marlscale.train import run as train_run

TINY = {"rollout_length": 30, "learning_starts": 30, "batch_size": 8, "hidden": 32,
        "replay_capacity": 500}


def _train(path, game, n_agents, iterations=2, env_config=None, **training):
    spec = TrainSpec.from_dict({
        "env": game, "env_config": {"n_agents": n_agents, "max_cycles": 30, **(env_config or {})},
        "training": {**TINY, **training}, "stop": {"iterations": iterations}, "seed": 1,
        "eval_episodes": 0,
    })
    train_run(spec, path, log=lambda line: None)
    return path


@pytest.fixture(scope="session")
def trained(ray_local, tmp_path_factory):
    """Real checkpoints, trained once per session (evaluation and export tests share them):
    head-to-head battle 4 v 4 (qmix red, mfq blue), battle 6 v 6 against random, pursuit 4
    predators, and an incremental-learning battle run at stage 0 (1 of 4)."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        "h2h": _train(root / "h2h", "battle", 4, env_config={"opponent": "learned"},
                      algorithm="qmix", opponent_algorithm="mfq"),
        "battle6": _train(root / "battle6", "battle", 6, algorithm="vdn"),
        "pursuit": _train(root / "pursuit", "adversarial_pursuit", 4, algorithm="iql",
                          env_config={"map_size": 14}),
        "incremental": _train(root / "incremental", "battle", 4, algorithm="qmix",
                              curriculum={"schedule": "linear", "start": 1, "every": 100}),
    }
