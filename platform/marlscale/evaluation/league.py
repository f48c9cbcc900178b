"""`marlscale league`: algorithms trained head-to-head, then every policy against every other.

The paper's Fig 7 (bottom) and more, from one spec (tune_specs/fig7_league.yaml):

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

1. Train: every pair of algorithms, x seeds, is one head-to-head trial of a Tune sweep (the
   sweep machinery, with its resume and retries; grid axis `pair`). In battle each unordered
   pair trains once (the sides are mirror images); in pursuit each ordered pair does, so every
   algorithm is trained as predator and as prey.
2. Cross-play: every trial's final checkpoint holds two policies. Each plays every policy of
   every other algorithm, from all pairs and seeds, `episodes` greedy episodes on each side it
   can play (battle: both; pursuit: its own), with the same episode seeds for every matchup
   (common random numbers). With `random_opponent`, each policy also plays the random team.
3. Write to the run directory, beside the sweep's results.csv and trials.csv:
   - league.csv: row algorithm x column algorithm (and the row's side: `both` in battle,
     `predator`/`prey` in pursuit): mean reward difference (row minus column, per agent), its
     95% CI over episodes, its 95% CI over training seeds (`seeds`, `seed_ci95_low/high`:
     each seed's mean is one value, grouped by the row's or the column's seeds, whichever
     interval is wider; with 2+ seeds this is the interval to read, since episodes of one
     policy are not independent replicates), win rate, draw rate, episodes, matchups (policy
     pairs);
   - ratings.csv: per algorithm and side, its mean reward difference against all other
     algorithms (random excluded) with both 95% CIs, its win rate, and its result against
     random;
   - matchups.csv: every policy pair and side assignment on its own;
   - episodes.csv: every cross-play episode from each policy side's point of view (the rows
     the tables above are computed from);
   - training_curves.csv: the reward difference over training, per pair x seed.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from marlscale import keys
from marlscale.algorithms import checkpoints
from marlscale.algorithms.registry import ALGORITHMS
from marlscale.envs import ENV_NAMES, GAMES
from marlscale.evaluation.arena import (
    RANDOM,
    Arena,
    Contestant,
    Game,
    arena_env_config,
    episode_seed,
)
from marlscale.evaluation.evaluate import interval, outcome
from marlscale.sweeps import results as sweep_results
from marlscale.sweeps.spec import (
    PAIR_AXIS,
    SpecError,
    SweepSpec,
    check_keys,
    read_spec_file,
)

LEAGUE_FILE = "league.yaml"
DEFAULT_ALGORITHMS = ["qmix", "mfq", "mfqmix"]
SPEC_KEYS = ("experiment", "description", "game", "algorithms", "n_agents", "seeds",
             "env_config", "training", "stop", "resources", "checkpoint_every", "max_failures",
             "max_concurrent_trials", "wandb", "evaluation")
EVALUATION_KEYS = ("episodes", "seed", "epsilon", "num_env_runners", "random_opponent")
BOTH = "both"
SEED_CI = ("seed_ci95_low", "seed_ci95_high")


@dataclass
class LeagueSpec:
    """A league: head-to-head training of algorithm pairs, then cross-play."""

    experiment: str
    description: str = ""
    game: str = "battle"
    algorithms: list[str] = field(default_factory=lambda: list(DEFAULT_ALGORITHMS))
    n_agents: int = 12
    seeds: list[int] = field(default_factory=lambda: [0])
    env_config: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    stop: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    checkpoint_every: int = 10
    max_failures: int = 2
    max_concurrent_trials: int | None = None
    wandb: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    source: str = "spec"

    @classmethod
    def load(cls, path: str | os.PathLike) -> LeagueSpec:
        return cls.from_dict(read_spec_file(path, "league spec"), str(path))

    @classmethod
    def from_dict(cls, values: Any, source: str = "spec") -> LeagueSpec:
        check_keys(values, SPEC_KEYS, source, "league spec")
        spec = cls(**copy.deepcopy(values), source=source)
        spec.validate()
        return spec

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values.pop("source")
        return values

    def fail(self, key: str, value: Any, allowed: str) -> SpecError:
        return SpecError(f"{self.source}: {key}={value!r} is invalid; allowed: {allowed}")

    def validate(self) -> None:
        """Every check, the training sweep's included, before Ray starts."""
        if self.game not in GAMES:
            raise self.fail("game", self.game, ", ".join(GAMES))
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
        if not isinstance(self.evaluation, dict):
            raise self.fail("evaluation", self.evaluation, "a mapping")
        for key in self.evaluation:
            if key not in EVALUATION_KEYS:
                raise SpecError(f"{self.source}: key 'evaluation.{key}' is unknown; allowed: "
                                f"{', '.join(EVALUATION_KEYS)}")
        ev = self.eval_settings
        for key, low in (("episodes", 1), ("seed", 0)):
            value = ev[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise self.fail(f"evaluation.{key}", value, f"an integer >= {low}")
        runners = ev["num_env_runners"]
        if runners is not None and (isinstance(runners, bool) or not isinstance(runners, int)
                                    or runners < 0):
            raise self.fail("evaluation.num_env_runners", runners, "null or an integer >= 0")
        epsilon = ev["epsilon"]
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) \
                or not math.isfinite(epsilon) or not 0 <= epsilon <= 1:
            raise self.fail("evaluation.epsilon", epsilon, "a number in [0, 1]")
        if not isinstance(ev["random_opponent"], bool):
            raise self.fail("evaluation.random_opponent", ev["random_opponent"], "true, false")
        self.sweep_spec()  # the training sweep, every trial validated

    @property
    def eval_settings(self) -> dict[str, Any]:
        return {"episodes": 10, "seed": 0, "epsilon": 0.0, "num_env_runners": None,
                "random_opponent": True, **self.evaluation}

    def pairs(self) -> list[list[str]]:
        """Battle: each unordered pair once (mirrored sides); pursuit: each ordered pair."""
        combine = itertools.combinations if self.game == "battle" else itertools.permutations
        return [list(pair) for pair in combine(self.algorithms, 2)]

    def sweep_spec(self) -> SweepSpec:
        """The head-to-head training sweep (grid: pair x seed)."""
        values = {
            "experiment": self.experiment, "description": self.description, "game": self.game,
            "env_config": {**self.env_config, "opponent": "learned", "n_agents": self.n_agents},
            "training": self.training,
            "grid": {PAIR_AXIS: self.pairs(), "seed": self.seeds},
            "stop": self.stop, "resources": self.resources,
            "checkpoint_every": self.checkpoint_every, "max_failures": self.max_failures,
            "max_concurrent_trials": self.max_concurrent_trials, "wandb": self.wandb,
        }
        try:
            return SweepSpec.from_dict(copy.deepcopy(values), source=self.source)
        except SpecError as error:
            raise SpecError(str(error).replace("env_config.n_agents", "n_agents")) from None


