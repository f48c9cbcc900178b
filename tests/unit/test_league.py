"""League: specs validated before Ray starts, pairs per game, the cross-play schedule, wins."""

from pathlib import Path

import pytest
from marlscale.evaluation.league import LeagueSpec
from marlscale.runspec.sweep import SpecError

TUNE_SPECS = Path(__file__).resolve().parents[2] / "tune_specs"
SPECS = sorted(TUNE_SPECS.glob("league/*.yaml")) + sorted(TUNE_SPECS.glob("study/c4_*.yaml"))
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


def _member(key, algorithm, team, n_actions, n_agents=3):
    from marlscale.algorithms.checkpoints import TeamPolicy
    from marlscale.evaluation.arena import Contestant
    from marlscale.evaluation.league import Member

    policy = TeamPolicy(team=team, algorithm=algorithm, n_agents=n_agents, n_actions=n_actions,
                        view_shape=(5, 5, 5), mean_action=None, sizes={}, path=Path(key))
    return Member(key=key, seed=0, contestant=Contestant(label=key, policy=policy))


def test_cross_play_schedule_battle_both_sides_pursuit_roles_only():
    from marlscale.evaluation.league import schedule

    battle = [_member("t0:red", "qmix", "red", 21), _member("t0:blue", "mfq", "blue", 21),
              _member("t1:red", "qmix", "red", 21)]
    games = schedule(battle, ["red", "blue"], episodes=2, seed=0, epsilon=0.0,
                     random_opponent=True)
    pairs = {tuple(sorted(g.sides.items())) for g in games}
    # qmix-qmix is not a cross-algorithm matchup; each other pairing on both sides, + random.
    assert (("blue", "t0:blue"), ("red", "t0:red")) in pairs
    assert (("blue", "t0:red"), ("red", "t0:blue")) in pairs
    assert not any(set(g.sides.values()) == {"t0:red", "t1:red"} for g in games)
    assert len(games) == (2 * 2 + 3 * 2) * 2  # 2 matchups x 2 sides + 3 vs random x 2 sides
    assert {g.seed for g in games if g.tags["episode"] == 0} == {games[0].seed}  # same seeds
    pursuit = [_member("t0:predator", "qmix", "predator", 13),
               _member("t0:prey", "mfq", "prey", 9, n_agents=6),
               _member("t1:predator", "mfq", "predator", 13),
               _member("t1:prey", "qmix", "prey", 9, n_agents=6)]
    games = schedule(pursuit, ["predator", "prey"], episodes=1, seed=0, epsilon=0.0,
                     random_opponent=False)
    assert {(g.sides["predator"], g.sides["prey"]) for g in games} == \
        {("t0:predator", "t0:prey"), ("t1:predator", "t1:prey")}


def test_league_intervals_over_seeds_count_each_training_seed_once():
    """Episodes of one policy are not independent runs: with 3 seeds whose policies differ a
    lot, the interval over episodes is narrow and the one over seeds is wide and holds 0."""
    import math

    from marlscale.evaluation.league import tables
    from marlscale.stats import ci_columns
    from scipy import stats

    seed_means = {0: 3.0, 1: -2.0, 2: 0.5}  # qmix's seeds differ; mfq's seeds do not matter
    rows = []
    for seed, mean in seed_means.items():
        for opponent_seed in range(3):
            for episode, noise in enumerate((-0.1, 0.0, 0.1)):
                value = mean + noise
                for algorithm, mine, opponent, theirs, sign in (
                        ("qmix", seed, "mfq", opponent_seed, 1),
                        ("mfq", opponent_seed, "qmix", seed, -1)):  # the same game, mirrored
                    rows.append({
                        "algorithm": algorithm, "side": "red", "seed": mine,
                        "policy": f"{algorithm}{mine}", "opponent_algorithm": opponent,
                        "opponent_policy": f"{opponent}{theirs}", "opponent_seed": theirs,
                        "episode": episode, "reward_difference": sign * value,
                        "return_per_agent": 0.0,
                        "outcome": 1.0 if sign * value > 0 else 0.0})
    out = tables(rows, interchangeable=True)
    cell = out["league"].set_index(["algorithm", "column_algorithm"]).loc[("qmix", "mfq")]
    means = list(seed_means.values())
    centre = sum(means) / 3
    half = stats.t.ppf(0.975, 2) * stats.tstd(means) / math.sqrt(3)
    assert cell["seeds"] == 3
    assert (cell["seed_ci95_low"], cell["seed_ci95_high"]) == \
        pytest.approx((centre - half, centre + half))
    assert cell["seed_ci95_low"] < 0 < cell["seed_ci95_high"]  # no evidence either way
    # The mirror cell: grouped by its column's seeds it is the same interval, negated.
    mirror = out["league"].set_index(["algorithm", "column_algorithm"]).loc[("mfq", "qmix")]
    assert (mirror["seed_ci95_low"], mirror["seed_ci95_high"]) == \
        pytest.approx((-cell["seed_ci95_high"], -cell["seed_ci95_low"]))
    assert cell["ci95_high"] - cell["ci95_low"] < cell["seed_ci95_high"] - cell["seed_ci95_low"]
    assert ci_columns(out["league"])[2] == "seeds" and ci_columns(out["ratings"])[2] == "seeds"
    assert "seed_ci95_low" not in out["matchups"].columns  # one policy pair: one seed
    one_seed = tables([r for r in rows if r["seed"] == 0], interchangeable=True)["league"]
    assert ci_columns(one_seed) == ("ci95_low", "ci95_high", "episodes")
