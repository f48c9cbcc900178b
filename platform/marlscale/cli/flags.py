"""The flags of every `marlscale` command, declared once.

A flag that sets a spec key is declared with `spec_flag` and the path it sets (e.g.
`--n-agents` sets env_config.n_agents); `apply_spec_flags` puts the given ones into a spec, and
`train --resume` accepts exactly the flags marked `resumable` (`check_resume_flags`). The stop
flags are made from the `Stop` declaration (marlscale/runspec/common.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re

from marlscale.algorithms.registry import ALGORITHMS
from marlscale.envs import GAMES
from marlscale.wandb_logging import WANDB_MODES

HELP = {
    "evaluate": "greedy episodes of a checkpoint's policy against random or another checkpoint "
                "(cross-play), spread over Ray EnvRunners",
    "report": "the paper's figures, tables and a report.md from run directories (train, "
              "sweep, league)",
    "export": "one team of a checkpoint as one file that plays outside Ray (torch and numpy "
              "only): marlscale.policy.load(FILE) in MAgent2's own PettingZoo envs",
}
DESCRIPTIONS = {
    "evaluate": "Greedy evaluation of a checkpoint's team policy. CHECKPOINT is a checkpoint "
                "directory, a `marlscale train` run directory or a sweep trial directory (its "
                "last checkpoint), optionally with a team: CKPT:red, CKPT:blue, CKPT:predator. "
                "Zero-shot transfer across N: with a sweep run directory (SWEEP_DIR, trained "
                "against random) and --n-agents 25,100,1000, every finished trial's final "
                "policy plays at each N and at its own, the random policy on the same "
                "episodes; the tables go to --out (default SWEEP_DIR/zero_shot/), and "
                "`marlscale report SWEEP_DIR` draws transfer.png from them.",
    "export": "Write one team of a checkpoint as a torch.export program (the agent network, "
              "its slot embeddings, the observation preprocessing) with a metadata record (game, "
              "side, N, views, algorithm, mean action, trained slots, commit, format version). "
              "CHECKPOINT is a checkpoint directory, a train run or a sweep trial directory, "
              "optionally with a team (CKPT:blue). The program's Q-values are checked against "
              "the checkpoint module's before the file is put in place; docs/export.md.",
    "report": "Draw every figure the runs allow (learning curves, scaling with N, reward modes, "
              "incremental learning, league, head-to-head, throughput) into --out with a "
              "report.md of tables; say which figures were skipped and why, and which trials "
              "are missing or failed. A partial or interrupted sweep is reported as far as it "
              "got.",
}
"""The longer texts of `marlscale COMMAND --help`."""


def _integer(text: str, low: int | None = None) -> int:
    """An integer flag's value (`1e3` too); argparse prints the message after the flag's
    name, so every bad value says what is allowed."""
    allowed = "an integer" + ("" if low is None else f" >= {low}")
    try:
        number = float(text) if re.fullmatch(r"[-+]?[0-9]+(\.0*)?[eE][-+]?[0-9]+", text.strip()) \
            else None
        value = int(number) if number is not None and number.is_integer() else int(text)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"{_shown(text)} is invalid; allowed: {allowed}") \
            from None
    if low is not None and value < low:
        raise argparse.ArgumentTypeError(f"{value} is invalid; allowed: {allowed}")
    return value


def _shown(text: str) -> str:
    """A flag's value as an error echoes it: quoted when not a number, cut when long."""
    from marlscale.specfile import shown

    return shown(text)


def n_agents_list(text: str | None) -> list[int] | None:
    """evaluate's --n-agents: one N, or a comma-separated list of them (a sweep run
    directory's zero-shot grid), in the order given without repeats; None where not given.
    Checked in the command, so that a bad value is one line (ValueError) like every other."""
    if text is None:
        return None
    allowed = "an integer >= 1, or a comma-separated list of them (e.g. 25,100,1000)"
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        raise ValueError(f"--n-agents {_shown(text)} is invalid: it names no N; allowed: "
                         f"{allowed}")
    if "," not in text:
        try:
            return [_integer(text, 1)]
        except argparse.ArgumentTypeError as error:
            raise ValueError(f"--n-agents: {error}") from None
    sizes = []
    for part in parts:
        try:
            sizes.append(_integer(part, 1))
        except argparse.ArgumentTypeError:
            raise ValueError(f"--n-agents {_shown(text)} is invalid: {_shown(part)} is not an "
                             f"integer >= 1; allowed: {allowed}") from None
    return list(dict.fromkeys(sizes))