# ---- cross-play ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Member:
    """One policy of the population: a trial's final checkpoint and one of its teams."""

    key: str
    """'<trial dir>:<team>'."""
    seed: int
    contestant: Contestant


def population(run_dir: Path) -> tuple[list[Member], list[str]]:
    """Every trial's final policies, and the trials that left no checkpoint."""
    members, missing = [], []
    for trial_dir in sweep_results.trial_dirs(run_dir):
        params = json.loads((trial_dir / "params.json").read_text())
        try:
            checkpoint = checkpoints.load(trial_dir, "trial")
        except ValueError:
            missing.append(trial_dir.name)
            continue
        for team, policy in checkpoint.policies.items():
            members.append(Member(
                key=f"{trial_dir.name}:{team}", seed=params.get("seed"),
                contestant=Contestant(label=f"{checkpoint.path}:{team}", checkpoint=checkpoint,
                                      policy=policy)))
    return members, missing


def schedule(members: list[Member], sides: list[str], episodes: int, seed: int, epsilon: float,
             random_opponent: bool) -> list[Game]:
    """Every cross-algorithm matchup (and each policy against random) on each side each policy
    can play, `episodes` games each, with the same episode seeds for every matchup."""
    interchangeable = _interchangeable(members)

    def playable(member: Member) -> list[str]:
        # Battle's sides are interchangeable; a pursuit policy plays only its own role.
        return sides if interchangeable else [member.contestant.trained_side]

    pairings: list[tuple[Member, Member | None]] = [
        (a, b) for a, b in itertools.combinations(members, 2)
        if a.contestant.algorithm != b.contestant.algorithm]
    if random_opponent:
        pairings += [(m, None) for m in members]
    games = []
    for a, b in pairings:
        for side in playable(a):
            other = sides[1 - sides.index(side)]
            if b is not None and other not in playable(b):
                continue
            for episode in range(episodes):
                games.append(Game(
                    index=len(games), sides={side: a.key, other: None if b is None else b.key},
                    seed=episode_seed(seed, episode), epsilon=epsilon,
                    tags={"episode": episode}))
    return games


