"""A trained team outside Ray: load a `marlscale export` file and act in MAgent2's own envs.

    import marlscale.policy
    from magent2.environments import battle_v4

    red = marlscale.policy.load("red.pt")
    env = battle_v4.parallel_env(map_size=20)
    observations, _ = env.reset(seed=0)
    actions = red.act(observations, env)      # {"red_0": 7, "red_1": 12, ...}

This module needs torch and numpy only: not Ray, RLlib, gymnasium or marlscale's training
code (`marlscale/mean_field.py`, numpy only, is the one module of marlscale it imports). The
file is a `torch.export` archive (docs/export.md says why) holding the agent network, its slot
embeddings and the observation preprocessing, with a metadata record, `marlscale_policy.json`,
read and checked before torch reads anything else.

Acting, `Policy.act(observations, env)`:
* `observations` is the dict `env.reset()` / `env.step()` return; `env` the PettingZoo
  parallel env itself (magent2's `battle_v4` or `adversarial_pursuit_v4`, default options).
* The agent `red_i` is slot i, as in training (magent2 numbers a team's agents in placement
  order, and so does marlscale's env). Agents absent from the dict, or no longer in
  `env.agents`, are dead: they get no action.
* A mean-field policy (MFQ, MFQMIX) reads the engine's positions through `env` and takes the
  actions this policy returned at the previous step: the team's mean action, or each agent's
  neighbourhood mean action (`marlscale/mean_field.py`, the function training's env calls),
  zero at the episode's first step. `act` must then be called at every step.
* Slots past the trained ones (a larger env than the policy was trained at, or a curriculum
  stage that trained only the first slots) use the mean of the trained slots' embeddings.
  `Policy.fit(env)` says which N the env gave.

**Trust.** torch.export's loader unpickles some payloads (sample inputs, tensor subclasses)
without `weights_only`. `load` first checks, with zipfile and a weights-only unpickler, that the
archive holds nothing but raw tensors, the graph, JSON and weights-only sample inputs, so a file
from elsewhere cannot run code when it is loaded.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marlscale.mean_field import neighbour_mean_actions, team_mean_action

FORMAT = 1
"""The layout of META (and of the program's inputs) that this marlscale writes and reads."""
KIND = "marlscale policy"
META = "marlscale_policy.json"
"""The metadata record's name in the archive (torch.export's `extra_files`)."""
MEAN_ACTIONS = ("team", "neighbour")
FIELDS = {"kind": str, "format": int, "game": str, "side": str, "n_agents": int,
          "trained": int, "view_shape": list, "n_actions": int, "algorithm": str,
          "mean_action": (str, type(None)), "neighbourhood_fraction": float,
          "commit": str, "torch": str}
"""Every key of META a reader relies on, and its type (a record may hold more)."""
ALLOWED = "a file written by `marlscale export CKPT[:team] --out FILE.pt`"
_ARCHIVE_ENTRIES = ("models/", "data/weights/", "data/constants/", "data/sample_inputs/",
                    "extra/", "archive_format", "archive_version", "byteorder", ".data/")
"""What torch.export.save writes for a program without compiled code: all an export holds."""


class Policy:
    """A trained team's greedy (or epsilon-greedy) policy, acting in magent2's PettingZoo envs."""

    def __init__(self, program: torch.nn.Module, meta: dict[str, Any], path: Path):
        self.program = program
        self.meta = meta
        self.path = path
        self._last: dict[str, tuple[int, dict[str, int]]] = {}
        """Per side: (env frame, {agent: action}) of the previous `act`, for mean actions."""
        self._rng = np.random.default_rng()

    # ---- what it is -----------------------------------------------------------------------
    @property
    def game(self) -> str:
        return self.meta["game"]

    @property
    def side(self) -> str:
        """The side it was trained on (it can play any side of the same views and actions)."""
        return self.meta["side"]

    @property
    def view_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["view_shape"])

    @property
    def n_actions(self) -> int:
        return self.meta["n_actions"]

    @property
    def mean_action(self) -> str | None:
        """None, "team" or "neighbour": the mean-action input its network takes."""
        return self.meta["mean_action"]

    # ---- the network ----------------------------------------------------------------------
    def q_values(self, views: np.ndarray, slots: np.ndarray | None = None,
                 mean_action: np.ndarray | None = None) -> np.ndarray:
        """Q float32 [K, A] of K agents: their views [K, H, W, C] as magent2 gives them, their
        slots [K] (default 0..K-1) and, for a mean-field policy, their mean actions [K, A]."""
        views = np.asarray(views, dtype=np.float32)
        k = len(views)
        if views.shape[1:] != self.view_shape:
            raise ValueError(f"views of shape {views.shape[1:]} are invalid for {self._name}; "
                             f"allowed: {self.view_shape}, as the policy was trained")
        if k == 0:
            return np.zeros((0, self.n_actions), dtype=np.float32)
        slots = np.arange(k) if slots is None else np.asarray(slots, dtype=np.int64)
        if mean_action is None:
            if self.mean_action is not None:
                raise ValueError(f"{self._name} takes a {self.mean_action} mean action; none "
                                 "given")
            mean_action = np.zeros((k, self.n_actions), dtype=np.float32)
        with torch.no_grad():
            q = self.program(torch.from_numpy(np.ascontiguousarray(views)),
                             torch.from_numpy(slots),
                             torch.from_numpy(np.asarray(mean_action, dtype=np.float32)))
        return q.numpy()

    # ---- acting in magent2's PettingZoo envs ----------------------------------------------
    def fit(self, env, side: str | None = None) -> dict[str, Any]:
        """Check that the policy can play `side` (default: its own) of `env` and say how: the
        N the env gave, the N trained at, and how many slots use the mean embedding."""
        side = side or self.side
        raw = _magent_env(env)
        game = type(raw).__module__.rsplit(".", 1)[-1]
        if game != self.game:
            raise ValueError(f"env {_env_name(raw)} is magent2's {game}, and {self._name} was "
                             f"trained on {self.game}; allowed: magent2's {self.game} env")
        teams = _team_names(raw)
        if side not in teams:
            raise ValueError(f"side {side!r} is invalid in {_env_name(raw)}; allowed: "
                             f"{', '.join(teams)}")
        agent = f"{side}_0"
        shape = tuple(int(d) for d in raw.observation_space(agent).shape)
        if shape != self.view_shape:
            raise ValueError(
                f"env {_env_name(raw)} gives {side} views of shape {shape}, and {self._name} "
                f"was trained on views of shape {self.view_shape}; allowed: views of shape "
                f"{self.view_shape} (magent2's defaults: minimap_mode=False, "
                "extra_features=False; and the side's own view range)")
        actions = int(raw.action_space(agent).n)
        if actions != self.n_actions:
            raise ValueError(f"env {_env_name(raw)} gives {side} {actions} actions, and "
                             f"{self._name} was trained with {self.n_actions}; allowed: a side "
                             f"with {self.n_actions} actions")
        n = teams[side]
        trained = self.meta["trained"]
        return {"side": side, "n_env": n, "n_trained": self.meta["n_agents"],
                "trained_slots": min(n, trained), "mean_embedding_slots": max(0, n - trained)}

    def observe(self, observations: dict[str, Any], env, side: str | None = None
                ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray | None]:
        """The network's inputs for every alive agent of `side` (default: its own) with an
        observation: (names, views [K, H, W, C], slots [K], mean actions [K, A] or None)."""
        side = self.fit(env, side)["side"]
        raw = _magent_env(env)
        alive = set(raw.agents)
        prefix = f"{side}_"
        names = [name for name in observations if name.startswith(prefix) and name in alive]
        slots = np.array([int(name[len(prefix):]) for name in names], dtype=np.int64)
        views = np.stack([observations[name] for name in names]).astype(np.float32) if names \
            else np.zeros((0, *self.view_shape), np.float32)
        return names, views, slots, self._mean_actions(raw, side, names)

    def act(self, observations: dict[str, Any], env, *, side: str | None = None,
            epsilon: float = 0.0, rng: np.random.Generator | None = None) -> dict[str, int]:
        """An action for every alive agent of `side` (default: the side it was trained on)
        with an observation in `observations`: greedy, or uniformly random with probability
        `epsilon` per agent (drawn from `rng`, default the policy's own generator)."""
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon={epsilon!r} is invalid; allowed: a number in [0, 1]")
        side = side or self.side
        names, views, slots, means = self.observe(observations, env, side)
        actions = self.q_values(views, slots, means).argmax(-1)
        if epsilon > 0 and names:
            rng = rng or self._rng
            explore = rng.random(len(names)) < epsilon
            actions = np.where(explore, rng.integers(0, self.n_actions, len(names)), actions)
        chosen = {name: int(action) for name, action in zip(names, actions)}
        self._last[side] = (int(_magent_env(env).frames), chosen)
        return chosen

    def _mean_actions(self, raw, side: str, names: list[str]) -> np.ndarray | None:
        """The mean-action input of the agents `names` (None without one): from the engine's
        positions of the alive team and the actions this policy returned at the previous
        step, as training's env computes it (zero at the episode's first step)."""
        kind = self.mean_action
        if kind is None:
            return None
        means = np.zeros((len(names), self.n_actions), dtype=np.float32)
        frame = int(raw.frames)
        if frame == 0 or not names:
            return means
        engine = raw.env
        handle = raw.handles[list(_team_names(raw)).index(side)]
        team = [raw.possible_agents[i] for i in engine.get_agent_id(handle)]
        acted_frame, acted = self._last.get(side, (None, {}))
        missing = [name for name in team if name not in acted]
        if acted_frame != frame - 1 or missing:
            did = "did not act" if acted_frame is None else f"last acted at step {acted_frame}"
            raise ValueError(
                f"{self._name} needs the {kind} mean action of step {frame}: every alive {side} "
                f"agent's action at step {frame - 1}, and it {did}"
                + (f" for {', '.join(missing[:3])}" if missing and acted_frame == frame - 1
                   else "") + "; allowed: act() at every step of the episode, for every alive "
                "agent of the side")
        actions = np.array([acted[name] for name in team], dtype=np.int64)
        if kind == "team":
            means[:] = team_mean_action(actions, self.n_actions)
            return means
        rows = neighbour_mean_actions(np.asarray(engine.get_pos(handle)), actions,
                                      self.n_actions, self.meta["neighbourhood_fraction"])
        index = {name: i for i, name in enumerate(team)}
        return rows[[index[name] for name in names]]

    @property
    def _name(self) -> str:
        return f"policy {str(self.path)!r} ({self.meta['algorithm']}, {self.game} {self.side})"


