"""`marlscale league`: algorithms trained head-to-head, then every policy against every other.

The paper's Fig 7 (bottom) and more, from one spec (a `LeagueSpec`: marlscale/runspec/league.py
says its keys; tune_specs/league/*.yaml):

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
     policy are not independent replicates), the probability of improvement (`improvement`:
     the chance that the row's reward difference is > 0 in an episode, ties one half) with
     its 95% two-way cluster-bootstrap interval over both sides' training seeds
     (`improvement_ci95_low/high`, stats.clustered_improvement), win rate, draw rate,
     episodes, matchups (policy pairs);
   - ratings.csv: per algorithm and side, its mean reward difference against all other
     algorithms (random excluded) with both 95% CIs, its win rate, and its result against
     random;
   - matchups.csv: every policy pair and side assignment on its own;
   - episodes.csv: every cross-play episode from each policy side's point of view (the rows
     the tables above are computed from);
   - training_curves.csv: the reward difference over training, per pair x seed.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marlscale import keys, runfiles, stats
from marlscale.algorithms import checkpoints
from marlscale.envs import ENV_NAMES
from marlscale.episodes import Game, episode_seed
from marlscale.evaluation.arena import (
    RANDOM,
    Arena,
    Contestant,
    arena_env_config,
)
from marlscale.evaluation.evaluate import outcome
from marlscale.runspec.league import LeagueSpec
from marlscale.runspec.sweep import PAIR_AXIS
from marlscale.sweeps import results as sweep_results

BOTH = "both"


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
        params = json.loads((trial_dir / runfiles.PARAMS_JSON).read_text())
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


IMPROVEMENT = ("improvement", "improvement_ci95_low", "improvement_ci95_high")
"""A league table's probability-of-improvement columns."""


def improvement(episodes) -> tuple[float, float, float]:
    """(P, low, high): the probability that the row's side gets the higher return per agent
    in an episode (reward difference > 0; a tie counts one half), over `episodes` (rows of
    episodes.csv), with its 95% interval from a two-way cluster bootstrap over the row's and
    the column's training seeds (random has no seed: one cluster)."""
    difference = episodes[keys.REWARD_DIFFERENCE].to_numpy()
    scores = (difference > 0) + 0.5 * (difference == 0)
    return stats.clustered_improvement(scores, episodes["seed"].to_numpy(),
                                       episodes["opponent_seed"].to_numpy())


def _summary(frame, by: list[str], over_seeds: bool = False):
    """Per group: the mean reward difference with its 95% t-interval over episodes, and with
    `over_seeds` also over training seeds: each seed's mean over its episodes is one value,
    the seeds those of the row's policies or of the column's (random has none), whichever
    interval is wider, so that a cell and its mirror (B against A is A against B negated) get
    the same interval; NaN where either has fewer than 2 seeds."""
    import pandas as pd

    rows = []
    for group, part in frame.groupby(by, sort=True):
        stat = stats.t_interval(part[keys.REWARD_DIFFERENCE].to_numpy())
        low, high = stat["ci95"] or [math.nan, math.nan]
        row = {**dict(zip(by, group if isinstance(group, tuple) else (group,))),
               keys.REWARD_DIFFERENCE: stat["mean"], stats.EPISODE_CI[0]: low,
               stats.EPISODE_CI[1]: high, "std": stat["std"]}
        if over_seeds:
            seeds, low, high = stats.widest_interval_over_groups(
                part, keys.REWARD_DIFFERENCE, ("seed", "opponent_seed"))
            row.update({"seeds": seeds, stats.SEED_CI[0]: low, stats.SEED_CI[1]: high})
            row.update(zip(IMPROVEMENT, improvement(part)))
        rows.append({**row, "win_rate": float((part["outcome"] == 1.0).mean()),
                     "draw_rate": float((part["outcome"] == 0.5).mean()),
                     "episodes": len(part),
                     "matchups": part[["policy", "opponent_policy"]].drop_duplicates().shape[0]})
    return pd.DataFrame(rows)


