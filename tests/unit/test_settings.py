"""The typed training settings: one source of defaults, checks that change nothing, the docs
table generated from them, and algorithm declarations that override by name."""

import dataclasses

import pytest
from cli_helpers import ROOT
from marlscale.algorithms import ALGORITHMS, AlgorithmSpec
from marlscale.algorithms.algorithm import TeamQ
from marlscale.algorithms.settings import PER_TEAM, TeamQSettings, markdown_table
from marlscale.runspec import TrainSpec

DOCS = ROOT / "docs" / "algorithms.md"


def docs_table() -> str:
    text = DOCS.read_text()
    start = text.index("<!-- settings table: generated -->\n")
    return text[start:text.index("<!-- settings table: end -->")].split("\n", 1)[1].strip()


def test_the_docs_table_is_the_settings():
    assert docs_table() == markdown_table(), (
        "docs/algorithms.md's settings table drifted from TeamQSettings; regenerate it with "
        "markdown_table()")


def test_every_setting_has_a_type_a_default_and_what_it_allows():
    for f in dataclasses.fields(TeamQSettings):
        assert f.type and f.metadata["kind"] in ("int", "float", "str", "bool", "mapping")
        assert f.default is not dataclasses.MISSING, f.name


def test_validate_changes_nothing():
    config = TeamQ.get_default_config().environment(
        "marlscale/adversarial_pursuit", env_config={"n_agents": 3, "map_size": 15}).team_q(lr=1e-3)
    before = config.to_dict()
    config.validate_team_q()
    assert config.to_dict() == before
    config.validate()  # RLlib's own part sets its `simple_optimizer` flag; nothing else moves
    assert {k: v for k, v in config.to_dict().items() if k != "simple_optimizer"} == \
        {k: v for k, v in before.items() if k != "simple_optimizer"}


def test_scientific_notation_is_a_number_everywhere():
    spec = TrainSpec.from_dict({"training": {"lr": 1e-4, "batch_size": 1e3},
                                "stop": {"iterations": 1}})
    settings = spec.algorithm_config().settings()
    assert settings.lr == 1e-4


def test_integral_floats_become_integers_and_others_are_refused():
    assert TeamQSettings.from_dict({"batch_size": 1e3}).batch_size == 1000
    with pytest.raises(ValueError, match=r"batch_size=12.5 is invalid; allowed: an integer >= 1"):
        TeamQSettings.from_dict({"batch_size": 12.5}).validate()


def test_a_declaration_overrides_per_team_defaults_and_the_user_wins(monkeypatch):
    base = ALGORITHMS["qmix"]
    monkeypatch.setitem(ALGORITHMS, "qmix", AlgorithmSpec(
        name="qmix", summary=base.summary, mixer=base.mixer, mean_action=base.mean_action,
        target=base.target, settings={"team_reward": "mean", "grad_clip": 5.0}))
    env = {"n_agents": 3, "map_size": 15}
    config = TeamQ.get_default_config().environment("marlscale/adversarial_pursuit", env_config=env)
    config.team_q(algorithm="qmix")
    assert config.settings("qmix").team_reward == "mean"
    assert config.get_config_for_module("predator").team_reward == "mean"
    assert config.team_reward == "sum"  # the family's default; the team's is per module
    config.team_q(grad_clip=20.0)
    assert config.settings("qmix").grad_clip == 20.0
    assert config.get_config_for_module("predator").grad_clip == 20.0


def test_declarations_override_only_per_team_settings():
    for spec in ALGORITHMS.values():
        assert set(spec.settings) <= set(PER_TEAM), spec.name
        TeamQSettings(**spec.settings).validate()


@pytest.mark.parametrize("algorithm, opponent, needed", [
    ("qmix", None, False), ("vdn", None, False), ("iql", None, False), ("mfq", None, True),
    ("mfqmix", None, True), ("qmix", "mfqmix", True)])
def test_the_env_computes_mean_actions_only_for_algorithms_that_read_them(algorithm, opponent,
                                                                          needed):
    from marlscale.envs import MagentTeamEnv

    env = {"game": "battle", "n_agents": 3, "map_size": 15, "opponent": "learned"} \
        if opponent else {"n_agents": 3, "map_size": 15}
    config = TeamQ.get_default_config().environment(
        "marlscale/battle" if opponent else "marlscale/adversarial_pursuit", env_config=env
    ).team_q(algorithm=algorithm, opponent_algorithm=opponent)
    config.validate_team_q()
    assert config.env_config["mean_actions"] is needed
    for space in MagentTeamEnv(config.team_env_config).observation_spaces.values():
        assert ("neighbour_mean_action" in space.spaces) is needed


def test_a_mean_field_learner_without_mean_actions_is_refused():
    config = TeamQ.get_default_config().environment(
        "marlscale/adversarial_pursuit", env_config={"n_agents": 3, "mean_actions": False}
    ).team_q(algorithm="mfq")
    with pytest.raises(ValueError, match="env mean_actions=False is invalid with predator's "
                                         "algorithm 'mfq': it takes a mean-action input"):
        config.validate_team_q()
    config.team_q(algorithm="iql")  # the user's choice stays: off for IQL
    config.validate_team_q()
    assert config.env_config["mean_actions"] is False
