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
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marlscale import runfiles
from marlscale.algorithms.config import MODEL_SIZES
from marlscale.curriculum import Curriculum, CurriculumConfig
from marlscale.envs import GAME_OF_ENV, GAMES
from marlscale.envs.config import TeamEnvConfig

MODULES = Path("learner_group", "learner", "rl_module")
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
    """The algorithm config the run was built with (RLlib's AlgorithmConfig state)."""
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
    numbered = [(int(m[1]), p) for p in paths if (m := _NUMBERED.fullmatch(p.name))
                and (p / runfiles.CHECKPOINT_MARKER).is_file()]
    return max(numbered)[1] if numbered else None


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


def _unpickle(path: Path, name: str, given: Path, missing: Any = None) -> Any:
    """A checkpoint's pickle; `missing` where the file is absent (None: it must be there)."""
    if missing is not None and not path.is_file():
        return missing
    try:
        with path.open("rb") as handle:
            return pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as error:
        raise ValueError(f"{name} {str(given)!r} is not a readable checkpoint ({path.name}: "
                         f"{type(error).__name__}: {error}); allowed: {ALLOWED}") from None


def load(path: str | Path, name: str = "CHECKPOINT") -> TeamCheckpoint:
    """Read a checkpoint's config, team policies and curriculum stage (no Ray, no weights)."""
    from marlscale.algorithms.algorithm import TeamQ

    root = find_checkpoint(path, name)
    ctor = _unpickle(root / runfiles.CHECKPOINT_CTOR, name, Path(path), missing={})
    algo_class = ctor.get("class") if isinstance(ctor, dict) else None
    if not (isinstance(algo_class, type) and issubclass(algo_class, TeamQ)):
        kind = getattr(algo_class, "__name__", "unknown")
        raise ValueError(f"{name} {str(path)!r} is a checkpoint of {kind}, not of a marlscale "
                         f"learner (TeamQ); allowed: {ALLOWED}")
    config = ctor["ctor_args_and_kwargs"][0][0]
    policies = {}
    for team in _team_order(config, root):
        module_ctor = _unpickle(root / MODULES / team / runfiles.CHECKPOINT_CTOR, name, Path(path))
        kwargs = module_ctor["ctor_args_and_kwargs"][1]
        model = kwargs["model_config"]
        views = kwargs["observation_space"]["views"].shape
        policies[team] = TeamPolicy(
            team=team, algorithm=model["algorithm"], n_agents=int(views[0]),
            n_actions=int(kwargs["action_space"].nvec[0]),
            view_shape=tuple(int(d) for d in views[1:]),
            mean_action=model["mean_action"],
            sizes={key: model[key] for key in MODEL_SIZES if key in model},
            path=root / MODULES / team,
        )
    state = _unpickle(root / runfiles.CHECKPOINT_STATE, name, Path(path), missing={})
    checkpoint = TeamCheckpoint(path=root, config=config, policies=policies,
                                iteration=int(state.get("training_iteration", 0)), n_active={})
    curriculum = Curriculum(CurriculumConfig.from_dict(config.get("curriculum")),
                            {t: p.n_agents for t, p in policies.items()},
                            fixed_n_active=checkpoint.env_config.n_active)
    if state.get("team_q", {}).get("curriculum"):
        curriculum.set_state(state["team_q"]["curriculum"])
    object.__setattr__(checkpoint, "n_active", curriculum.n_active())
    return checkpoint


def _team_order(config: dict[str, Any], root: Path) -> list[str]:
    """The checkpoint's teams, the learning team first (the game's team order)."""
    modules = root / MODULES
    held = {p.name for p in modules.iterdir() if (p / runfiles.CHECKPOINT_CTOR).is_file()} \
        if modules.is_dir() else set()
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