def tables(rows: list[dict[str, Any]], interchangeable: bool) -> dict[str, Any]:
    """league, ratings and matchups tables (pandas) from the perspective rows."""
    import pandas as pd

    frame = _with_row_side(pd.DataFrame(rows), interchangeable)
    league = league_table(frame)
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


def league_table(frame):
    """league.csv from episode rows that carry their `row_side` (`_with_row_side`): one row
    per (algorithm, side, column algorithm)."""
    return _summary(frame, ["algorithm", "row_side", "opponent_algorithm"],
                    over_seeds=True).rename(
        columns={"row_side": "side", "opponent_algorithm": "column_algorithm"})


def league_from_episodes(episodes, interchangeable: bool):
    """league.csv (with its probability-of-improvement columns) from episodes.csv's rows:
    how a report reads a league cross-played before those columns existed."""
    return league_table(_with_row_side(episodes, interchangeable))


def _with_row_side(frame, interchangeable: bool):
    """Episodes with the side their row is tabulated under: `both` where the sides are
    mirror images (battle), else the side played."""
    return frame.assign(row_side=BOTH if interchangeable else frame["side"])


def seed_ratings(episodes, interchangeable: bool):
    """Per (algorithm, side, seed): the mean reward difference of that seed's policies
    against all other algorithms (random excluded), from episodes.csv's rows: the values a
    rating's aggregate over seeds (mean or IQM) is taken over."""
    frame = _with_row_side(episodes[episodes["opponent_algorithm"] != RANDOM], interchangeable)
    return (frame.groupby(["algorithm", "row_side", "seed"], sort=True)[keys.REWARD_DIFFERENCE]
            .mean().rename("rating").reset_index().rename(columns={"row_side": "side"}))


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
        paths[name] = str(run_dir / runfiles.table_file(name))
        frame.to_csv(paths[name], index=False, float_format="%.6g")
    return {"policies": len(members), "episodes": len(games), "missing_trials": missing,
            "cross_play_s": round(time.perf_counter() - start, 1), "files": paths,
            "ratings": out["ratings"].to_dict(orient="records")}


def check_resumable(run_dir: Path) -> LeagueSpec:
    if not (run_dir / runfiles.LEAGUE_SPEC).is_file():
        raise ValueError(f"--resume {str(run_dir)!r} is invalid; allowed: the run directory of "
                         f"a league started by `marlscale league` ({runfiles.LEAGUE_SPEC} "
                         "inside)")
    from marlscale.sweeps import resume

    if (run_dir / runfiles.TUNER).is_file():
        resume.check_tuner_state(run_dir)
    spec = LeagueSpec.load(run_dir / runfiles.LEAGUE_SPEC)
    resume.check_unchanged(run_dir, spec.sweep_spec().to_dict(), runfiles.LEAGUE_SPEC)
    return spec


def run(spec: LeagueSpec, run_dir: str | Path, *, resume: bool = False, log=print) -> dict:
    """Train (or resume) the league's sweep, then cross-play; Ray must be running."""
    import ray
    import yaml

    from marlscale.sweeps import runner

    run_dir = Path(run_dir).resolve()
    if not resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / runfiles.LEAGUE_SPEC).write_text(yaml.safe_dump(spec.to_dict(),
                                                                   sort_keys=False))
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
    low, high, over = stats.ci_columns(league)
    cells = league.assign(cell=[
        f"{stats.format_mean(d, low=lo, high=hi)} w{w:.2f}"
        for d, lo, hi, w in zip(league[keys.REWARD_DIFFERENCE], league[low], league[high],
                                league["win_rate"])])
    matrix = cells.pivot_table(index=["algorithm", "side"], columns="column_algorithm",
                               values="cell", aggfunc="first").fillna("-")
    low, high, _ = stats.ci_columns(ratings)
    shown = ratings[["algorithm", "side", "rating", low, high, "win_rate", "episodes"]]
    return (f"reward difference, row minus column, per agent [95% CI over {over}] and win "
            f"rate\n{matrix.to_string()}\n\nratings (mean reward difference against all other "
            f"algorithms)\n" + shown.to_string(index=False, formatters={
                "rating": stats.format_number, low: stats.format_number,
                high: stats.format_number, "win_rate": "{:.2f}".format}))
