"""League specs: validated before Ray starts; pairs per game; every committed spec loads."""

from pathlib import Path

import pytest
from marlscale.evaluation.league import LeagueSpec
from marlscale.sweeps.spec import SpecError

SPECS = sorted((Path(__file__).resolve().parents[2] / "tune_specs" / "league").glob("*.yaml"))
BASE = {"experiment": "l", "n_agents": 4, "stop": {"iterations": 2}}


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_committed_league_spec_loads(path):
    spec = LeagueSpec.load(path)
    assert len(spec.sweep_spec().points()) == len(spec.pairs()) * len(spec.seeds)


def test_battle_trains_each_pair_once_and_pursuit_each_order():
    battle = LeagueSpec.from_dict({**BASE, "algorithms": ["qmix", "mfq", "mfqmix"]})
    assert battle.pairs() == [["qmix", "mfq"], ["qmix", "mfqmix"], ["mfq", "mfqmix"]]
    pursuit = LeagueSpec.from_dict({**BASE, "game": "adversarial_pursuit",
                                    "algorithms": ["qmix", "mfq"]})
    assert pursuit.pairs() == [["qmix", "mfq"], ["mfq", "qmix"]]
    trial = battle.sweep_spec().train_spec(battle.sweep_spec().points()[0])
    assert trial.env_config["opponent"] == "learned" and trial.env_config["n_agents"] == 4
    assert (trial.training["algorithm"], trial.training["opponent_algorithm"]) == \
        ("qmix", "mfq")
    assert LeagueSpec.from_dict(BASE).algorithms == ["qmix", "mfq", "mfqmix"]  # the default


@pytest.mark.parametrize("change, expected", [
    ({"algorithms": ["qmix"]}, "algorithms=['qmix'] is invalid; allowed: a list of 2 or more"),
    ({"algorithms": ["qmix", "dqn"]}, "algorithms=['qmix', 'dqn'] is invalid"),
    ({"seeds": []}, "seeds=[] is invalid; allowed: a non-empty list"),
    ({"env_config": {"opponent": "random"}}, "env_config.opponent='random' is invalid; "
                                            "allowed: unset (the league sets it)"),
    ({"training": {"algorithm": "vdn"}}, "training.algorithm='vdn' is invalid"),
    ({"evaluation": {"episodes": 0}}, "evaluation.episodes=0 is invalid; allowed: an integer"),
    ({"evaluation": {"epsilon": float("nan")}}, "evaluation.epsilon=nan is invalid"),
    ({"evaluation": {"games": 3}}, "key 'evaluation.games' is unknown; allowed: episodes"),
    ({"n_agents": 0}, "n_agents=0 is invalid"),
    ({"stop": {"iterations": -1}}, "stop.iterations=-1 is invalid"),
    ({"rounds": 3}, "key 'rounds' is unknown"),
])
def test_bad_league_specs_name_the_key_value_and_what_is_allowed(change, expected):
    with pytest.raises(SpecError) as error:
        LeagueSpec.from_dict({**BASE, **change}, source="league.yaml")
    assert expected in str(error.value) and str(error.value).startswith("league.yaml")


def test_a_win_is_more_survivors_where_anyone_died_else_a_higher_return():
    from marlscale.evaluation.evaluate import outcome

    def team(alive, ret, deaths=None):
        metrics = {"alive": alive, "return_per_agent": ret}
        if deaths is not None:
            metrics["deaths"] = deaths
        return metrics

    assert outcome(team(5, -9.0, deaths=7), team(3, 2.0, deaths=9)) == 1.0  # survivors
    assert outcome(team(5, 1.0, deaths=7), team(5, 2.0, deaths=7)) == 0.0  # tie: the return
    assert outcome(team(12, 1.0, deaths=0), team(12, 1.0, deaths=0)) == 0.5
    # Pursuit: nobody dies, teams differ in size; the return decides, not the head count.
    assert outcome(team(3, 2.0), team(6, -1.0)) == 1.0
    assert outcome(team(6, -1.0), team(3, 2.0)) == 0.0
