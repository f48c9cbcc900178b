"""Every bad env config raises ValueError naming key, value and what is allowed."""

import pytest
from marlscale.envs import ENV_NAMES, MagentTeamEnv, TeamEnvConfig, make_env

BAD = [
    ({"game": "tiger_deer"}, "game", "'tiger_deer'", "adversarial_pursuit"),
    ({"n_agents": 0}, "n_agents", "0", ">= 1"),
    ({"n_agents": -3}, "n_agents", "-3", ">= 1"),
    ({"n_agents": 2.5}, "n_agents", "2.5", "integer"),
    ({"n_agents": True}, "n_agents", "True", "integer"),
    ({"n_agents": 200, "map_size": 20}, "n_agents", "200", "at most"),
    ({"game": "battle", "n_agents": 30, "map_size": 20}, "n_agents", "30", "at most"),
    ({"n_agents": 4, "n_opponents": 500, "map_size": 20}, "n_agents/n_opponents", "500", "prey"),
    ({"reward_mode": "shared"}, "reward_mode", "'shared'", "individual"),
    ({"opponent": "scripted"}, "opponent", "'scripted'", "learned"),
    ({"neighbourhood_fraction": 0.0}, "neighbourhood_fraction", "0.0", "(0, 1]"),
    ({"neighbourhood_fraction": 1.5}, "neighbourhood_fraction", "1.5", "(0, 1]"),
    ({"neighbourhood_fraction": float("nan")}, "neighbourhood_fraction", "nan", "(0, 1]"),
    ({"neighbourhood_fraction": "ten"}, "neighbourhood_fraction", "'ten'", "(0, 1]"),
    ({"map_size": 5}, "map_size", "5", ">= 7"),
    ({"game": "battle", "map_size": 10}, "map_size", "10", ">= 12"),
    ({"n_active": 30}, "n_active", "30", "0..n_agents"),
    ({"max_cycles": 1}, "max_cycles", "1", ">= 2"),
    ({"state_grid": 0}, "state_grid", "0", ">= 1"),
    ({"wall_density": 1.2}, "wall_density", "1.2", "[0, 1)"),
    ({"rewards": {"kill_reward": 3}}, "rewards.kill_reward", "3", "tag_penalty"),
    ({"game": "battle", "rewards": {"tag_penalty": -1}}, "rewards.tag_penalty", "-1",
     "step_reward"),
    ({"rewards": {"tag_penalty": "low"}}, "rewards.tag_penalty", "'low'", "a finite number"),
    ({"rewards": {"tag_penalty": float("nan")}}, "rewards.tag_penalty", "nan", "a finite number"),
    ({"mean_actions": "yes"}, "mean_actions", "'yes'", "true, false"),
    ({"n_agent": 5}, "n_agent", "5", "allowed keys"),
]


@pytest.mark.parametrize("values, key, value, allowed", BAD)
def test_bad_config_names_key_value_and_allowed(values, key, value, allowed):
    with pytest.raises(ValueError) as error:
        TeamEnvConfig.from_dict(values)
    message = str(error.value)
    assert key in message and value in message and allowed in message, message


@pytest.mark.parametrize("values, key, value, allowed", BAD[:6])
def test_env_raises_before_building_anything(values, key, value, allowed, monkeypatch):
    import magent2

    def no_engine(*args, **kwargs):
        raise AssertionError("the engine was built before the config was validated")

    monkeypatch.setattr(magent2, "GridWorld", no_engine)
    with pytest.raises(ValueError, match=key):
        MagentTeamEnv(values)


def test_registered_creator_rejects_other_game():
    with pytest.raises(ValueError, match="game='battle'"):
        make_env("adversarial_pursuit")({"game": "battle"})
    assert ENV_NAMES == {
        "adversarial_pursuit": "marlscale/adversarial_pursuit",
        "battle": "marlscale/battle",
    }


def test_defaults_follow_magent2_density():
    assert TeamEnvConfig(n_agents=25).resolved_map_size == 45  # 25 predators, 50 prey
    assert TeamEnvConfig(n_agents=25).team_counts == (25, 50)
    assert TeamEnvConfig(game="battle", n_agents=64).resolved_map_size == 40
    assert TeamEnvConfig(game="battle", n_agents=64).team_counts == (64, 64)
    assert TeamEnvConfig(game="battle").resolved_max_cycles == 1000
    assert TeamEnvConfig().resolved_max_cycles == 500