def _magent_env(env):
    """The magent2 PettingZoo parallel env under any wrappers, checked to be one."""
    raw = getattr(env, "unwrapped", env)
    if not all(hasattr(raw, a) for a in ("handles", "env", "frames", "possible_agents")):
        raise ValueError(f"env {_env_name(raw)} is invalid; allowed: a magent2 PettingZoo "
                         "parallel env, e.g. magent2.environments.battle_v4.parallel_env()")
    return raw


def _env_name(raw) -> str:
    return getattr(raw, "metadata", {}).get("name") or type(raw).__name__


def _team_names(raw) -> dict[str, int]:
    """{team: its number of agents} in magent2's handle order, from the agent names."""
    teams: dict[str, int] = {}
    for name in raw.possible_agents:
        team = name.rsplit("_", 1)[0]
        teams[team] = teams.get(team, 0) + 1
    return teams


# ---- the file -------------------------------------------------------------------------------
def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """An export's metadata record, read and checked with zipfile and json only: no torch
    deserialisation, no pickle (a ValueError naming the file otherwise)."""
    given = Path(path)
    if not given.is_file():
        problem = "is a folder" if given.is_dir() else "does not exist"
        raise ValueError(f"policy file {str(path)!r} {problem}; allowed: {ALLOWED}")
    not_export = f"policy file {str(path)!r} is not a marlscale export"
    try:
        with zipfile.ZipFile(given) as archive:
            entries = {name.partition("/")[2]: name for name in archive.namelist()}
            if f"extra/{META}" not in entries:
                raise ValueError(f"{not_export}: it holds no {META} (a torch.export archive "
                                 f"of something else?); allowed: {ALLOWED}")
            meta = json.loads(archive.read(entries[f"extra/{META}"]))
            if not isinstance(meta, dict) or meta.get("kind") != KIND:
                raise ValueError(f"{not_export}: its {META} is not marlscale's; allowed: "
                                 f"{ALLOWED}")
            version = meta.get("format")
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise ValueError(f"{not_export}: its {META} has format {version!r}; allowed: "
                                 f"format 1..{FORMAT}")
            if version > FORMAT:
                raise ValueError(f"policy file {str(path)!r} has format version {version}, "
                                 f"newer than this marlscale reads (format {FORMAT}); allowed: "
                                 f"format 1..{FORMAT} (upgrade marlscale, or export it again "
                                 "with this version)")
            for key, kind in FIELDS.items():
                if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
                    raise ValueError(f"{not_export}: its {META} has {key}="
                                     f"{meta.get(key)!r}; allowed: {ALLOWED}")
            _check_payloads(archive, entries, not_export)
    except zipfile.BadZipFile:
        raise ValueError(f"{not_export}: not a torch.export archive (no zip); allowed: "
                         f"{ALLOWED}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{not_export}: its {META} is unreadable ({error}); allowed: "
                         f"{ALLOWED}") from None
    return meta


