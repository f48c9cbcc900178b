"""What a TeamQ checkpoint holds, read from disk without Ray, and its team policies.

A checkpoint is RLlib's directory (`rllib_checkpoint.json`, the pickled algorithm config, one
module folder per team under `learner_group/learner/rl_module/`). Users name it any of three
ways, all accepted wherever a checkpoint is asked for:

    runs/train-qmix-.../checkpoints/iter_000080     a checkpoint itself
    runs/train-qmix-...                             a `marlscale train` run: its last checkpoint
    RUN_DIR/qmix_N12_seed0_<id>                     a sweep trial: its last checkpoint

and a team of it with a suffix, `CKPT:red`. Everything here is checked before Ray starts, so a
path that is not a checkpoint, a team it does not hold, or a checkpoint that does not fit the
run asking for it fails with one line naming both sides.

**Trust.** RLlib's files are pickles, which run code when read. Every checkpoint a TeamQ
algorithm saves also gets `marlscale_checkpoint.json` (runfiles.CHECKPOINT_META, written last
by `write_metadata`): its game, env config, iteration, curriculum stage, each team's algorithm,
N, sizes and observation shapes, and the size of every other file. `load` reads only that JSON
and checks every listed file is there at its size (a missing team folder, a deleted learner
state or a module state cut short is named in one line), so every reader (evaluate, render,
league, `train --resume`, `--from-checkpoint`) decides before anything is unpickled; pickles are
read later, by RLlib, once the run is accepted. A checkpoint without the JSON (written before
#25) is refused; `python -m marlscale.algorithms.checkpoints --trust CKPT` writes it from the
pickles, for a checkpoint one trusts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import marlscale
from marlscale import runfiles
from marlscale.algorithms.config import MODEL_SIZES, module_config
from marlscale.curriculum import Curriculum, CurriculumConfig
from marlscale.envs import GAME_OF_ENV, GAMES
from marlscale.envs.config import TeamEnvConfig

MODULES = Path("learner_group", "learner", "rl_module")
FORMAT = 1
"""The layout of CHECKPOINT_META this marlscale writes and reads."""
_NUMBERED = re.compile(r"(?:iter|checkpoint)_(\d+)")
ALLOWED = ("a checkpoint directory (checkpoints/iter_NNNNNN, checkpoint_NNNNNN), a `marlscale "
           "train` run directory or a sweep trial directory")


@dataclass(frozen=True)
class TeamPolicy:
    """One team's module in a checkpoint: what it is and where its weights are."""

    team: str
    algorithm: str
    n_agents: int
    n_actions: int
    view_shape: tuple[int, ...]
    mean_action: str | None
    sizes: dict[str, int]
    path: Path
    """The module's folder (RLlib's RLModule checkpoint)."""
    observation_shapes: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    """The module's observation space, key by key (per-agent keys lead with N)."""

    def describe(self) -> str:
        """e.g. 'qmix, N=12, hidden=128, embedding_dim=16, mixing_embed_dim=32, ...'."""
        sizes = ", ".join(f"{key}={self.sizes[key]}" for key in MODEL_SIZES if key in self.sizes)
        return f"{self.algorithm}, N={self.n_agents}, {sizes}"

    def load_module(self):
        """The trained TeamQModule (agent network with its slot embeddings), in eval mode."""
        from ray.rllib.core.rl_module.rl_module import RLModule

        module = RLModule.from_checkpoint(str(self.path))
        module.eval()
        return module


