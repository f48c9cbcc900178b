"""MAgent2 games as RLlib multi-agent envs in which each team is one agent id.

Registered with RLlib/Tune under the names in `ENV_NAMES` when `register_envs()` runs (and on
import of this package), so a config can say ``.environment("marlscale/battle", ...)``.
"""

from __future__ import annotations

from marlscale.envs.config import TeamEnvConfig
from marlscale.envs.games import GAMES
from marlscale.envs.team_env import MagentTeamEnv, runner_seed_offset

ENV_NAMES = {game: f"marlscale/{game}" for game in GAMES}
"""RLlib/Tune env names: marlscale/adversarial_pursuit and marlscale/battle."""
GAME_OF_ENV = {name: game for game, name in ENV_NAMES.items()}
"""The game of each RLlib/Tune env name."""


def make_env(game: str):
    """Env creator for one game: RLlib's env_config picks everything but the game."""

    def create(env_config) -> MagentTeamEnv:
        values = dict(env_config or {})
        if values.setdefault("game", game) != game:
            raise ValueError(
                f"env config: game={values['game']!r} is invalid for env {ENV_NAMES[game]!r}; "
                f"allowed: {game!r} (or leave it out)"
            )
        config = TeamEnvConfig.from_dict(values)
        return MagentTeamEnv(config, seed_offset=runner_seed_offset(env_config))

    return create


def register_envs() -> None:
    """Register every game with Tune's registry (idempotent)."""
    from ray.tune.registry import register_env

    for game, name in ENV_NAMES.items():
        register_env(name, make_env(game))


__all__ = ["ENV_NAMES", "GAMES", "GAME_OF_ENV", "MagentTeamEnv", "TeamEnvConfig", "make_env",
           "register_envs", "runner_seed_offset"]

register_envs()