def _interchangeable(members: list[Member]) -> bool:
    """Every policy fits every side (battle), or each only its own role (pursuit)."""
    shapes = {(m.contestant.policy.n_agents, m.contestant.policy.view_shape,
               m.contestant.policy.n_actions) for m in members}
    return len(shapes) == 1


def perspectives(results: list[dict[str, Any]], members: dict[str, Member]) -> list[dict]:
    """Each game's result from each policy side's point of view (random sides have none)."""
    rows = []
    for result in results:
        sides = result["sides"]
        for side, key in sides.items():
            if key is None:
                continue
            other = next(s for s in sides if s != side)
            rival = sides[other]
            mine, theirs = result["metrics"][side], result["metrics"][other]
            rows.append({
                "algorithm": members[key].contestant.algorithm, "side": side, "policy": key,
                "seed": members[key].seed, "opponent_algorithm":
                    RANDOM if rival is None else members[rival].contestant.algorithm,
                "opponent_policy": RANDOM if rival is None else rival,
                "opponent_seed": None if rival is None else members[rival].seed, "episode":
                    result["tags"]["episode"],
                keys.REWARD_DIFFERENCE: mine[keys.REWARD_DIFFERENCE],
                keys.RETURN_PER_AGENT: mine[keys.RETURN_PER_AGENT],
                "outcome": outcome(mine, theirs)})
    return rows


def _summary(frame, by: list[str], over_seeds: bool = False):
    """Per group: the mean reward difference with its 95% t-interval over episodes, and with
    `over_seeds` also over training seeds (see `_over_seeds`)."""
    import pandas as pd

    rows = []
    for group, part in frame.groupby(by, sort=True):
        stat = interval(part[keys.REWARD_DIFFERENCE].to_numpy())
        ci = stat["ci95"] or [math.nan, math.nan]
        row = {**dict(zip(by, group if isinstance(group, tuple) else (group,))),
               keys.REWARD_DIFFERENCE: stat["mean"], "ci95_low": ci[0], "ci95_high": ci[1],
               "std": stat["std"]}
        if over_seeds:
            row.update(_over_seeds(part))
        rows.append({**row, "win_rate": float((part["outcome"] == 1.0).mean()),
                     "draw_rate": float((part["outcome"] == 0.5).mean()),
                     "episodes": len(part),
                     "matchups": part[["policy", "opponent_policy"]].drop_duplicates().shape[0]})
    return pd.DataFrame(rows)


