"""`marlscale.policy`: exported team policies acting in MAgent2's own PettingZoo envs, no Ray.

The lockstep tests run magent2's `parallel_env` (default options, a map size of ours) beside
marlscale's env on the same map: the PettingZoo env places our env's layout, both are seeded
alike and stepped with the same actions. What the exported policy computes from PettingZoo's
dicts must equal what the team module computes from our env's observations, bit for bit: the
view bytes, the mean actions (the team's for MFQ, the neighbourhood's for MFQMIX) and the
Q-values. The modules are untrained (seeded): equality needs no learning.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import zipfile

import marlscale.policy as mp
import numpy as np
import pytest
import torch
from magent2.environments import adversarial_pursuit_v4, battle_v4, battlefield_v5
from marlscale import keys
from marlscale.algorithms.config import module_config
from marlscale.algorithms.settings import TeamQSettings
from marlscale.cli import main
from marlscale.envs import MagentTeamEnv, TeamEnvConfig
from marlscale.envs.global_state import quantize
from marlscale.evaluation.export import export_module
from marlscale.models.team_module import TeamQModule

PETTINGZOO = {"battle": battle_v4, "adversarial_pursuit": adversarial_pursuit_v4}
CASES = {
    # game, algorithm (its mean action), map size (magent2's placement gives the N), fraction
    "battle-mfqmix": ("battle", "mfqmix", 20, 0.3),  # 12 v 12; neighbourhoods of 4 (of 11)
    "pursuit-mfq": ("adversarial_pursuit", "mfq", 18, 0.1),  # 4 predators, 8 prey; team mean
}
STEPS = 200
CHARGE_LEFT = (4, 5)
"""battle's moves by (-2, 0) and (-1, 0): blue's way towards red (x grows to the right)."""


def opponent_action(game: str, space_n: int, rng: np.random.Generator) -> int:
    """The other team: uniformly random in pursuit; in battle a charging blue (towards red
    w.p. 0.4, else a random attack), so that red agents die and the dead-agent path runs."""
    if game == "battle":
        return int(rng.choice(CHARGE_LEFT) if rng.random() < 0.4 else rng.integers(13, 21))
    return int(rng.integers(0, space_n))


def pettingzoo_counts(game: str, map_size: int) -> tuple[int, ...]:
    """The agents per team magent2's own placement gives at this map size."""
    env = PETTINGZOO[game].parallel_env(map_size=map_size)
    return tuple(mp._team_names(env.unwrapped).values())


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Per case: a seeded untrained team module, its env config and its export, loaded."""
    folder = tmp_path_factory.mktemp("exports")
    made = {}
    for case, (game, algorithm, map_size, fraction) in CASES.items():
        counts = pettingzoo_counts(game, map_size)
        config = TeamEnvConfig.from_dict({
            "game": game, "n_agents": counts[0], "n_opponents": counts[1], "map_size": map_size,
            "opponent": "learned", "neighbourhood_fraction": fraction, "seed": 0})
        env = MagentTeamEnv(config)
        team = env.possible_agents[0]
        torch.manual_seed(0)
        module = TeamQModule(observation_space=env.observation_spaces[team],
                             action_space=env.action_spaces[team],
                             model_config=module_config(algorithm, TeamQSettings()))
        module.eval()
        summary = export_module(module, config, team, module.n_agents, folder / f"{case}.pt")
        made[case] = module, config, mp.load(folder / f"{case}.pt"), summary
    return made


def place_layout(raw, layout) -> None:
    """magent2's env places our env's walls and agents (its `generate_map`, on reset)."""
    engine = raw.env
    if len(layout["walls"]):
        engine.add_walls(method="custom", pos=layout["walls"].tolist())
    for handle, team in zip(raw.handles, layout["teams"]):
        positions = team["positions"]
        engine.add_agents(handle, method="custom", pos=np.column_stack(
            [positions, np.zeros(len(positions), np.int32)]))


def module_inputs(obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(value[None]) for key, value in obs.items()}


@pytest.mark.parametrize("case", CASES)
def test_the_pettingzoo_path_gives_our_envs_views_mean_actions_and_q_values(exports, case):
    game, algorithm, map_size, _ = CASES[case]
    module, config, policy, summary = exports[case]
    assert summary["q_check"]["bitwise"] and summary["q_check"]["observations"] > 0
    ours = MagentTeamEnv(config)
    pettingzoo = PETTINGZOO[game].parallel_env(map_size=map_size)  # magent2's defaults
    raw = pettingzoo.unwrapped
    mine, other = ours.possible_agents
    obs, _ = ours.reset(seed=3)
    layout = ours.snapshot()
    raw.generate_map = lambda: place_layout(raw, layout)
    pz_obs, _ = pettingzoo.reset(seed=3)
    # magent2 0.3.4 leaves its team sizes at 0 after a reset, so at the first step the second
    # team would take the first team's actions (docs/export.md): set them as its step does.
    raw.team_sizes = [raw.env.get_num(handle) for handle in raw.handles]
    rng = np.random.default_rng(1)
    kind = module.mean_action
    compared = 0
    for step in range(STEPS):
        names, views, slots, means = policy.observe(pz_obs, pettingzoo)
        alive = np.flatnonzero(obs[mine][keys.ALIVE])
        assert slots.tolist() == alive.tolist(), step
        assert np.array_equal(quantize(views), obs[mine][keys.VIEWS][slots]), step
        expected_means = (obs[mine][keys.NEIGHBOUR_MEAN_ACTION][slots] if kind == "neighbour"
                          else np.broadcast_to(obs[mine][keys.TEAM_MEAN_ACTION], means.shape))
        assert np.array_equal(means, expected_means), step
        assert step == 0 or means.any()  # zero at the first step only: everyone acted since
        with torch.no_grad():
            expected_q = module.q_values(module_inputs(obs[mine]))[0].numpy()[slots]
        assert np.array_equal(policy.q_values(views, slots, means), expected_q), step
        compared += len(slots)

        actions = policy.act(pz_obs, pettingzoo, epsilon=0.5, rng=rng)
        others = {name: opponent_action(game, pettingzoo.action_space(name).n, rng)
                  for name in pz_obs if name.startswith(f"{other}_") and name in raw.agents}
        pz_obs, *_ = pettingzoo.step({**actions, **others})
        team_actions = {}
        for team, chosen in ((mine, actions), (other, others)):
            team_actions[team] = np.zeros(ours.action_spaces[team].shape[0], np.int64)
            for name, action in chosen.items():
                team_actions[team][int(name.rsplit("_", 1)[1])] = action
        obs, _, terminated, truncated, _ = ours.step(team_actions)
        snapshot = ours.snapshot()
        for handle, team in zip(raw.handles, snapshot["teams"]):
            assert np.array_equal(raw.env.get_pos(handle), team["positions"]), step
        if terminated["__all__"] or truncated["__all__"]:
            break
    dead = ours.teams[0].n - int(obs[mine][keys.ALIVE].sum())
    print(f"{case}: {compared} agent-steps compared over {step + 1} steps, {dead} of "
          f"{ours.teams[0].n} {mine} dead at the end; Q-values equal bit for bit")
    assert step == STEPS - 1
    if game == "battle":  # the dead-agent path was taken: agents died during the episode
        assert dead > 0


def test_a_larger_env_plays_the_slots_past_the_trained_ones_with_the_mean_embedding(exports):
    module, _, policy, _ = exports["pursuit-mfq"]  # trained at N = 4 (map 18)
    pettingzoo = adversarial_pursuit_v4.parallel_env(map_size=20)
    assert policy.fit(pettingzoo) == {"side": "predator", "n_env": 5, "n_trained": 4,
                                      "trained_slots": 4, "mean_embedding_slots": 1}
    obs, _ = pettingzoo.reset(seed=0)
    policy.act(obs, pettingzoo)
    obs, *_ = pettingzoo.step({name: 0 for name in pettingzoo.agents})
    names, views, slots, means = policy.observe(obs, pettingzoo)
    assert names == [f"predator_{i}" for i in range(5)] and means.any()
    resized = copy.deepcopy(module)
    resized.resize_agents(5, trained=4)  # what `marlscale evaluate --n-agents 5` plays
    with torch.no_grad():
        expected = resized.q_values({keys.VIEWS: torch.from_numpy(quantize(views)[None]),
                                     keys.TEAM_MEAN_ACTION: torch.from_numpy(means[:1])})
    assert np.array_equal(policy.q_values(views, slots, means), expected[0].numpy())


OUTSIDE = '''
import importlib.abc, importlib.machinery, json, sys
import numpy as np
TRAINING = ("ray",)
ENV_LIBRARIES = ("gymnasium", "magent2", "pettingzoo", "pandas", "scipy", "wandb", "yaml")
OURS = ("marlscale", "marlscale.policy", "marlscale.mean_field")
blocked = set(TRAINING + ENV_LIBRARIES)

class Refused(importlib.abc.Loader):
    def create_module(self, spec):
        raise ImportError(f"forbidden import: {spec.name}")
    def exec_module(self, module):
        pass

class Block(importlib.abc.MetaPathFinder):
    """Importing a forbidden module fails (looking it up, as torch does, still works)."""
    def find_spec(self, name, path, target=None):
        top = name.split(".")[0]
        if top in blocked or (top == "marlscale" and name not in OURS):
            return importlib.machinery.ModuleSpec(name, Refused())

sys.meta_path.insert(0, Block())
report = {}
for name in ("ray", "ray.rllib", "marlscale.algorithms", "marlscale.envs", "magent2"):
    try:
        __import__(name)
        report[name] = "imported"
    except ImportError as error:
        report[name] = str(error)
import marlscale.policy
policy = marlscale.policy.load(sys.argv[1])
batch = np.load(sys.argv[2])
q = policy.q_values(batch["views"], batch["slots"], batch["means"])
report["q_equal"] = bool(np.array_equal(q, batch["q"]))
report["loaded_with"] = sorted(m.split(".")[0] for m in sys.modules
                               if m.split(".")[0] in ENV_LIBRARIES + TRAINING)
report["marlscale"] = sorted(m for m in sys.modules if m.split(".")[0] == "marlscale")
blocked -= set(ENV_LIBRARIES)  # acting needs the user's env: magent2, pettingzoo, gymnasium
from magent2.environments import battle_v4
env = battle_v4.parallel_env(map_size=20, max_cycles=5)
obs, _ = env.reset(seed=0)
rng = np.random.default_rng(0)
steps = 0
while env.agents:
    actions = policy.act(obs, env)
    actions.update({a: int(rng.integers(21)) for a in env.agents if a.startswith("blue")})
    obs, *_ = env.step(actions)
    steps += 1
report["played_steps"] = steps
report["marlscale_after_play"] = sorted(m for m in sys.modules
                                        if m.split(".")[0] == "marlscale")
report["ray_after_play"] = any(m.split(".")[0] == "ray" for m in sys.modules)
print(json.dumps(report))
'''


def test_loading_and_acting_need_torch_and_numpy_only(exports, tmp_path):
    """In a fresh interpreter where importing Ray, RLlib, marlscale's training code (and, for
    loading, gymnasium, magent2, pettingzoo, pandas, scipy, wandb, yaml) fails, the export
    loads, gives the same Q-values and plays a battle_v4 episode (mean actions included)."""
    _, _, policy, _ = exports["battle-mfqmix"]
    rng = np.random.default_rng(0)
    views = quantize(rng.random((6, *policy.view_shape))).astype(np.float32) / 255
    slots = np.array([0, 1, 2, 5, 11, 30])  # 30: past the trained slots
    means = rng.dirichlet(np.ones(policy.n_actions), 6).astype(np.float32)
    np.savez(tmp_path / "batch.npz", views=views, slots=slots, means=means,
             q=policy.q_values(views, slots, means))
    script = tmp_path / "outside.py"
    script.write_text(OUTSIDE)
    done = subprocess.run([sys.executable, str(script), str(policy.path),
                           str(tmp_path / "batch.npz")], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("ray", "ray.rllib", "marlscale.algorithms", "marlscale.envs", "magent2"):
        assert report[name] == f"forbidden import: {name.split('.')[0]}" or \
            report[name] == f"forbidden import: {name}"
    assert report["q_equal"] and report["loaded_with"] == []
    assert report["marlscale"] == ["marlscale", "marlscale.mean_field", "marlscale.policy"]
    assert report["played_steps"] == 5 and not report["ray_after_play"]
    assert report["marlscale_after_play"] == report["marlscale"]


def rewrite(source, target, entry: str, change) -> None:
    """A copy of an export with one archive entry (by its path under the archive's root)
    changed by `change(bytes) -> bytes`."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            data = old.read(info)
            if info.filename.partition("/")[2] == entry:
                data = change(data)
            new.writestr(info, data)


def with_meta(**changes):
    def change(data: bytes) -> bytes:
        return json.dumps({**json.loads(data), **changes}).encode()
    return change


def pickled_weights(data: bytes) -> bytes:
    config = json.loads(data)
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    return json.dumps(config).encode()


def test_files_that_are_not_exports_are_refused_in_one_line(exports, tmp_path, capsys):
    _, _, policy, _ = exports["pursuit-mfq"]
    (tmp_path / "folder.pt").mkdir()
    (tmp_path / "noise.pt").write_bytes(b"\x00not a zip" * 10)
    torch.save({"weight": torch.zeros(2)}, tmp_path / "state_dict.pt")
    rewrite(policy.path, tmp_path / "newer.pt", f"extra/{mp.META}", with_meta(format=2))
    rewrite(policy.path, tmp_path / "other.pt", f"extra/{mp.META}", with_meta(kind="x"))
    rewrite(policy.path, tmp_path / "damaged.pt", f"extra/{mp.META}", with_meta(n_actions="9"))
    rewrite(policy.path, tmp_path / "pickle.pt", "data/weights/model_weights_config.json",
            pickled_weights)
    cases = {
        "missing.pt": "does not exist; allowed: a file written by `marlscale export",
        "folder.pt": "is a folder; allowed",
        "noise.pt": "is not a marlscale export: not a torch.export archive (no zip)",
        "state_dict.pt": f"is not a marlscale export: it holds no {mp.META}",
        "newer.pt": "has format version 2, newer than this marlscale reads (format 1)",
        "other.pt": f"is not a marlscale export: its {mp.META} is not marlscale's",
        "damaged.pt": f"its {mp.META} has n_actions='9'",
        "pickle.pt": "holds data/weights/model_weights_config.json, which would run pickled",
    }
    for name, expected in cases.items():
        path = tmp_path / name
        with pytest.raises(ValueError, match="policy file") as error:
            mp.load(path)
        assert expected in str(error.value), name
        assert mp.main([str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err and "Traceback" not in err, name
    assert mp.main([str(policy.path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["format"] == mp.FORMAT and printed["algorithm"] == "mfq"


def test_acting_in_another_game_side_or_view_shape_is_refused_naming_both(exports):
    _, _, battle, _ = exports["battle-mfqmix"]
    _, _, pursuit, _ = exports["pursuit-mfq"]
    cases = [
        (battle, adversarial_pursuit_v4.parallel_env(map_size=18), {},
         "is magent2's adversarial_pursuit, and policy"),
        (battle, battlefield_v5.parallel_env(), {}, "is magent2's battlefield, and policy"),
        (battle, battle_v4.parallel_env(map_size=20, minimap_mode=True), {},
         "gives red views of shape (13, 13, 9), and policy"),
        (battle, battle_v4.parallel_env(map_size=20), {"side": "green"},
         "side 'green' is invalid in battle_v4; allowed: red, blue"),
        (pursuit, adversarial_pursuit_v4.parallel_env(map_size=18), {"side": "prey"},
         "gives prey views of shape (9, 9, 5), and policy"),
    ]
    for policy, env, kwargs, expected in cases:
        obs, _ = env.reset(seed=0)
        with pytest.raises(ValueError) as error:
            policy.act(obs, env, **kwargs)
        assert expected in str(error.value)
    assert "trained on battle" in str(pytest.raises(ValueError, battle.fit,
                                                    battlefield_v5.parallel_env()).value)
    assert "trained on views of shape (13, 13, 5)" in str(pytest.raises(
        ValueError, battle.fit, battle_v4.parallel_env(map_size=20, minimap_mode=True)).value)
    # The mean action needs this policy's actions at the step before.
    env = battle_v4.parallel_env(map_size=20)
    obs, _ = env.reset(seed=0)
    battle.act(obs, env)
    for _ in range(2):  # two steps, the policy acting at neither
        obs, *_ = env.step({name: 6 for name in env.agents})
    with pytest.raises(ValueError, match="needs the neighbour mean action of step 2: every "
                                         "alive red agent's action at step 1, and it last "
                                         "acted at step 0"):
        battle.act(obs, env)


def test_export_refuses_bad_input_before_reading_any_weights(tmp_path, capsys):
    out = tmp_path / "policy.pt"
    cases = [
        ([str(tmp_path), "--out", str(out)], f"CHECKPOINT '{tmp_path}' is not a checkpoint"),
        ([str(tmp_path / "nope"), "--out", str(out)], "does not exist"),
        ([str(tmp_path), "--out", str(tmp_path / "missing" / "p.pt")],
         f"--out '{tmp_path / 'missing' / 'p.pt'}' is invalid: folder"),
        ([str(tmp_path), "--out", str(tmp_path / "policy.txt")], "allowed: a .pt file"),
    ]
    for args, expected in cases:
        assert main(["export", *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