def _any_int(text: str) -> int:
    return _integer(text)


def _positive_int(text: str) -> int:
    return _integer(text, 1)


def _non_negative_int(text: str) -> int:
    return _integer(text, 0)


def _number(low: float | None = None, high: float | None = None, low_open: bool = False,
            what: str = ""):
    """A float flag's type: a finite number within the bounds (NaN and inf refused)."""
    if low is not None and high is not None:
        allowed = f"a number in {'(' if low_open else '['}{low:g}, {high:g}]"
    elif low is not None:
        allowed = f"a finite number {'>' if low_open else '>='} {low:g}"
    else:
        allowed = "a finite number"
    allowed += what

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{_shown(text)} is invalid; allowed: {allowed}") \
                from None
        if not (math.isfinite(value) and (low is None or (value > low if low_open
                                                          else value >= low))
                and (high is None or value <= high)):
            raise argparse.ArgumentTypeError(f"{text} is invalid; allowed: {allowed}")
        return value

    return convert


def _stop_total(text: str) -> int | float:
    """A stop flag's total: a finite number > 0 (`1e5` too); integral values as ints."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is invalid; allowed: a number > 0") \
            from None
    if not (value > 0 and value != float("inf")):  # NaN fails the first test
        raise argparse.ArgumentTypeError(f"{text} is invalid; allowed: a number > 0")
    return int(value) if value.is_integer() else value


def _spec_flag(parser: argparse.ArgumentParser, flag: str, path: tuple[str, ...], **kwargs):
    """A flag that sets one key of the run's spec: `path` says where (e.g. ('env_config',
    'n_agents')); `apply_spec_flags` puts every given one there."""
    action = parser.add_argument(flag, default=None, **kwargs)
    action.spec_path = path
    return action


def _resumable(*actions: argparse.Action) -> None:
    """Mark flags that `train --resume RUN_DIR` accepts; it refuses every other one."""
    for action in actions:
        action.resumable = True


def _declared(parser: argparse.ArgumentParser) -> tuple[argparse.Action, ...]:
    """A subcommand's flags as declared (argparse keeps them in `_actions`)."""
    return tuple(a for a in parser._actions if a.dest != "help")


def apply_spec_flags(values: dict, args: argparse.Namespace, only_resumable: bool = False):
    """Put every given spec flag's value at its path in a spec dict. The stop flags replace
    the spec's whole stop (a stop given on the command line is the run's stop)."""
    given = [(a.spec_path, getattr(args, a.dest)) for a in args.declared
             if getattr(a, "spec_path", None) and getattr(args, a.dest) is not None
             and (getattr(a, "resumable", False) or not only_resumable)]
    if any(path[0] == "stop" for path, _ in given):
        values["stop"] = {}
    for path, value in given:
        section = values
        for key in path[:-1]:
            section[key] = dict(section.get(key) or {})
            section = section[key]
        section[path[-1]] = value
    return values


_non_negative_float = _number(0, what=" (seconds)")


def parser() -> argparse.ArgumentParser:
    """The `marlscale` command's parser: one subcommand per `_add_<command>`."""
    top = argparse.ArgumentParser(
        prog="marlscale", description="Multi-agent RL at scale on Ray: train, sweep, evaluate, "
        "league, render, export, report, rollout and bench (marlscale COMMAND --help).")
    commands = top.add_subparsers(dest="command", required=True)
    for add in (_add_rollout, _add_train, _add_sweep, _add_evaluate, _add_league, _add_render,
                _add_export, _add_report, _add_bench):
        add(commands)
    return top


def _add_rollout(commands) -> None:
    rollout = commands.add_parser(
        "rollout", help="random-policy rollouts of the team envs on Ray, with episode metrics"
    )
    rollout.add_argument(
        "--games", nargs="+", choices=sorted(GAMES), default=sorted(GAMES),
        help="games to play (default: all)",
    )
    rollout.add_argument("--n-agents", type=_positive_int, default=25,
                         help="agents in the learning team (default 25)")
    rollout.add_argument("--map-size", type=_positive_int, default=None,
                         help="map side (default: scaled with n_agents at MAgent2's density)")
    rollout.add_argument("--episodes", type=_positive_int, default=2,
                         help="episodes per game and seed (default 2)")
    rollout.add_argument("--seeds", type=_positive_int, default=1,
                         help="seeds per game, one Ray task each (default 1)")
    rollout.add_argument("--max-cycles", type=_positive_int, default=None,
                         help="episode length limit (default: the game's)")
    _add_ray_flags(rollout, default_cpus=2)