def _over_seeds(part) -> dict[str, Any]:
    """The 95% t-interval over training seeds: each seed's mean over its episodes is one value.
    A cell's episodes can be grouped by the row policies' seeds or by the column policies'
    (random has none); the wider of the two intervals is taken, so that a cell and its mirror
    (B against A is A against B negated) get the same interval. No interval (NaN) where
    either grouping has fewer than 2 seeds."""
    widest = {"seeds": 0, SEED_CI[0]: math.nan, SEED_CI[1]: math.nan}
    for column in ("seed", "opponent_seed"):
        if column not in part or part[column].isna().all():
            continue
        per_seed = part.groupby(column)[keys.REWARD_DIFFERENCE].mean()
        ci = interval(per_seed.to_numpy())["ci95"]
        if ci is None:
            return {"seeds": len(per_seed), SEED_CI[0]: math.nan, SEED_CI[1]: math.nan}
        low, high = widest[SEED_CI[0]], widest[SEED_CI[1]]
        if math.isnan(low) or ci[1] - ci[0] > high - low:
            widest = {"seeds": len(per_seed), SEED_CI[0]: ci[0], SEED_CI[1]: ci[1]}
    return widest


def ci_columns(table) -> tuple[str, str, str]:
    """The interval a league or ratings table is best read with: over training seeds where it
    has one (policies trained with different seeds are the independent replicates), else over
    episodes (one seed). Returns the low and high columns and what the interval is over."""
    if SEED_CI[0] in table.columns and np.isfinite(table[SEED_CI[0]]).any():
        return SEED_CI[0], SEED_CI[1], "seeds"
    return "ci95_low", "ci95_high", "episodes"


