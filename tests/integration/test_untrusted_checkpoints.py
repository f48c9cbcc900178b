"""Checkpoints read before they are trusted (#25): every reader (`evaluate`, `render`,
`train --from-checkpoint`, `train --resume`, the league) decides on marlscale_checkpoint.json
alone, checks the checkpoint's files before Ray starts, and leaves the pickles to RLlib, once
the run is accepted.

One real checkpoint (a 1-iteration pursuit run); every refusal goes through `marlscale.cli.main`
in this process, with Ray's start recorded instead of made (conftest.record_ray_starts).
"""

import json
import pickle
import shutil

import pytest
from marlscale import runfiles, train
from marlscale.algorithms import checkpoints

pytestmark = pytest.mark.integration

TINY = {
    "env": "adversarial_pursuit",
    "env_config": {"n_agents": 4, "map_size": 14, "max_cycles": 30},
    "training": {"algorithm": "qmix", "rollout_length": 30, "learning_starts": 30,
                 "batch_size": 8, "hidden": 32, "replay_capacity": 200},
    "resources": {"num_cpus": 1}, "eval_episodes": 0, "seed": 1, "stop": {"iterations": 1},
    "wandb": {"mode": "disabled"},
}
CHECKPOINT = f"{runfiles.CHECKPOINTS}/{runfiles.train_checkpoint(1)}"
MODULE = f"{CHECKPOINT}/{checkpoints.MODULES.as_posix()}/predator"


@pytest.fixture(scope="module")
def trained(ray_local, tmp_path_factory):
    """A `marlscale train` run directory with one checkpoint (iteration 1)."""
    run_dir = tmp_path_factory.mktemp("trusted") / "run"
    train.run(train.TrainSpec.from_dict(TINY), run_dir, log=lambda line: None)
    return run_dir


@pytest.fixture
def cli(cli_in_process):
    return cli_in_process


def refused(done, expected: str) -> None:
    assert done.code == 2, done.err
    assert done.err.strip().splitlines() == [f"marlscale: error: {expected}"], done.err
    assert not done.ray_started


def meta(checkpoint):
    return json.loads((checkpoint / runfiles.CHECKPOINT_META).read_text())


# ---- what is written ---------------------------------------------------------------------------
def test_every_checkpoint_gets_json_that_says_what_its_pickles_do(trained, tmp_path):
    checkpoint = trained / CHECKPOINT
    written = meta(checkpoint)
    on_disk = {p.relative_to(checkpoint).as_posix(): p.stat().st_size
               for p in checkpoint.rglob("*") if p.is_file()}
    assert written["files"] == {k: v for k, v in on_disk.items()
                                if k != runfiles.CHECKPOINT_META}
    assert {runfiles.CHECKPOINT_STATE, f"{MODULE[len(CHECKPOINT) + 1:]}/module_state.pkl",
            "learner_group/learner/state.pkl"} <= set(written["files"])
    assert (written["iteration"], written["n_active"], written["env"]) == \
        (1, {"predator": 4}, "marlscale/adversarial_pursuit")
    # The same facts as the pickles hold: read them the old way (--trust) from a copy.
    copy = shutil.copytree(checkpoint, tmp_path / "copy")
    (copy / runfiles.CHECKPOINT_META).unlink()
    assert checkpoints.trust(copy) == copy
    from_pickles = meta(copy)
    assert {k: v for k, v in from_pickles.items() if k != "written_by"} == \
        {k: v for k, v in written.items() if k != "written_by"}
    # Tune's way in (a sweep's or league's trial: Trainable.save -> save_checkpoint), head to
    # head: both teams.
    spec = train.TrainSpec.from_dict({
        **TINY, "env_config": {**TINY["env_config"], "opponent": "learned"},
        "training": {**TINY["training"], "opponent_algorithm": "mfq"}})
    algo = spec.algorithm_config().build_algo()
    try:
        algo.save_checkpoint(str(tmp_path / "trial" / "checkpoint_000000"))
    finally:
        algo.stop()
    loaded = checkpoints.load(tmp_path / "trial")
    assert {t: p.algorithm for t, p in loaded.policies.items()} == \
        {"predator": "qmix", "prey": "mfq"}
    assert loaded.iteration == 0 and loaded.n_active == {"predator": 4, "prey": 8}