def _add_train(commands) -> None:
    from marlscale.runspec.common import Stop

    train = commands.add_parser("train", help="train one run from a spec file and/or flags")
    train.add_argument("spec", nargs="?", default=None,
                       help="YAML/JSON spec (see marlscale/runspec/train.py); flags override it")
    _spec_flag(train, "--algorithm", ("training", "algorithm"), choices=sorted(ALGORITHMS),
               help="learning team's algorithm (default: the spec's, else qmix): " +
                    "; ".join(f"{name}: {spec.summary.replace('%', '%%')}"
                              for name, spec in sorted(ALGORITHMS.items())))
    _spec_flag(train, "--game", ("env",), choices=sorted(GAMES))
    for flag in ("n_agents", "map_size", "max_cycles"):
        _spec_flag(train, f"--{flag.replace('_', '-')}", ("env_config", flag), type=_positive_int)
    _spec_flag(train, "--opponent", ("env_config", "opponent"), choices=["random", "learned"],
               help="the other team: random, or a second learning team (head-to-head)")
    for stop in dataclasses.fields(Stop):
        _resumable(_spec_flag(train, f"--{stop.name.replace('_', '-')}", ("stop", stop.name),
                              type=_stop_total, help=f"stop after this many {stop.metadata['doc']} "
                              "(a total; with --resume, the new one)"))
    _spec_flag(train, "--seed", ("seed",), type=_non_negative_int)
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="a training setting, e.g. --set lr=0.001 (YAML value syntax)")
    _spec_flag(train, "--num-env-runners", ("resources", "num_env_runners"),
               type=_non_negative_int)
    _spec_flag(train, "--num-gpus", ("resources", "num_gpus"), type=_number(0),
               help="GPUs for the learner")
    train.add_argument("--run-dir", default=None,
                       help="output folder (default runs/train-<algorithm>-<time>)")
    _resumable(train.add_argument(
        "--resume", default=None, metavar="RUN_DIR",
        help="continue a train run from its last checkpoint (its spec is RUN_DIR/spec.json; a "
             "stop flag given is the new total)"))
    train.add_argument("--from-checkpoint", default=None, metavar="CKPT[:TEAM]",
                       help="start a new run's team modules from a checkpoint's weights (a "
                            "checkpoint, train run or sweep trial directory; :TEAM takes that "
                            "team's module for the learning team)")
    _resumable(
        _spec_flag(train, "--wandb-mode", ("wandb", "mode"), choices=WANDB_MODES,
                   help="W&B logging (default: the spec's, else auto: online iff "
                        "WANDB_API_KEY is set, else offline into RUN_DIR/wandb/)"),
        _spec_flag(train, "--wandb-project", ("wandb", "project"),
                   help="W&B project (default: the spec's, else marlscale)"))
    _resumable(*_add_report_flag(train), *_add_ray_flags(train, default_cpus=2))
    train.set_defaults(declared=_declared(train))


def _add_sweep(commands) -> None:
    sweep = commands.add_parser(
        "sweep", help="run a sweep spec (tune_specs/*.yaml) on Ray Tune, or resume one")
    _add_spec_run_flags(sweep, "sweep", "tune_specs/*.yaml", "sweeps")


def _add_evaluate(commands) -> None:
    evaluate = commands.add_parser("evaluate", help=HELP["evaluate"],
                                   description=DESCRIPTIONS["evaluate"])
    evaluate.add_argument("checkpoint", metavar="CHECKPOINT",
                          help="CKPT[:team] (default team: the checkpoint's learning team), or "
                               "SWEEP_DIR (zero-shot: every trial at every --n-agents)")
    _add_matchup_flags(evaluate)
    evaluate.add_argument("--episodes", type=_positive_int, default=10,
                          help="episodes (default 10; with SWEEP_DIR per trial and N)")
    evaluate.add_argument("--n-agents", default=None, metavar="N[,N,...]",
                          help="play at this N per team instead of the trained one: the shared "
                               "network is kept, the slot embeddings grown (new slots at the "
                               "mean of the trained ones) or cut to the first N. With SWEEP_DIR, "
                               "a comma-separated list (default: the sweep's own N)")
    evaluate.add_argument("--out", default=None, metavar="DIR",
                          help="SWEEP_DIR only: the folder of the zero-shot tables (default "
                               "SWEEP_DIR/zero_shot/)")
    evaluate.add_argument("--json", default=None, metavar="OUT",
                          help="also write the figures (with SWEEP_DIR: the summary) as JSON "
                               "to OUT")
    evaluate.add_argument("--num-env-runners", type=_any_int, default=None,
                          help="EnvRunners to spread the episodes over (default: the cluster's "
                               "CPUs, at most one per episode; 0: in this process)")
    _add_ray_flags(evaluate, default_cpus=2)