def _check_payloads(archive: zipfile.ZipFile, entries: dict[str, str], not_export: str) -> None:
    """Refuse an archive whose loading would unpickle anything but plain tensors."""
    refused = [entry for entry in entries if not entry.startswith(_ARCHIVE_ENTRIES)]
    for entry, name in entries.items():
        if entry.startswith(("data/weights/", "data/constants/")) and entry.endswith(".json"):
            config = json.loads(archive.read(name)).get("config", {})
            if any(item.get("use_pickle") or not str(item.get("path_name", "")).startswith(
                    ("weight_", "tensor_")) for item in config.values()):
                refused.append(entry)
        elif entry.startswith("data/sample_inputs/"):
            try:
                torch.load(io.BytesIO(archive.read(name)), weights_only=True)
            except Exception:  # noqa: BLE001 - anything but plain tensors: not ours
                refused.append(entry)
    if refused:
        raise ValueError(f"{not_export}: it holds {refused[0]}, which would run pickled code "
                         f"or compiled code when loaded, and an export holds neither; allowed: "
                         f"{ALLOWED}")


def load(path: str | os.PathLike) -> Policy:
    """The policy in an export file, checked (`read_metadata`) before torch loads it."""
    meta = read_metadata(path)
    try:
        # From a buffer: torch.export would otherwise insist on a .pt2 suffix.
        program = torch.export.load(io.BytesIO(Path(path).read_bytes())).module()
    except Exception as error:  # noqa: BLE001 - say which torch cannot read which file
        raise ValueError(f"policy file {str(path)!r} was written by torch {meta['torch']} and "
                         f"this torch {torch.__version__} cannot read it ({type(error).__name__}"
                         f": {error}); allowed: {ALLOWED} with a torch that reads it") from None
    return Policy(program, meta, Path(path))