@dataclass(frozen=True)
class TeamCheckpoint:
    """A TeamQ checkpoint: its run's config, its team policies and its curriculum stage."""

    path: Path
    config: dict[str, Any]
    """What the run was built with: `env`, `env_config` (TeamEnvConfig) and `curriculum`."""
    policies: dict[str, TeamPolicy]
    """In team order: the learning team, then (head-to-head) the opponent."""
    iteration: int
    n_active: dict[str, int]
    """Agents the policy controlled in each team at the checkpoint's curriculum stage."""

    @property
    def env_config(self) -> TeamEnvConfig:
        values = dict(self.config.get("env_config") or {})
        values.setdefault("game", GAME_OF_ENV.get(self.config.get("env"), "adversarial_pursuit"))
        return TeamEnvConfig.from_dict(values)

    @property
    def game(self) -> str:
        return self.env_config.game

    def policy(self, team: str | None, name: str = "CHECKPOINT") -> TeamPolicy:
        """The named team's policy; without a name, the learning team's."""
        if team is None:
            return next(iter(self.policies.values()))
        if team not in self.policies:
            raise ValueError(f"{name} {str(self.path)!r}:{team} is invalid: the checkpoint holds "
                             f"no team {team!r}; allowed: {', '.join(self.policies)}")
        return self.policies[team]


def split_team(text: str) -> tuple[str, str | None]:
    """'CKPT:red' -> ('CKPT', 'red'); a path that exists as given keeps any ':' it has."""
    path, sep, team = text.rpartition(":")
    if not sep or Path(text).exists() or not path or "/" in team:
        return text, None
    return path, team


def _latest(paths: list[Path]) -> Path | None:
    """The highest numbered checkpoint: of those with CHECKPOINT_META (written last: one
    without it beside some with it was cut short by a kill) if any, else of RLlib's."""
    numbered = [(int(m[1]), p) for p in paths if (m := _NUMBERED.fullmatch(p.name))
                and (p / runfiles.CHECKPOINT_MARKER).is_file()]
    complete = [(i, p) for i, p in numbered if (p / runfiles.CHECKPOINT_META).is_file()]
    return max(complete or numbered)[1] if numbered else None


def find_checkpoint(path: str | Path, name: str = "CHECKPOINT") -> Path:
    """The checkpoint directory a user means by `path` (see the module docstring)."""
    given = Path(path).expanduser()
    resolved = given.resolve()
    if not resolved.exists():
        raise ValueError(f"{name} {str(given)!r} does not exist; allowed: {ALLOWED}")
    if (resolved / runfiles.CHECKPOINT_MARKER).is_file():
        return resolved
    trained = resolved / runfiles.CHECKPOINTS
    found = _latest(list(trained.glob(runfiles.TRAIN_CHECKPOINT_GLOB))) \
        or _latest(list(resolved.glob(runfiles.TRIAL_CHECKPOINT_GLOB)))
    if found is None:
        raise ValueError(f"{name} {str(given)!r} is not a checkpoint: it has no "
                         f"{runfiles.CHECKPOINT_MARKER} and no checkpoints/iter_*/ or "
                         f"checkpoint_*/ inside; allowed: {ALLOWED}")
    return found


# ---- marlscale_checkpoint.json ----------------------------------------------------------------
def metadata(algo) -> dict[str, Any]:
    """What readers decide on, from a live TeamQ algorithm (CHECKPOINT_META without `files`)."""
    config = algo.config
    env_config = config.team_env_config
    spaces = getattr(algo, "spaces", None) or {}
    teams = {}
    for team, algorithm in config.team_algorithms().items():
        if team in spaces:
            observation_space, action_space = spaces[team]
        else:  # no EnvRunner told the spaces: the env's own
            from marlscale.envs import MagentTeamEnv

            probe = MagentTeamEnv(env_config)
            observation_space, action_space = (probe.observation_spaces[team],
                                               probe.action_spaces[team])
        teams[team] = _team_entry(module_config(algorithm, config.settings(algorithm)),
                                  observation_space, action_space)
    return {"format": FORMAT, "written_by": f"marlscale {marlscale.__version__}",
            "algorithm_class": type(algo).__name__, "iteration": int(algo.iteration),
            "env": config.env, "env_config": env_config.to_dict(),
            "curriculum": {"config": config.curriculum_config().to_dict(),
                           "state": algo.curriculum.get_state()},
            "n_active": algo.curriculum.n_active(), "teams": teams}