def _add_league(commands) -> None:
    league = commands.add_parser(
        "league", help="train every pair of algorithms head-to-head (a Tune sweep), then "
                       "cross-play every policy: league.csv, ratings.csv, matchups.csv")
    _add_spec_run_flags(league, "league", "tune_specs/league/*.yaml", "leagues")


def _add_render(commands) -> None:
    render = commands.add_parser(
        "render", help="one greedy episode of a checkpoint's policy as an animated GIF "
                       "(headless)")
    render.add_argument("checkpoint", metavar="CHECKPOINT", help="CKPT[:team]")
    _add_matchup_flags(render)
    render.add_argument("--steps", type=_positive_int, default=None,
                        help="at most this many steps (default: the whole episode)")
    render.add_argument("--fps", type=_number(0, low_open=True), default=10.0,
                        help="frames per second (default 10)")
    render.add_argument("--cell", type=_positive_int, default=None,
                        help="pixels per map cell (default: fit about 480 pixels)")
    render.add_argument("--out", required=True, help="the GIF to write (its folder must exist)")


def _add_export(commands) -> None:
    export = commands.add_parser("export", help=HELP["export"],
                                 description=DESCRIPTIONS["export"])
    export.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="CKPT[:team] (default team: the checkpoint's learning team)")
    export.add_argument("--out", required=True, metavar="FILE.pt",
                        help="the file to write (.pt or .pt2; its folder must exist; written "
                             "whole or not at all)")


def _add_report(commands) -> None:
    report = commands.add_parser("report", help=HELP["report"],
                                 description=DESCRIPTIONS["report"])
    report.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="`marlscale train`, `sweep` or `league` run directories (one game)")
    report.add_argument("--out", default=None,
                        help="folder for report.md, the PNGs and CSVs (default: RUN_DIR/report "
                             "of the first run)")
    from marlscale.stats import AGGREGATES, MIN_IQM_SEEDS, SPREADS

    report.add_argument("--ci", choices=SPREADS, default="std",
                        help="spread over seeds: std (default, the paper's) or 95 (95%% "
                             "Student-t CI of the mean)")
    report.add_argument("--aggregate", choices=AGGREGATES, default="mean",
                        help="finals, the scaling curve and league ratings over seeds: mean "
                             "(default, with --ci's spread) or iqm (interquartile mean with a "
                             f"stratified-bootstrap 95%% CI; needs {MIN_IQM_SEEDS}+ seeds)")
    report.add_argument("--last", type=_positive_int, default=3,
                        help="'final' = the mean of each trial's last LAST evaluations (default 3)")
    report.add_argument("--wandb", action="store_true",
                        help="also log the figures and tables to a W&B run (offline unless "
                             "WANDB_API_KEY is set)")
    report.add_argument("--threshold", type=_number(), action="append", default=None,
                        metavar="RETURN",
                        help="sample complexity: a greedy return per agent to reach; repeat "
                             "for several (default: 25%%, 50%% and 75%% of the way from the "
                             "random level to the best final return at the smallest N)")
    report.add_argument("--budget", type=_number(0, low_open=True, what=" (env steps)"),
                        default=None, metavar="STEPS",
                        help="read the scaling figure at this many env steps (default: each "
                             "trial's end); at most the longest run's")


def _add_bench(commands) -> None:
    bench = commands.add_parser("bench", help="benchmarks that print JSON")
    targets = bench.add_subparsers(dest="target", required=True)
    env = targets.add_parser("env", help="team env vs raw magent2 agent-steps/s")
    env.add_argument("--steps", type=_positive_int, default=1000, help="env steps per round")
    env.add_argument("--rounds", type=_positive_int, default=3, help="interleaved rounds")
    env.add_argument("--scaling", action="store_true",
                     help="also sweep N = 25..1000 to show per-agent cost against N")
    train_bench = targets.add_parser("train", help="sampling and training throughput")
    train_bench.add_argument("--steps", type=_positive_int, default=1000,
                             help="env steps per measurement")
    train_bench.add_argument("--n-agents", type=_positive_int, default=None,
                             help="measure training at this N (pursuit predators)")
    train_bench.add_argument("--active", type=_positive_int, default=None,
                             help="of which this many are trained (incremental learning); "
                                  "also measures N=ACTIVE all trained and prints the ratios")
    train_bench.add_argument("--cores", action="store_true",
                             help="instead: training at N=25 and N=100 on one core, and on two "
                                  "cores taking turns and with an EnvRunner sampling alongside")
    train_bench.add_argument("--profile", action="store_true",
                             help="instead: where a learner update's time goes, phase by phase, "
                                  "at N=25 and N=100 (or --n-agents)")
    train_bench.add_argument("--changes", action="store_true",
                             help="instead: the learner's updates/s with each of issue #24's "
                                  "changes turned off alone, at N=25 and N=100 (or --n-agents)")