def test_a_checkpoint_cut_short_by_a_kill_is_passed_over_for_the_last_complete_one(
        trained, tmp_path):
    run_dir = shutil.copytree(trained, tmp_path / "run")
    later = shutil.copytree(run_dir / CHECKPOINT,
                            run_dir / runfiles.CHECKPOINTS / runfiles.train_checkpoint(2))
    (later / runfiles.CHECKPOINT_META).unlink()  # written last: the kill came before it
    assert checkpoints.load(run_dir).path.name == runfiles.train_checkpoint(1)


# ---- crafted pickles ---------------------------------------------------------------------------
class Payload:
    """Unpickled, it creates `marker` (any code could run there)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def crafted(trained, tmp_path, forged_json: bool):
    """A copy of the run whose algorithm_state.pkl and class_and_ctor_args.pkl create a marker
    file when unpickled; `forged_json`: its marlscale_checkpoint.json lists the crafted files'
    sizes (an attacker who also wrote the JSON), else it has none (as before #25)."""
    run_dir = shutil.copytree(trained, tmp_path / "crafted")
    checkpoint = run_dir / CHECKPOINT
    payload = pickle.dumps(Payload(tmp_path / "marker"))
    values = meta(checkpoint)
    for name in (runfiles.CHECKPOINT_STATE, runfiles.CHECKPOINT_CTOR):
        (checkpoint / name).write_bytes(payload)
        values["files"][name] = len(payload)
    if forged_json:
        (checkpoint / runfiles.CHECKPOINT_META).write_text(json.dumps(values))
    else:
        (checkpoint / runfiles.CHECKPOINT_META).unlink()
    return run_dir


@pytest.mark.parametrize("reader", ["evaluate", "from_checkpoint"])
@pytest.mark.parametrize("forged_json", [True, False], ids=["forged_json", "no_json"])
def test_a_refused_checkpoint_runs_none_of_its_pickles(trained, tmp_path, cli, reader,
                                                       forged_json):
    run_dir = crafted(trained, tmp_path, forged_json)
    marker = tmp_path / "marker"
    name = {"evaluate": "CHECKPOINT", "from_checkpoint": "--from-checkpoint"}[reader]
    if reader == "evaluate":  # a team it lacks
        done = cli("evaluate", f"{run_dir}:green", "--episodes", "1")
        refusal = (f"CHECKPOINT {str(run_dir / CHECKPOINT)!r}:green is invalid: the checkpoint "
                   "holds no team 'green'; allowed: predator")
    else:  # another algorithm
        spec = tmp_path / "vdn.json"
        spec.write_text(json.dumps({**TINY, "training": {**TINY["training"],
                                                         "algorithm": "vdn"}}))
        done = cli("train", spec, "--from-checkpoint", run_dir, "--run-dir", tmp_path / "new")
        refusal = (f"--from-checkpoint {str(run_dir / CHECKPOINT)!r}: its predator module is "
                   "qmix, N=4, hidden=32, embedding_dim=16, mean_action_hidden=32, "
                   "mixing_embed_dim=32, hypernet_embed=64; the run asks for vdn, N=4, "
                   "hidden=32, embedding_dim=16, mean_action_hidden=32, mixing_embed_dim=32, "
                   "hypernet_embed=64; allowed: a checkpoint of the same algorithm and network "
                   "sizes")
        assert not (tmp_path / "new").exists()
    if not forged_json:
        refusal = (
            f"{name} {str(run_dir)!r} predates {runfiles.CHECKPOINT_META} (its checkpoint "
            f"{run_dir / CHECKPOINT}), so it is not read: a checkpoint's other files are "
            "pickles, which run code when read; allowed: a checkpoint written since marlscale "
            f"wrote {runfiles.CHECKPOINT_META}; if you trust this one, write the file from its "
            f"pickles with: python -m marlscale.algorithms.checkpoints --trust "
            f"{run_dir / CHECKPOINT}")
    refused(done, refusal)
    assert not marker.exists()
    # The payload is live: unpickled, it does what it says.
    pickle.loads((run_dir / CHECKPOINT / runfiles.CHECKPOINT_STATE).read_bytes())
    assert marker.exists()


# ---- damaged checkpoints -----------------------------------------------------------------------
DAMAGES = {
    "module_state_cut_short": (f"{MODULE}/module_state.pkl", "cut"),
    "learner_state_deleted": (f"{CHECKPOINT}/learner_group/learner/state.pkl", "delete"),
    "team_folder_deleted": (MODULE, "delete"),
}


@pytest.mark.parametrize("reader", ["evaluate", "render", "from_checkpoint", "resume"])
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_checkpoint_is_named_in_one_line_before_ray(trained, tmp_path, cli, reader,
                                                              damage):
    run_dir = shutil.copytree(trained, tmp_path / "damaged")
    relative, how = DAMAGES[damage]
    path = run_dir / relative
    size = meta(run_dir / CHECKPOINT)["files"].get(relative[len(CHECKPOINT) + 1:])
    if how == "cut":
        path.write_bytes(path.read_bytes()[:1000])
        problem = f"{relative} has 1000 bytes, it was written with {size} (cut short or changed)"
    elif path.is_dir():
        shutil.rmtree(path)
        problem = f"{relative}/ is missing (it was written with 3 file(s))"
    else:
        path.unlink()
        problem = f"{relative} is missing (it was written with {size} bytes)"
    name, done = {
        "evaluate": lambda: ("CHECKPOINT", cli("evaluate", run_dir, "--episodes", "1")),
        "render": lambda: ("CHECKPOINT", cli("render", run_dir, "--out", tmp_path / "e.gif")),
        "from_checkpoint": lambda: ("--from-checkpoint", cli(
            "train", "--game", "adversarial_pursuit", "--n-agents", "4", "--set", "hidden=32",
            "--from-checkpoint", run_dir, "--run-dir", tmp_path / "new")),
        "resume": lambda: ("--resume", cli("train", "--resume", run_dir, "--iterations", "2")),
    }[reader]()
    refused(done, f"{name} {str(run_dir)!r} is damaged: {problem}; allowed: a complete "
                  "checkpoint (copy it again, or name an earlier checkpoint of the run)")
    assert not (tmp_path / "new").exists() and not (tmp_path / "e.gif").exists()


# ---- memory: what grows with a user value is estimated before anything is allocated ----------
@pytest.fixture(scope="module")
def trained_on_a_scaled_map(ray_local, tmp_path_factory):
    """As `trained`, with the map scaled to N (no map_size): any --n-agents fits it."""
    run_dir = tmp_path_factory.mktemp("scaled") / "run"
    env_config = {k: v for k, v in TINY["env_config"].items() if k != "map_size"}
    train.run(train.TrainSpec.from_dict({**TINY, "env_config": env_config}), run_dir,
              log=lambda line: None)
    return run_dir


@pytest.mark.parametrize("args, expected", [
    (["evaluate", "{scaled}", "--n-agents", "3000000", "--num-env-runners", "2"],
     "this evaluation (2 env(s), n_agents=3000000, state_grid=8) needs about "),
    (["render", "{run}", "--out", "{tmp}/a.gif", "--cell", "4000"],
     "--steps/--cell: the GIF's 31 frames of 56,000 x 56,052 pixels (cell 4000, map 14) need "
     "about "),
])
def test_evaluate_and_render_too_big_for_this_machine_are_refused_first(
        trained, trained_on_a_scaled_map, tmp_path, cli, args, expected):
    done = cli(*[a.format(run=trained, scaled=trained_on_a_scaled_map, tmp=tmp_path)
                 for a in args])
    assert done.code == 2 and not done.ray_started, done.err
    (line,) = done.err.strip().splitlines()
    assert line.startswith(f"marlscale: error: {expected}") and "more than" in line, line
    assert "allowed: " in line and "Traceback" not in done.err
    assert not (tmp_path / "a.gif").exists()
