"""`marlscale export`: one team of a checkpoint as one small file that needs torch only.

    marlscale export CKPT[:team] --out policy.pt

The checkpoint is read as every other command reads one (algorithms/checkpoints.py: its JSON
and file sizes checked before any pickle); the team's module is then loaded in this process
(no Ray started), its agent network traced by torch.export (models/exported.py) and written
with a metadata record (marlscale/policy.py). Before the file is put in place, the program is
checked on the observations of a seeded episode of the checkpoint's own env: its Q-values must
equal the module's (`q_check`, recorded in the file), and the file, loaded back by
`marlscale.policy.load`, must give the same ones. Nothing is written when a check fails.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marlscale import keys, policy, provenance, runfiles
from marlscale.algorithms import checkpoints
from marlscale.envs.config import TeamEnvConfig
from marlscale.evaluation.evaluate import check_out
from marlscale.models.exported import export_program

CHECK_STEPS = 10
"""Steps of the seeded episode whose observations the export is checked on."""
CHECK_SEED = 0


def check_out_file(out: str) -> Path:
    """--out: a .pt (or .pt2) file in an existing, writable folder."""
    return check_out(out, ".pt2" if str(out).lower().endswith(".pt2") else ".pt", "--out")


def export(checkpoint: str, out: str, name: str = "CHECKPOINT") -> dict[str, Any]:
    """Export the team `checkpoint` names (CKPT[:team]) to `out`; what was written."""
    out_path = check_out_file(out)
    path, team = checkpoints.split_team(checkpoint)
    loaded = checkpoints.load(path, name)
    team_policy = loaded.policy(team, name)
    trained = loaded.n_active[team_policy.team]
    if trained < 1:
        raise ValueError(f"{name} {checkpoint!r} is invalid: its curriculum stage trained none "
                         f"of its {team_policy.n_agents} {team_policy.team} agents; allowed: a "
                         "checkpoint whose stage trained at least one")
    record = {"commit": _trained_commit(loaded.path), "checkpoint": str(loaded.path),
              "iteration": loaded.iteration}
    return export_module(team_policy.load_module(), loaded.env_config, team_policy.team,
                         trained, out_path, record)


def export_module(module, env_config: TeamEnvConfig, team: str, trained: int, out: Path,
                  record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Export a team module (`TeamQModule`) of `team` in `env_config`'s game, whose first
    `trained` slots are trained, to `out`, after checking the program's Q-values against the
    module's; `record`: more of the metadata (the commit, the checkpoint). What was written."""
    view_shape = tuple(int(d) for d in module.observation_space[keys.VIEWS].shape[1:])
    program = export_program(module.agent, trained, view_shape, module.n_actions)
    if trained < module.n_agents:  # the program gives those slots the trained ones' mean
        module.grow_embeddings(trained, module.n_agents)
    batch = _check_batch(env_config, team, CHECK_STEPS, CHECK_SEED)
    inputs = list(_program_inputs(batch, module.mean_action))
    with torch.no_grad():
        expected = _module_q(module, batch)
        run = program.module()
        got = [run(*(torch.from_numpy(x) for x in step)).numpy() for step in inputs]
    q_check = _compare(expected, got)
    if not q_check["within_tolerance"]:
        raise RuntimeError(f"the exported program's Q-values differ from the checkpoint "
                           f"module's by up to {q_check['max_abs_diff']:.3g}: not written")
    meta = {"game": env_config.game, "side": team, "n_agents": module.n_agents,
            "trained": trained, "view_shape": list(view_shape), "n_actions": module.n_actions,
            "algorithm": module.algorithm, "mean_action": module.mean_action,
            "neighbourhood_fraction": float(env_config.neighbourhood_fraction),
            "commit": "unknown", "exported_by": provenance.commit(), **(record or {}),
            "q_check": q_check}
    timing = {}

    def reload(temporary: Path) -> None:
        started = time.perf_counter()
        again = policy.load(temporary)
        timing["load_s"] = time.perf_counter() - started
        if not all(np.array_equal(again.q_values(*step), q) for step, q in zip(inputs, got)):
            raise RuntimeError("the export, loaded back, gives other Q-values than the program "
                               "written: not written")

    size = policy.write(program, meta, out, check=reload)
    return {"out": str(out.resolve()), "bytes": size, "load_s": round(timing["load_s"], 4),
            **{k: meta[k] for k in ("game", "side", "algorithm", "n_agents", "trained",
                                    "mean_action", "commit", "q_check")}}


