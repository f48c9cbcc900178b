"""Trained teams outside Ray: exported by `marlscale export` and played in MAgent2's own
PettingZoo envs (`adversarial_pursuit_v4`, `battle_v4`: default constructors, a map size of
ours), with no marlscale env in the loop.

Budgets and thresholds. The policies are the learning tests' own (conftest.py, trained once
per session): QMIX pursuit, 4 predators, 8,000 env steps; QMIX battle, 12 v 12, 4,000 env
steps. Each plays EPISODES seeded episodes of magent2's env against the random other team; the
same seats played uniformly at random on the same seeds are the baseline. The return per agent
of the policy's team minus the random team's in the same seat, per episode, must average at
least MARGIN, with its 95% Student-t interval above 0. Measured on 2 cores (issue #30): pursuit
+196 per predator (95% CI +165 to +227, 10 episodes), battle +35.3 per red agent (+34.8 to +35.9).
"""

import ast
import contextlib
import io
import json
import re

import marlscale.policy as mp
import numpy as np
import pytest
import torch
from cli_helpers import ROOT
from magent2.environments import adversarial_pursuit_v4, battle_v4
from marlscale import stats
from marlscale.cli import main

pytestmark = pytest.mark.learning

EPISODES = 5
GAMES = {
    # fixture, magent2 env, map size (magent2's placement gives the trained N), side, margin
    "adversarial_pursuit": ("pursuit_run", adversarial_pursuit_v4, 18, "predator", 50.0),
    "battle": ("battle_run", battle_v4, 20, "red", 10.0),
}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Acting is a few small matmuls a step: one thread is fastest (on a busy 2-core machine,
    10x faster than two). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def exported(request, tmp_path_factory):
    """Each game's trained run exported by the CLI: {game: (export path, export summary)}."""
    folder = tmp_path_factory.mktemp("exports")
    made = {}
    for game, (fixture, *_) in GAMES.items():
        run_dir, _ = request.getfixturevalue(fixture)
        out = folder / f"{game}.pt"
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert main(["export", str(run_dir), "--out", str(out)]) == 0
        made[game] = out, json.loads(printed.getvalue())
    return made


def episode(env, seed: int, side: str, policy: mp.Policy | None) -> dict[str, float]:
    """One seeded episode of a magent2 parallel env: `side` played by `policy` (None: at
    random), the other side at random; each team's return per agent."""
    teams = mp._team_names(env.unwrapped)
    opponents, seat = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2])
    returns = dict.fromkeys(teams, 0.0)
    observations, _ = env.reset(seed=seed)
    while env.agents:
        mine = [a for a in env.agents if a.startswith(f"{side}_")]
        actions = policy.act(observations, env, side=side) if policy else \
            {a: int(seat.integers(env.action_space(a).n)) for a in mine}
        actions.update({a: int(opponents.integers(env.action_space(a).n))
                        for a in env.agents if a not in mine})
        observations, rewards, *_ = env.step(actions)
        for agent, reward in rewards.items():
            returns[agent.rsplit("_", 1)[0]] += reward
    return {team: returns[team] / n for team, n in teams.items()}


@pytest.mark.parametrize("game", GAMES)
def test_an_exported_policy_beats_a_random_team_in_magent2s_own_env(exported, game):
    _, make_env, map_size, side, margin = GAMES[game]
    path, summary = exported[game]
    policy = mp.load(path)
    env = make_env.parallel_env(map_size=map_size)  # magent2's defaults otherwise
    fit = policy.fit(env)
    played = [episode(env, seed, side, policy) for seed in range(EPISODES)]
    random = [episode(env, seed, side, None) for seed in range(EPISODES)]
    other = next(team for team in played[0] if team != side)
    gain = stats.t_interval([p[side] - r[side] for p, r in zip(played, random)])
    versus = stats.t_interval([p[side] - p[other] for p in played])
    print(f"{game}: export {summary['bytes']:,} bytes, loaded in {summary['load_s']:.3f} s, "
          f"Q check {summary['q_check']}; magent2 gave N={fit['n_env']} (trained at "
          f"{fit['n_trained']}); return/agent over {EPISODES} episodes: policy "
          f"{np.mean([p[side] for p in played]):+.2f}, random seat "
          f"{np.mean([r[side] for r in random]):+.2f}; gain {gain['mean']:+.2f} (95% CI "
          f"{gain['ci95'][0]:+.2f} to {gain['ci95'][1]:+.2f}); against the random {other} "
          f"team {versus['mean']:+.2f} (95% CI {versus['ci95'][0]:+.2f} to "
          f"{versus['ci95'][1]:+.2f})")
    assert summary["q_check"]["bitwise"]
    assert fit["n_env"] == fit["n_trained"] and fit["mean_embedding_slots"] == 0
    assert gain["mean"] >= margin and gain["ci95"][0] > 0
    if game == "battle":  # the random team of the same size, on the other side
        assert versus["mean"] >= margin and versus["ci95"][0] > 0


def test_the_quickstart_loop_runs_as_written(exported, tmp_path, monkeypatch):
    """docs/quickstart.md's "Outside Ray" loop, run as written with the battle export as its
    red.pt: the exported red team ends with a higher return than the random blue team."""
    text = (ROOT / "docs" / "quickstart.md").read_text()
    section = text[text.index("## Outside Ray"):]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    assert 12 <= len(code.strip().splitlines()) <= 20
    (tmp_path / "red.pt").write_bytes(exported["battle"][0].read_bytes())
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(code, "docs/quickstart.md", "exec"), {"__name__": "__main__"})
    finally:
        torch.set_num_threads(threads)
    fit, returns = (ast.literal_eval(line) for line in printed.getvalue().splitlines()[-2:])
    print(f"quickstart loop: {fit}, returns {returns}")
    assert fit["n_env"] == 12 and returns["red"] > returns["blue"]
