"""`LeagueSpec`: algorithms trained head-to-head, then cross-played (`marlscale league`).

    experiment: fig7_league
    game: battle                        # or adversarial_pursuit (prey learn too)
    algorithms: [qmix, mfq, mfqmix]     # default; any of iql, vdn, qmix, mfq, mfqmix
    n_agents: 12
    seeds: [0, 1, 2, 3, 4]
    env_config: {max_cycles: 400}       # TeamEnvConfig fields but opponent and n_agents
    training: {learning_starts: 2000}   # TeamQConfig settings but the two algorithms
    stop: {env_steps: 300000}
    resources / checkpoint_every / max_failures / max_concurrent_trials / wandb: as in sweeps
    evaluation: {episodes: 10, seed: 0, epsilon: 0.0, num_env_runners: null,
                 random_opponent: true}

The league's training is a sweep (`sweep_spec()`: grid axis `pair` x `seed`), validated trial
by trial before Ray starts; evaluation/league.py runs it and the cross-play.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

from marlscale import runfiles
from marlscale.algorithms.registry import ALGORITHMS
from marlscale.envs import GAMES
from marlscale.runspec.common import (
    ExperimentSpec,
    SpecError,
    check_section,
    check_typed,
    names,
    to_dict,
)
from marlscale.runspec.sweep import PAIR_AXIS, SweepSpec
from marlscale.specfile import setting

DEFAULT_ALGORITHMS = ["qmix", "mfq", "mfqmix"]


@dataclass(frozen=True)
class LeagueEvaluation:
    """`evaluation:` — how the league's policies cross-play."""

    episodes: int = setting(10, kind="int", low=1, doc="greedy episodes per matchup and side")
    seed: int = setting(0, kind="int", low=0, doc="the episodes' seeds (common to matchups)")
    epsilon: float = setting(0.0, kind="float", low=0, high=1,
                             doc="per-agent random-action rate")
    num_env_runners: int | None = setting(None, kind="int", low=0, optional=True,
                                          doc="null: one per CPU of the cluster")
    random_opponent: bool = setting(True, kind="bool",
                                    doc="each policy also plays the random team")


@dataclass
class LeagueSpec(ExperimentSpec):
    """A league: the shared experiment keys plus the algorithms, N, seeds and cross-play."""

    game: str = setting("battle", kind="str", choices=tuple(GAMES),
                        doc="battle (sides mirrored) or pursuit (prey learn too)")
    algorithms: list[str] = setting(None, kind="list",
                                    default_factory=lambda: list(DEFAULT_ALGORITHMS),
                                    doc="2 or more different algorithms")
    n_agents: int = setting(12, kind="int", low=1, doc="agents per team")
    seeds: list[int] = setting(None, kind="list", default_factory=lambda: [0],
                               doc="training seeds of every pair")
    evaluation: dict[str, Any] = setting(None, kind="mapping", default_factory=dict,
                                         doc="LeagueEvaluation's keys")

    what = "league spec"
    spec_file = runfiles.LEAGUE_SPEC

    def validate(self) -> None:
        """Every check, the training sweep's included, before Ray starts."""
        check_typed(self, self.source, SpecError)
        names = self.algorithms
        if not (isinstance(names, list) and len(names) >= 2
                and all(isinstance(n, str) and n in ALGORITHMS for n in names)
                and len(set(names)) == len(names)):
            raise self.fail("algorithms", names, "a list of 2 or more different algorithms "
                            f"from {', '.join(ALGORITHMS)}")
        if not (isinstance(self.seeds, list) and self.seeds
                and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                        for s in self.seeds) and len(set(self.seeds)) == len(self.seeds)):
            raise self.fail("seeds", self.seeds, "a non-empty list of different integers >= 0")
        for key, owner in (("opponent", "env_config"), ("n_agents", "env_config"),
                           ("algorithm", "training"), ("opponent_algorithm", "training")):
            section = getattr(self, owner)
            if isinstance(section, dict) and key in section:
                raise self.fail(f"{owner}.{key}", section[key], "unset (the league sets it)")
        check_section("evaluation", self.evaluation, LeagueEvaluation, self.source, SpecError)
        self.sweep_spec()  # the training sweep, every trial (and the shared keys) validated

    @property
    def eval_settings(self) -> dict[str, Any]:
        return to_dict(LeagueEvaluation(**self.evaluation))

    def pairs(self) -> list[list[str]]:
        """Battle: each unordered pair once (mirrored sides); pursuit: each ordered pair."""
        combine = itertools.combinations if self.game == "battle" else itertools.permutations
        return [list(pair) for pair in combine(self.algorithms, 2)]

    def sweep_spec(self) -> SweepSpec:
        """The head-to-head training sweep (grid: pair x seed)."""
        shared = {key: getattr(self, key) for key in names(ExperimentSpec)}
        values = {
            **shared, "game": self.game,
            "env_config": {**self.env_config, "opponent": "learned", "n_agents": self.n_agents},
            "grid": {PAIR_AXIS: self.pairs(), "seed": self.seeds},
        }
        try:
            return SweepSpec.from_dict(copy.deepcopy(values), source=self.source)
        except SpecError as error:
            raise SpecError(str(error).replace("env_config.n_agents", "n_agents")) from None