def write(program: torch.export.ExportedProgram, meta: dict[str, Any],
          path: str | os.PathLike, check: Callable[[Path], None] | None = None) -> int:
    """Write an export whole or not at all: into a temporary file in the same folder, which
    `check(temporary)` may inspect (and refuse by raising), then renamed; its size in bytes."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(suffix=".pt.tmp", dir=path.parent)
    os.close(handle)
    try:
        values = {"kind": KIND, "format": FORMAT, "torch": torch.__version__.split("+")[0],
                  **meta}
        buffer = io.BytesIO()  # torch.export names files .pt2; through a buffer, any name
        torch.export.save(program, buffer, extra_files={META: json.dumps(values, indent=1)})
        Path(temporary).write_bytes(buffer.getvalue())
        umask = os.umask(0)  # mkstemp's file is private (0600): give it a new file's mode
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        if check is not None:
            check(Path(temporary))
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    """`python -m marlscale.policy FILE`: an export's metadata record as JSON (read without
    loading the program); a bad file is one line and exit status 2."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m marlscale.policy",
        description="Print the metadata record of a `marlscale export` file (game, side, N, "
                    "views, algorithm, mean action, trained slots, commit, format version).")
    parser.add_argument("file", metavar="FILE", help="the export (.pt)")
    args = parser.parse_args(argv)
    try:
        meta = read_metadata(args.file)
    except ValueError as error:
        print(f"marlscale.policy: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