def _team_entry(model: dict[str, Any], observation_space, action_space) -> dict[str, Any]:
    return {"algorithm": model["algorithm"], "model_config": dict(model),
            "n_actions": int(action_space.nvec[0]),
            "observation_shapes": {key: [int(d) for d in space.shape]
                                   for key, space in observation_space.spaces.items()}}


def write_metadata(algo, path: str, filesystem=None) -> None:
    """Write CHECKPOINT_META into the checkpoint just saved at `path` (on `filesystem`; None:
    local): `metadata(algo)` and the size of every file RLlib wrote there."""
    import posixpath

    from pyarrow import fs

    filesystem = filesystem or fs.LocalFileSystem()
    path = str(path).rstrip("/")
    files = {posixpath.relpath(info.path, path): info.size
             for info in filesystem.get_file_info(fs.FileSelector(path, recursive=True))
             if info.type == fs.FileType.File and info.base_name != runfiles.CHECKPOINT_META}
    values = {**metadata(algo), "files": dict(sorted(files.items()))}
    with filesystem.open_output_stream(f"{path}/{runfiles.CHECKPOINT_META}") as out:
        out.write(json.dumps(values, indent=1).encode())


def _refuse(name: str, given: Path, problem: str, allowed: str = ALLOWED) -> ValueError:
    return ValueError(f"{name} {str(given)!r} {problem}; allowed: {allowed}")


def _read_metadata(root: Path, name: str, given: Path) -> dict[str, Any]:
    """CHECKPOINT_META, checked to be what `write_metadata` writes (no pickle is read)."""
    path = root / runfiles.CHECKPOINT_META
    if not path.is_file():
        where = "" if root == given.expanduser().resolve() else f" (its checkpoint {root})"
        raise _refuse(name, given, f"predates {runfiles.CHECKPOINT_META}{where}, so it is not "
                      "read: a checkpoint's other files are pickles, which run code when read",
                      f"a checkpoint written since marlscale wrote {runfiles.CHECKPOINT_META}; "
                      "if you trust this one, write the file from its pickles with: python -m "
                      f"marlscale.algorithms.checkpoints --trust {root}")
    try:
        values = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _refuse(name, given, f"is damaged: {runfiles.CHECKPOINT_META} is unreadable "
                      f"({type(error).__name__}: {error})") from None
    if not isinstance(values, dict) or values.get("format") != FORMAT:
        found = values.get("format") if isinstance(values, dict) else type(values).__name__
        raise _refuse(name, given, f"is damaged: {runfiles.CHECKPOINT_META} has format "
                      f"{found!r}, this marlscale reads format {FORMAT}")
    return values


def check_files(root: Path, files: dict[str, int], name: str = "CHECKPOINT",
                given: Path | None = None) -> None:
    """Raise, naming the first one, unless every file the checkpoint was written with is
    there, readable and of its size (`files`: CHECKPOINT_META's path -> size)."""
    given = root if given is None else given
    base = given.expanduser().resolve()
    base = base if root.is_relative_to(base) else root  # files named from the path given
    allowed = ("a complete checkpoint (copy it again, or name an earlier checkpoint of the "
               "run)")
    markers = [runfiles.CHECKPOINT_MARKER] if runfiles.CHECKPOINT_MARKER in files else []
    for relative in markers + sorted(set(files) - set(markers)):
        path = root / relative
        if not path.is_file():
            gone = path
            while not gone.parent.exists():  # name the topmost folder that is gone
                gone = gone.parent
            if gone == path:
                problem = f"is missing (it was written with {files[relative]} bytes)"
            else:
                held = sum(1 for f in files if (root / f).is_relative_to(gone))
                problem = f"is missing (it was written with {held} file(s))"
            raise _refuse(name, given, f"is damaged: {gone.relative_to(base)}"
                          f"{'/' if gone != path else ''} {problem}", allowed)
        size = path.stat().st_size
        if size != files[relative]:
            raise _refuse(name, given, f"is damaged: {path.relative_to(base)} has {size} "
                          f"bytes, it was written with {files[relative]} (cut short or "
                          "changed)", allowed)
        if not os.access(path, os.R_OK):
            raise _refuse(name, given, f"is damaged: {path.relative_to(base)} is not readable "
                          "(permission denied)", allowed)