def tables(rows: list[dict[str, Any]], interchangeable: bool) -> dict[str, Any]:
    """league, ratings and matchups tables (pandas) from the perspective rows."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    if interchangeable:
        frame["row_side"] = BOTH
    else:
        frame["row_side"] = frame["side"]
    league = _summary(frame, ["algorithm", "row_side", "opponent_algorithm"],
                      over_seeds=True).rename(
        columns={"row_side": "side", "opponent_algorithm": "column_algorithm"})
    versus = frame[frame["opponent_algorithm"] != RANDOM]
    ratings = _summary(versus, ["algorithm", "row_side"], over_seeds=True).rename(
        columns={"row_side": "side", keys.REWARD_DIFFERENCE: "rating"})
    against_random = frame[frame["opponent_algorithm"] == RANDOM]
    if len(against_random):
        random = _summary(against_random, ["algorithm", "row_side"])[
            ["algorithm", "row_side", keys.REWARD_DIFFERENCE, "win_rate"]].rename(
            columns={"row_side": "side", keys.REWARD_DIFFERENCE: "vs_random_reward_difference",
                     "win_rate": "vs_random_win_rate"})
        ratings = ratings.merge(random, on=["algorithm", "side"], how="left")
    ratings = ratings.sort_values("rating", ascending=False)
    matchups = _summary(frame, ["policy", "side", "opponent_policy", "algorithm",
                                "opponent_algorithm"])
    return {"league": league, "ratings": ratings, "matchups": matchups}


def training_curves(run_dir: Path):
    """The reward difference over training of every trained pair x seed (from results.csv)."""
    frame = sweep_results.load_results(run_dir)
    if not len(frame):
        return frame
    columns = ["trial", PAIR_AXIS, "seed", "training_iteration", keys.ENV_STEPS,
               keys.REWARD_DIFFERENCE]
    columns += sorted(c for c in frame.columns if c.startswith("teams/")
                      or (c.startswith("episodes/") and c.endswith(f"/{keys.RETURN_PER_AGENT}"))
                      or c == f"evaluation/{keys.REWARD_DIFFERENCE}")
    curves = frame[[c for c in columns if c in frame.columns]].copy()
    curves[PAIR_AXIS] = curves[PAIR_AXIS].map(
        lambda p: "-vs-".join(p) if isinstance(p, (list, tuple)) else p)
    return curves


def cross_play(spec: LeagueSpec, run_dir: Path, num_env_runners: int, log=print) -> dict:
    """Stage 2 and 3 on a trained league run dir (Ray must be running)."""
    import time

    import pandas as pd

    start = time.perf_counter()
    members, missing = population(run_dir)
    if not members:
        raise RuntimeError(f"no trial of {run_dir} left a checkpoint; nothing to cross-play")
    ev = spec.eval_settings
    env_config = arena_env_config([m.contestant for m in members], [m.key for m in members])
    sides = list(env_config.game_spec.team_names)
    games = schedule(members, sides, ev["episodes"], ev["seed"], float(ev["epsilon"]),
                     ev["random_opponent"])
    log(f"# cross-play: {len(members)} policies, {len(games)} episodes on "
        f"{max(num_env_runners, 1)} EnvRunner(s)")
    arena = Arena(env_config, {m.key: m.contestant for m in members}, num_env_runners)
    try:
        results = arena.play(games)
    finally:
        arena.stop()
    rows = perspectives(results, {m.key: m for m in members})
    out = tables(rows, _interchangeable(members))
    out["episodes"] = pd.DataFrame(rows)
    out["training_curves"] = training_curves(run_dir)
    paths = {}
    for name, frame in out.items():
        paths[name] = str(run_dir / f"{name}.csv")
        frame.to_csv(paths[name], index=False, float_format="%.6g")
    return {"policies": len(members), "episodes": len(games), "missing_trials": missing,
            "cross_play_s": round(time.perf_counter() - start, 1), "files": paths,
            "ratings": out["ratings"].to_dict(orient="records")}


def check_resumable(run_dir: Path) -> LeagueSpec:
    if not (run_dir / LEAGUE_FILE).is_file():
        raise ValueError(f"--resume {str(run_dir)!r} is invalid; allowed: the run directory of "
                         f"a league started by `marlscale league` ({LEAGUE_FILE} inside)")
    from marlscale.sweeps import runner

    if (run_dir / runner.TUNER_FILE).is_file():
        runner.check_tuner_state(run_dir)
    spec = LeagueSpec.load(run_dir / LEAGUE_FILE)
    runner.check_unchanged(run_dir, spec.sweep_spec().to_dict(), LEAGUE_FILE)
    return spec


def run(spec: LeagueSpec, run_dir: str | Path, *, resume: bool = False, log=print) -> dict:
    """Train (or resume) the league's sweep, then cross-play; Ray must be running."""
    import ray
    import yaml

    from marlscale.sweeps import runner

    run_dir = Path(run_dir).resolve()
    if not resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / LEAGUE_FILE).write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    summary = runner.run(spec.sweep_spec(), run_dir, resume=resume, log=log)
    if summary["interrupted"]:  # cross-play waits for every policy: `--resume` goes on
        return summary
    runners = spec.eval_settings["num_env_runners"]
    if runners is None:
        runners = max(1, int(ray.cluster_resources().get("CPU", 1)))
    summary.update(cross_play(spec, run_dir, runners, log=log))
    summary["game"] = spec.game
    summary["env"] = ENV_NAMES[spec.game]
    return summary


def format_league(league, ratings) -> str:
    """league.csv as a matrix of 'diff [CI] win' cells, plus the ratings, for stdout."""
    low, high, over = ci_columns(league)
    cells = league.assign(cell=[
        f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}] w{w:.2f}" if np.isfinite(lo) else f"{d:+.2f} w{w:.2f}"
        for d, lo, hi, w in zip(league[keys.REWARD_DIFFERENCE], league[low], league[high],
                                league["win_rate"])])
    matrix = cells.pivot_table(index=["algorithm", "side"], columns="column_algorithm",
                               values="cell", aggfunc="first").fillna("-")
    low, high, _ = ci_columns(ratings)
    shown = ratings[["algorithm", "side", "rating", low, high, "win_rate", "episodes"]]
    return (f"reward difference, row minus column, per agent [95% CI over {over}] and win "
            f"rate\n{matrix.to_string()}\n\nratings (mean reward difference against all other "
            f"algorithms)\n" + shown.to_string(index=False, formatters={
                "rating": "{:+.2f}".format, low: "{:+.2f}".format,
                high: "{:+.2f}".format, "win_rate": "{:.2f}".format}))
