"""How large a team's Q-values can honestly get: the bound of the learner's divergence check.

A Q-value estimates a discounted sum of the rewards the learner regresses, so the Bellman fixed
point obeys |Q| <= r_max / (1 - gamma), where r_max bounds |reward per step| (n-step returns
change nothing: their bootstrap discount is gamma^h). r_max comes from the env's own reward
settings, per game and team, from magent2's reward rules (one action per agent and step, so
each event happens at most once per agent and step):

* pursuit, predator: nothing (0), a tag that misses (tag_penalty) or one that hits a prey
  (1 + tag_penalty); a team sums to at most n_predators times that.
* pursuit, prey: -1 per predator tagging it; every predator tags at most once, so both one
  prey's and the team's reward are >= -n_predators.
* battle: step_reward every step, plus one of nothing / attack_penalty / attack_penalty +
  attack_opponent_reward / that + magent2's kill reward (5), plus dead_penalty if it dies;
  a team sums to at most n_agents times that.

What the learner regresses sets the scale: the team's summed reward (`team_reward: sum`), that
sum / N (`mean`), or the agent's own reward (`reward_mode: individual`, learners without a
mixer). With gamma = 1 episodes end only by truncation, which bootstraps, so nothing bounds Q
and the check is off (an infinite bound).

`FACTOR` (10) leaves room for what a Q-value may legitimately do beyond the fixed point: r_max
is a worst case (every agent scoring every step; real returns stay well inside, e.g. a healthy
pursuit predator earns about 0.3 a step against a bound of 0.8), a mixer leaves the agents' Q
scale free up to its slope dQ_tot/dQ_i (QMIX's measured slopes go down to 0.14, so agents'
Q-values about 7x Q_tot's scale: docs/algorithms/qmix.md#ablation), and fitted values
overshoot in transients. A diverging network passes it by orders of magnitude.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from magent2.environments.battle.battle import KILL_REWARD

from marlscale.envs.config import TeamEnvConfig

FACTOR = 10.0
"""The bound's multiple of max|reward per step| / (1 - gamma) (see the module docstring)."""


@dataclass(frozen=True)
class QBound:
    """`value` = FACTOR x `reward` / (1 - `gamma`): the largest |Q_i| the check allows."""

    reward: float
    """max |reward per step| of what the learner regresses."""
    what: str
    """What `reward` bounds, in words (e.g. "team reward per step")."""
    gamma: float

    @property
    def value(self) -> float:
        return math.inf if self.gamma >= 1.0 else FACTOR * self.reward / (1.0 - self.gamma)

    def __str__(self) -> str:
        return (f"{self.value:.3g} = {FACTOR:g} x max|{self.what}| {self.reward:.3g} / "
                f"(1 - gamma {self.gamma:g})")


def agent_reward_bound(env_config: TeamEnvConfig, team: int) -> float:
    """max |reward| one agent of `team` (0: the learning team) can get in one step."""
    args = {**env_config.game_spec.module.default_reward_args, **env_config.rewards}
    n_predators = env_config.team_counts[0]
    if env_config.game == "adversarial_pursuit":
        tag = args["tag_penalty"]
        return max(abs(tag), abs(1.0 + tag)) if team == 0 else float(n_predators)
    attack = args["attack_penalty"]
    outcomes = (0.0, attack, attack + args["attack_opponent_reward"],
                attack + args["attack_opponent_reward"] + KILL_REWARD)
    return max(abs(args["step_reward"] + outcome + death)
               for outcome in outcomes for death in (0.0, args["dead_penalty"]))


def team_reward_bound(env_config: TeamEnvConfig, team: int) -> float:
    """max |the team's summed reward| in one step."""
    if env_config.game == "adversarial_pursuit" and team == 1:
        return float(env_config.team_counts[0])  # every predator tags at most once
    return env_config.team_counts[team] * agent_reward_bound(env_config, team)


def q_bound(env_config: TeamEnvConfig, team: int, *, gamma: float, team_reward: str = "sum",
            mixer: bool = True) -> QBound:
    """The bound on |Q_i| of `team`'s agents for the learner's regression target: the agent's
    own reward (`reward_mode: individual`, no mixer), else the team reward, summed or / N."""
    if env_config.reward_mode == "individual" and not mixer:
        return QBound(agent_reward_bound(env_config, team), "own reward per step", gamma)
    reward = team_reward_bound(env_config, team)
    if team_reward == "mean":
        return QBound(reward / env_config.team_counts[team], "team reward / N per step",
                      gamma)
    return QBound(reward, "team reward per step", gamma)