def _trained_commit(checkpoint: Path) -> str:
    """The commit that trained the checkpoint: its run's provenance.json (a train run's
    RUN_DIR/checkpoints/iter_N or a sweep's RUN_DIR/trial/checkpoint_N), the last resume's
    where it was resumed; "unknown" without one."""
    record = checkpoint.parents[1] / runfiles.PROVENANCE
    if not record.is_file():
        return "unknown"
    values = provenance.read(record)
    latest = (values.get("resumed") or [values])[-1]
    return str(latest.get("commit", "unknown"))


def _check_batch(env_config: TeamEnvConfig, team: str, steps: int,
                 seed: int) -> list[dict[str, np.ndarray]]:
    """The team's observations over the first `steps` steps of a seeded episode of the
    checkpoint's env (both teams acting at random, every agent active, mean actions on)."""
    from marlscale.envs.team_env import MagentTeamEnv

    values = env_config.to_dict()
    values.update(opponent="learned", n_active=None, mean_actions=True, seed=seed)
    env = MagentTeamEnv(TeamEnvConfig.from_dict(values))
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    batch = [obs[team]]
    for _ in range(steps - 1):
        actions = {name: rng.integers(0, space.nvec) for name, space in env.action_spaces.items()}
        obs, _, terminated, truncated, _ = env.step(actions)
        if terminated["__all__"] or truncated["__all__"]:
            break
        batch.append(obs[team])
    return batch


def _module_q(module, batch: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """The checkpoint module's Q-values of the alive agents, step by step."""
    qs = []
    for obs in batch:
        tensors = {key: torch.from_numpy(value[None]) for key, value in obs.items()}
        alive = obs[keys.ALIVE].astype(bool)
        qs.append(module.q_values(tensors)[0].numpy()[alive])
    return qs


def _program_inputs(batch: list[dict[str, np.ndarray]], mean_action: str | None):
    """Per step, the program's inputs for the same agents: their views as magent2 gives them
    (the env's uint8 / 255, which the program's rounding turns back into the same bytes),
    their slots and their mean actions (zeros for a policy without them)."""
    for obs in batch:
        slots = np.flatnonzero(obs[keys.ALIVE])
        views = obs[keys.VIEWS][slots].astype(np.float32) / np.float32(255.0)
        team = obs[keys.TEAM_MEAN_ACTION]
        if mean_action == "neighbour":
            means = obs[keys.NEIGHBOUR_MEAN_ACTION][slots]
        else:
            means = np.broadcast_to(team if mean_action == "team" else np.zeros_like(team),
                                    (len(slots), len(team)))
        yield views, slots.astype(np.int64), np.ascontiguousarray(means, dtype=np.float32)


def _compare(expected: list[np.ndarray], got: list[np.ndarray]) -> dict[str, Any]:
    diffs = [np.abs(a - b).max() if a.size else 0.0 for a, b in zip(expected, got)]
    scale = max((np.abs(a).max() for a in expected if a.size), default=1.0)
    worst = float(max(diffs, default=0.0))
    return {"observations": int(sum(len(a) for a in expected)), "steps": len(expected),
            "bitwise": all(np.array_equal(a, b) for a, b in zip(expected, got)),
            "max_abs_diff": worst, "within_tolerance": worst <= 1e-5 * max(1.0, float(scale))}