def _add_matchup_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--opponent", default=None, metavar="random|CKPT[:team]",
                        help="the other side: random, or a team of a checkpoint of the same "
                             "game and N (default: the checkpoint's other team when it holds "
                             "one, else random)")
    parser.add_argument("--side", default=None,
                        help="the side the policy plays (default: the side it was trained on)")
    parser.add_argument("--seed", type=_non_negative_int, default=0,
                        help="evaluation seed: maps, random agents and draws (default 0)")
    parser.add_argument("--epsilon", type=_number(0, 1), default=0.0,
                        help="per-agent random-action rate (default 0: greedy)")


def _add_spec_run_flags(parser: argparse.ArgumentParser, kind: str, specs: str,
                        folder: str) -> None:
    """A spec file, or --resume RUN_DIR; --run-dir; Ray flags (sweep and league)."""
    parser.add_argument("spec", nargs="?", default=None, help=f"the {kind} spec ({specs})")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR",
                        help=f"continue an interrupted {kind} from its run directory")
    parser.add_argument("--run-dir", default=None,
                        help="output folder (default $MARLSCALE_RUNS or ~/marlscale_runs, "
                             f"then {folder}/<experiment>-<time>)")
    _add_report_flag(parser)
    _add_ray_flags(parser, default_cpus=None)


def _add_report_flag(parser: argparse.ArgumentParser) -> tuple[argparse.Action, ...]:
    return (parser.add_argument(
        "--no-report", action="store_true",
        help="do not write RUN_DIR/report/ (report.md and figures) at the end"),)


def _add_ray_flags(parser: argparse.ArgumentParser,
                   default_cpus: int | None) -> tuple[argparse.Action, ...]:
    return (
        parser.add_argument("--address", default=None,
                            help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)"),
        parser.add_argument("--num-cpus", type=_positive_int, default=default_cpus,
                            help="CPUs of the local Ray, when one is started (default: "
                                 f"{default_cpus or 'all'})"),
        parser.add_argument("--dashboard", action="store_true", default=None,
                            help="start the local Ray's dashboard (default: off), at "
                                 "http://DASHBOARD_HOST:DASHBOARD_PORT"),
        parser.add_argument("--dashboard-host", default=None,
                            help="the address the local Ray's dashboard binds to (default "
                                 "127.0.0.1: this machine only; 0.0.0.0: every interface)"),
        parser.add_argument("--dashboard-port", type=_positive_int, default=None,
                            help="the local Ray's dashboard port (default 8265)"),
        parser.add_argument("--resource-wait-s", type=_non_negative_float, default=600.0,
                            help="on a cluster: how long to wait for nodes that can hold what "
                                 "the command asks (a trial's resources, e.g. its GPUs; "
                                 "EnvRunners' CPUs) before failing (default 600)"),
    )


def check_resume_flags(args: argparse.Namespace) -> None:
    """`train --resume RUN_DIR` takes only the flags declared resumable (the spec is
    RUN_DIR's own); one line naming the others and listing the allowed ones."""
    def shown(action: argparse.Action) -> str:
        return action.option_strings[0] if action.option_strings else \
            f"{action.dest} {getattr(args, action.dest)!r}"

    refused = [a for a in args.declared if not getattr(a, "resumable", False)
               and getattr(args, a.dest) not in (None, [], a.default)]
    if refused:
        allowed = ", ".join(shown(a) for a in args.declared if getattr(a, "resumable", False)
                            and a.dest != "resume")
        raise ValueError(f"--resume {args.resume!r} is invalid with "
                         f"{', '.join(shown(a) for a in refused)}; allowed: --resume RUN_DIR "
                         f"with a stop flag (the new total) and {allowed} (the spec is "
                         "RUN_DIR/spec.json)")
