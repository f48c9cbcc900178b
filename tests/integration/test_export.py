"""`marlscale export` on real checkpoints (the session's `trained` ones, conftest.py): the file
gives the checkpoint module's Q-values, says what it is, and plays in magent2's own env."""

import json

import marlscale.policy as mp
import numpy as np
import pytest
import torch
from magent2.environments import battle_v4
from marlscale import keys, provenance
from marlscale.algorithms import checkpoints
from marlscale.cli import main
from marlscale.envs import MagentTeamEnv

pytestmark = pytest.mark.integration


def export(capsys, *args) -> tuple[int, dict | str]:
    code = main(["export", *map(str, args)])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else err)


def module_and_policy_q(checkpoint, team: str, policy, seed: int, steps: int):
    """The checkpoint module's and the export's Q-values of the alive agents of `team`, over
    `steps` steps of a seeded random-play episode of the checkpoint's env (both teams acting)."""
    loaded = checkpoints.load(checkpoint)
    module = loaded.policy(team).load_module()
    trained = loaded.n_active[team]
    if trained < module.n_agents:  # the export's rule: untrained slots take the trained mean
        module.grow_embeddings(trained, module.n_agents)
    values = loaded.env_config.to_dict()
    values.update(opponent="learned", n_active=None, mean_actions=True)
    env = MagentTeamEnv(values)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    expected, got = [], []
    for _ in range(steps):
        mine = obs[team]
        slots = np.flatnonzero(mine[keys.ALIVE])
        with torch.no_grad():
            q = module.q_values({k: torch.from_numpy(v[None]) for k, v in mine.items()})
        expected.append(q[0].numpy()[slots])
        means = None if policy.mean_action is None else (
            mine[keys.NEIGHBOUR_MEAN_ACTION][slots] if policy.mean_action == "neighbour" else
            np.repeat(mine[keys.TEAM_MEAN_ACTION][None], len(slots), 0))
        got.append(policy.q_values(mine[keys.VIEWS][slots] / np.float32(255), slots, means))
        obs, _, terminated, truncated, _ = env.step(
            {name: rng.integers(0, space.nvec) for name, space in env.action_spaces.items()})
        if terminated["__all__"] or truncated["__all__"]:
            break
    return np.concatenate(expected), np.concatenate(got)


@pytest.mark.parametrize("case, team, algorithm, slots_trained, mean_action", [
    ("h2h", "blue", "mfq", 4, "team"),  # the opponent team of a head-to-head run
    ("incremental", "red", "qmix", 1, None),  # curriculum stage 0: 1 of 4 slots trained
])
def test_the_export_gives_the_checkpoint_modules_q_values_and_says_what_it_is(
        trained, tmp_path, capsys, case, team, algorithm, slots_trained, mean_action):
    out = tmp_path / f"{case}.pt"
    code, summary = export(capsys, f"{trained[case]}:{team}", "--out", out)
    assert code == 0, summary
    assert summary["q_check"]["bitwise"] and summary["q_check"]["observations"] >= 10
    assert summary["bytes"] == out.stat().st_size and summary["load_s"] > 0
    meta = mp.read_metadata(out)
    assert {key: meta[key] for key in ("kind", "format", "game", "side", "n_agents", "trained",
                                       "view_shape", "n_actions", "algorithm", "mean_action")} \
        == {"kind": mp.KIND, "format": mp.FORMAT, "game": "battle", "side": team, "n_agents": 4,
            "trained": slots_trained, "view_shape": [13, 13, 5], "n_actions": 21,
            "algorithm": algorithm, "mean_action": mean_action}
    assert meta["commit"] == provenance.read(trained[case] / "provenance.json")["commit"]
    assert meta["torch"] == torch.__version__.split("+")[0]
    # Another episode than the export's own check, three times as long.
    expected, got = module_and_policy_q(trained[case], team, mp.load(out), seed=7, steps=30)
    print(f"{case}:{team}: {len(expected)} agent-steps, max |dQ| "
          f"{np.abs(expected - got).max()}, bitwise {np.array_equal(expected, got)}")
    assert np.array_equal(expected, got)


def test_a_team_the_checkpoint_does_not_hold_is_refused_and_nothing_is_written(
        trained, tmp_path, capsys):
    code, err = export(capsys, f"{trained['h2h']}:green", "--out", tmp_path / "p.pt")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "holds no team 'green'; allowed: red, blue" in err
    assert list(tmp_path.iterdir()) == []


def test_an_exported_blue_team_plays_blue_in_battle_v4(trained, tmp_path, capsys):
    code, summary = export(capsys, f"{trained['h2h']}:blue", "--out", tmp_path / "blue.pt")
    assert code == 0
    blue = mp.load(summary["out"])
    env = battle_v4.parallel_env(map_size=15, max_cycles=20)
    fit = blue.fit(env)
    assert fit["side"] == "blue" and fit["n_trained"] == 4
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    steps = 0
    while env.agents:
        actions = blue.act(obs, env)
        assert set(actions) == {a for a in env.agents if a.startswith("blue_")}
        actions.update({a: int(rng.integers(21)) for a in env.agents if a.startswith("red_")})
        obs, *_ = env.step(actions)
        steps += 1
    assert steps == 20
