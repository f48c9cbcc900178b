"""W&B settings shared by `marlscale train` and sweeps: the `wandb:` spec key, and env steps as
the x-axis of every metric.

    wandb: {project: marlscale, mode: auto, entity: my-team}   # every key optional
    # mode: auto (online iff WANDB_API_KEY is set, else offline) | offline | online | disabled

Offline mode needs no account: runs land under the run directory's `wandb/` and can be
uploaded later with `wandb sync`. The API key is only ever read from WANDB_API_KEY by W&B
itself; marlscale never prints, logs or writes it. Nothing here imports wandb until a run
starts, so specs are checked without it.
"""

from __future__ import annotations

import os
import secrets
import string
from pathlib import Path
from typing import Any

from marlscale import keys

API_KEY_VAR = "WANDB_API_KEY"
DEFAULT_PROJECT = "marlscale"
WANDB_KEYS = ("project", "mode", "entity")
WANDB_MODES = ("auto", "offline", "online", "disabled")
X_AXIS = keys.ENV_STEPS


def resolve_mode(mode: str) -> str:
    """auto -> online when WANDB_API_KEY is set, else offline."""
    if mode == "auto":
        return "online" if os.environ.get(API_KEY_VAR) else "offline"
    return mode


def check(values: Any, source: str, error: type[ValueError] = ValueError) -> None:
    """A spec's `wandb:` mapping: known keys, a known mode, string project and entity."""
    def fail(key, value, allowed):
        return error(f"{source}: {key}={value!r} is invalid; allowed: {allowed}")

    if not isinstance(values, dict):
        raise fail("wandb", values, "a mapping")
    for key in values:
        if key not in WANDB_KEYS:
            raise error(f"{source}: key 'wandb.{key}' is unknown; allowed: "
                        f"{', '.join(WANDB_KEYS)}")
    if values.get("mode", "auto") not in WANDB_MODES:
        raise fail("wandb.mode", values.get("mode"), ", ".join(WANDB_MODES))
    for key in ("project", "entity"):
        if key in values and not isinstance(values[key], str):
            raise fail(f"wandb.{key}", values[key], "a string")


def define_x_axis(run) -> None:
    """Env steps as the x-axis of every metric (`run`: a wandb Run, or the wandb module)."""
    run.define_metric(X_AXIS)
    run.define_metric("*", step_metric=X_AXIS)


def new_run_id() -> str:
    """A W&B run id (8 lowercase letters and digits, as W&B makes them), chosen before the run
    starts so that it can be stored and the run continued later."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def start_run(settings: dict[str, Any], run_dir: Path, *, run_id: str, group: str, name: str,
              config: dict[str, Any]):
    """A W&B run writing into RUN_DIR/wandb/, continued if `run_id` already exists, with env
    steps as its x-axis; None when the mode is disabled."""
    mode = resolve_mode(settings.get("mode", "auto"))
    if mode == "disabled":
        return None
    import wandb

    run = wandb.init(project=settings.get("project", DEFAULT_PROJECT),
                     entity=settings.get("entity"), mode=mode, dir=str(run_dir), id=run_id,
                     resume="allow", group=group, name=name, config=config)
    define_x_axis(run)
    return run
