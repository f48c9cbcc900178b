"""Divergence that stays finite (issue #25): agents' Q-values beyond what the rewards allow,
or a saturated mixer, fail the run as a NaN does: exit 1, one line naming the term, the value,
the bound and the iteration, and nothing that looks like a result. (The lr=1e6 run below
replaced test_cli.py's lr=1e6 + mixer_lr=1e6 run, which now stops at the same bound.)"""

import re

import pytest
from cli_helpers import ROOT, marlscale
from marlscale.algorithms import learner
from marlscale.algorithms.algorithm import UPDATES
from marlscale.algorithms.learner import DivergenceError
from test_learners_rllib import spec

pytestmark = pytest.mark.integration


def test_a_finite_divergence_fails_loudly_naming_the_term_value_bound_and_iteration(tmp_path):
    """lr=1e6 alone (QMIX's mixer keeps its own lr): the agents' weights explode while the
    ELU-saturated mixer keeps q_mean and the TD loss small and finite."""
    run_dir = tmp_path / "run"
    done = marlscale("train", ROOT / "tune_specs" / "train" / "qmix_pursuit_small.yaml",
                     "--set", "lr=1e6", "--iterations", "40", "--wandb-mode", "disabled",
                     "--run-dir", run_dir)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if "marlscale: error:" in line]
    assert errors == [done.stderr.strip().splitlines()[-1]], done.stderr[-3000:]
    match = re.fullmatch(
        r"marlscale: error: q_abs_max=(\S+) at iteration (\d+) \(team predator, qmix\): "
        r"training diverged\. The agents' Q-values are beyond the bound 640 = 10 x "
        r"max\|team reward per step\| 3\.2 / \(1 - gamma 0\.95\) that the rewards allow\. "
        r"This is deterministic: .*a smaller lr, now 1000000\.0.*", errors[0])
    assert match, errors[0]
    assert 640 < float(match[1]) < float("inf") and 1 <= int(match[2]) < 40
    assert "Traceback" not in done.stderr and "Gradients" not in done.stderr
    # Nothing that looks like a valid result: no result.json, metrics.csv, checkpoint, report.
    assert not (run_dir / "result.json").exists() and not (run_dir / "metrics.csv").exists()
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "report").exists()


def test_a_saturated_mixer_fails_the_run_after_a_window_of_updates(ray_local):
    """A QMIX mixer whose first layer sits deep in the ELU's flat part (slope dQ_tot/dQ_i
    exactly 0) gives the agents no gradient and never recovers: the run fails once
    DEAD_MIXER_UPDATES updates in a row saw it, not before."""
    algo = spec("adversarial_pursuit", "qmix").algorithm_config().build_algo()
    try:
        mixer = algo.learner_module("predator").mixer
        mixer.hyper_b1.bias.data.fill_(-1e3)  # pre-activations << -104: exp underflows to 0
        updates, failure = 0, None
        for _ in range(4 * learner.DEAD_MIXER_UPDATES):
            try:
                updates = algo.train()[UPDATES]
            except DivergenceError as error:
                failure = str(error)
                break
        assert failure is not None
        # it fails on the 50th update (5 an iteration): the last whole iteration had 45-49
        assert learner.DEAD_MIXER_UPDATES - 5 <= updates < learner.DEAD_MIXER_UPDATES
        assert re.match(r"mixer_gain=0 at iteration \d+ \(team predator, qmix\): training "
                        r"diverged\. The mixer's slope dQ_tot/dQ_i stayed below the bound "
                        r"1e-06 for 50 updates in a row", failure), failure
    finally:
        algo.stop()


def test_a_non_finite_value_still_fails_first_and_names_itself(ray_local):
    """The bound's check shares the one sync with the finiteness checks: a NaN is named as
    itself (the CLI tests' lr=1e6 runs now stop at the bound, before anything is NaN)."""
    algo = spec("battle", "qmix").algorithm_config().build_algo()
    try:
        algo.learner_module("red").mixer.value[-1].bias.data.fill_(float("nan"))
        with pytest.raises(DivergenceError, match=r"^q_mean=nan at iteration 1 \(team red, "
                                                  r"qmix\): training diverged\. This is "):
            for _ in range(3):
                algo.train()
    finally:
        algo.stop()
