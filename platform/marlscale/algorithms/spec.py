"""An algorithm is a declaration over the shared learner: which mixer, which mean-action input,
which bootstrap target. `TeamQLearner` reads these; there is no per-algorithm branch elsewhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Mixer = Literal["vdn", "qmix"]
MeanAction = Literal["neighbour", "team"]
Target = Literal["double_q", "boltzmann"]

MEAN_ACTIONS: tuple[str, ...] = ("neighbour", "team")


@dataclass(frozen=True)
class AlgorithmSpec:
    """One value-decomposition learner of the family."""

    name: str
    """Registry key, as written in specs and on the CLI."""
    summary: str
    """One line for docs and `--help`."""
    mixer: Mixer | None
    """None: each agent learns its own TD target (independent learners); else the mixer's name."""
    mean_action: MeanAction | None
    """None: Q(o_i, a_i); "neighbour"/"team": Q(o_i, a_i, mean action of N_i or of the team)."""
    target: Target
    """"double_q": Q'(s', argmax_a Q(s', a)); "boltzmann": sum_a softmax(Q'/T)(a) Q'(s', a)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Defaults of this algorithm's team that differ from the family's (`TeamQSettings`), by
    name; only per-team settings (`settings.PER_TEAM`). A value the user sets wins."""