def load(path: str | Path, name: str = "CHECKPOINT") -> TeamCheckpoint:
    """Read a checkpoint's config, team policies and curriculum stage from its
    CHECKPOINT_META, after checking its files (no Ray, no pickle, no weights)."""
    root = find_checkpoint(path, name)
    given = Path(path)
    values = _read_metadata(root, name, given)
    try:
        files = {str(k): int(v) for k, v in values["files"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise _refuse(name, given, f"is damaged: {runfiles.CHECKPOINT_META} is not as "
                      f"marlscale writes it ({type(error).__name__}: {error})") from None
    check_files(root, files, name, given)
    try:
        config = {"env": values["env"], "env_config": dict(values["env_config"]),
                  "curriculum": values["curriculum"]["config"]}
        policies = {}
        for team in _team_order(config, set(values["teams"])):
            entry = values["teams"][team]
            model = entry["model_config"]
            shapes = {key: tuple(int(d) for d in shape)
                      for key, shape in entry["observation_shapes"].items()}
            policies[team] = TeamPolicy(
                team=team, algorithm=str(entry["algorithm"]), n_agents=shapes["views"][0],
                n_actions=int(entry["n_actions"]), view_shape=shapes["views"][1:],
                mean_action=model["mean_action"],
                sizes={key: model[key] for key in MODEL_SIZES if key in model},
                path=root / MODULES / team, observation_shapes=shapes)
        n_active = {team: int(values["n_active"][team]) for team in policies}
        iteration = int(values["iteration"])
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise _refuse(name, given, f"is damaged: {runfiles.CHECKPOINT_META} is not as "
                      f"marlscale writes it ({type(error).__name__}: {error})") from None
    return TeamCheckpoint(path=root, config=config, policies=policies, iteration=iteration,
                          n_active=n_active)


def _team_order(config: dict[str, Any], held: set[str]) -> list[str]:
    """The checkpoint's teams (`held`), the learning team first (the game's team order)."""
    game = GAME_OF_ENV.get(config.get("env"), (config.get("env_config") or {}).get("game"))
    order = list(GAMES[game].team_names) if game in GAMES else sorted(held)
    return [team for team in order if team in held]


def check_fits(checkpoint: TeamCheckpoint, wanted: dict[str, TeamPolicy | dict[str, Any]],
               game: str, name: str = "--from-checkpoint", any_n: bool = False) -> None:
    """Raise unless the checkpoint holds, for every wanted team, a module of the same game,
    algorithm, N and network sizes. `wanted`: {team: {"algorithm", "n_agents", sizes...}}.
    `any_n`: N may differ (the module will be resized: the network is shared across slots)."""
    where = f"{name} {str(checkpoint.path)!r}"
    if checkpoint.game != game:
        raise ValueError(f"{where} is a checkpoint of {checkpoint.game}; allowed: a checkpoint "
                         f"of {game} (the run's game)")
    for team, want in wanted.items():
        if team not in checkpoint.policies:
            raise ValueError(f"{where} holds no team {team!r} (it holds "
                             f"{', '.join(checkpoint.policies)}); allowed: a checkpoint with "
                             f"every team the run trains ({', '.join(wanted)})")
        have = checkpoint.policies[team]
        mine = (have.algorithm, want["n_agents"] if any_n else have.n_agents, have.mean_action,
                *(have.sizes.get(k) for k in MODEL_SIZES))
        theirs = (want["algorithm"], want["n_agents"], want.get("mean_action"),
                  *(want.get(k) for k in MODEL_SIZES))
        if mine != theirs:
            asked = ", ".join([f"{want['algorithm']}, N={want['n_agents']}"]
                              + [f"{k}={want[k]}" for k in MODEL_SIZES if k in want])
            raise ValueError(f"{where}: its {team} module is {have.describe()}"
                             f"{_mean(have.mean_action)}; the run asks for {asked}"
                             f"{_mean(want.get('mean_action'))}; allowed: a checkpoint of the "
                             f"same algorithm{'' if any_n else ', N'} and network sizes")


def _mean(mean_action: str | None) -> str:
    return f", mean_action={mean_action}" if mean_action else ""


# ---- checkpoints written before CHECKPOINT_META: --trust ---------------------------------------
def trust(path: str | Path, name: str = "--trust") -> Path:
    """Write CHECKPOINT_META of a checkpoint written without it, from its pickles (which run
    code when read: for a checkpoint one trusts). Returns the checkpoint's folder."""
    import pickle

    given = Path(path)
    root = find_checkpoint(path, name)

    def unpickle(file: Path) -> Any:
        try:
            with file.open("rb") as handle:
                return pickle.load(handle)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError,
                ImportError) as error:
            raise _refuse(name, given, f"is not a readable checkpoint ({file.relative_to(root)}"
                          f": {type(error).__name__}: {error})") from None

    ctor = unpickle(root / runfiles.CHECKPOINT_CTOR)
    algo_class = ctor.get("class") if isinstance(ctor, dict) else None
    if not any(f"{c.__module__}.{c.__qualname__}" == "marlscale.algorithms.algorithm.TeamQ"
               for c in getattr(algo_class, "__mro__", ())):
        raise _refuse(name, given, f"is a checkpoint of {getattr(algo_class, '__name__', '?')}"
                      ", not of a marlscale learner (TeamQ)")
    config = ctor["ctor_args_and_kwargs"][0][0]
    env_config = dict(config.get("env_config") or {})
    env_config.setdefault("game", GAME_OF_ENV.get(config.get("env"), "adversarial_pursuit"))
    env_config = TeamEnvConfig.from_dict(env_config)
    modules = root / MODULES
    held = {p.name for p in modules.iterdir() if (p / runfiles.CHECKPOINT_CTOR).is_file()} \
        if modules.is_dir() else set()
    teams = {}
    for team in _team_order(config, held):
        kwargs = unpickle(modules / team / runfiles.CHECKPOINT_CTOR)["ctor_args_and_kwargs"][1]
        teams[team] = _team_entry(kwargs["model_config"], kwargs["observation_space"],
                                  kwargs["action_space"])
    state = unpickle(root / runfiles.CHECKPOINT_STATE)
    curriculum_config = CurriculumConfig.from_dict(config.get("curriculum"))
    curriculum = Curriculum(curriculum_config,
                            {t: e["observation_shapes"]["views"][0] for t, e in teams.items()},
                            fixed_n_active=env_config.n_active)
    if state.get("team_q", {}).get("curriculum"):
        curriculum.set_state(state["team_q"]["curriculum"])
    files = {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")
             if p.is_file() and p.name != runfiles.CHECKPOINT_META}
    values = {"format": FORMAT, "written_by": f"marlscale {marlscale.__version__} (--trust)",
              "algorithm_class": algo_class.__name__,
              "iteration": int(state.get("training_iteration", 0)), "env": config.get("env"),
              "env_config": env_config.to_dict(),
              "curriculum": {"config": curriculum_config.to_dict(),
                             "state": curriculum.get_state()},
              "n_active": curriculum.n_active(), "teams": teams,
              "files": dict(sorted(files.items()))}
    (root / runfiles.CHECKPOINT_META).write_text(json.dumps(values, indent=1))
    return root


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m marlscale.algorithms.checkpoints",
        description=f"Write {runfiles.CHECKPOINT_META} of a checkpoint written before marlscale "
                    "wrote it, reading its pickles: only for a checkpoint you trust.")
    parser.add_argument("--trust", required=True, metavar="CKPT",
                        help="the checkpoint (or train run / sweep trial directory)")
    try:
        print(f"wrote {trust(parser.parse_args().trust) / runfiles.CHECKPOINT_META}")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
