"""What each `marlscale` command does with its parsed flags (`flags.py` declares them):
everything is checked before Ray starts or anything is written, then the command runs on a
local Ray of its own or the cluster (marlscale/cluster.py)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

from marlscale import interrupts, runlock
from marlscale.cli import flags
from marlscale.envs import TeamEnvConfig


def evaluate(args: argparse.Namespace) -> int:
    import ray

    from marlscale.evaluation import zero_shot
    from marlscale.evaluation.evaluate import Evaluation, check_out, table, write_json

    # Everything is checked before Ray starts.
    sizes = flags.n_agents_list(args.n_agents)
    if zero_shot.is_sweep_dir(args.checkpoint):
        return _evaluate_sweep(args, sizes)
    if sizes is not None and len(sizes) > 1:
        raise ValueError(f"--n-agents {args.n_agents!r} is invalid for a checkpoint; allowed: "
                         "one N (a list is for a sweep run directory, SWEEP_DIR)")
    if args.out is not None:
        raise ValueError(f"--out {args.out!r} is invalid for a checkpoint; allowed: --out with "
                         "a sweep run directory (SWEEP_DIR), or --json OUT")
    out = check_out(args.json, ".json", "--json") if args.json else None
    _check_evaluate_runners(args)
    envs = args.num_env_runners if args.num_env_runners is not None else \
        min(args.episodes, args.num_cpus or os.cpu_count() or 1)  # as many as it will have here
    evaluation = Evaluation.prepare(args.checkpoint, args.opponent, args.side, args.episodes,
                                    args.seed, args.epsilon,
                                    n_agents=sizes[0] if sizes else None, envs=envs)
    with _ray(args) as address:
        runners = args.num_env_runners
        if runners is None:
            runners = min(args.episodes, max(1, int(ray.cluster_resources().get("CPU", 1))))
        if address:
            _wait_for_cpus(args, runners, f"--num-env-runners={runners}")
        report = evaluation.run(runners)
    print(table(report))
    if out is not None:
        write_json(out, report)
        print(f"# figures written to {out}", file=sys.stderr)
    return 0


def _check_evaluate_runners(args: argparse.Namespace) -> None:
    if args.num_env_runners is not None:  # None: one per CPU of the cluster
        from marlscale.specfile import check_value, typed

        check_value("--num-env-runners", args.num_env_runners, typed(kind="int", low=0))
        _check_local_cpus(args, args.num_env_runners, f"--num-env-runners="
                          f"{args.num_env_runners}", "its EnvRunners (one CPU each)")


def _evaluate_sweep(args: argparse.Namespace, sizes: list[int] | None) -> int:
    """`evaluate SWEEP_DIR --n-agents 25,100,1000`: zero-shot transfer across N
    (evaluation/zero_shot.py)."""
    from pathlib import Path

    import ray

    from marlscale import runfiles
    from marlscale.evaluation.arena import RANDOM
    from marlscale.evaluation.evaluate import check_out, write_json
    from marlscale.evaluation.zero_shot import ZeroShot

    sweep = args.checkpoint
    if args.opponent not in (None, RANDOM):
        raise ValueError(f"--opponent {args.opponent!r} is invalid with a sweep run directory "
                         f"({sweep!r}); allowed: random (zero-shot plays every policy against "
                         "the random team)")
    if args.side is not None:
        raise ValueError(f"--side {args.side!r} is invalid with a sweep run directory "
                         f"({sweep!r}); allowed: no --side (each policy plays the side it was "
                         "trained on)")
    out_json = check_out(args.json, ".json", "--json") if args.json else None
    _check_evaluate_runners(args)
    cpus = args.num_cpus or os.cpu_count() or 1
    envs = args.num_env_runners if args.num_env_runners is not None else cpus
    zero_shot = ZeroShot.prepare(sweep, sizes, args.episodes, args.seed, args.epsilon,
                                 out=args.out, envs=envs)
    started = time.perf_counter()
    with _ray(args) as address:
        runners = args.num_env_runners
        if runners is None:  # at most one per game of the largest N's group
            most = max(len(group) + 1 for group in zero_shot.groups()) * args.episodes
            runners = min(most, max(1, int(ray.cluster_resources().get("CPU", 1))))
        if address:
            _wait_for_cpus(args, runners, f"--num-env-runners={runners}")
        table = zero_shot.run(runners, log=lambda line: print(line, file=sys.stderr,
                                                              flush=True))
    files = zero_shot.write(table)
    print(Path(files[runfiles.ZERO_SHOT_MD]).read_text())
    summary = {"sweep": str(Path(sweep).resolve()), "out": str(zero_shot.out.resolve()),
               "n_played": list(zero_shot.sizes), "episodes": args.episodes,
               "seed": args.seed, "epsilon": args.epsilon,
               "trials": int(table["trial"].nunique()), "plays": len(table),
               "skipped": list(zero_shot.skipped), "files": files,
               "num_env_runners": runners, "wall_s": round(time.perf_counter() - started, 1)}
    print(json.dumps(summary, indent=2))
    if out_json is not None:
        write_json(out_json, summary)
    return 0


def league(args: argparse.Namespace) -> int:
    import pandas as pd

    from marlscale.evaluation import league
    from marlscale.runspec import LeagueSpec

    spec, run_dir = _spec_and_run_dir(args, "league", LeagueSpec, league.check_resumable,
                                      "leagues")
    _check_trials_fit(args, spec.sweep_spec())
    runners = spec.eval_settings["num_env_runners"]
    if runners:
        _check_local_cpus(args, runners, f"evaluation.num_env_runners={runners}",
                          "cross-play's EnvRunners (one CPU each)")
    with _locked(run_dir, "league", bool(args.resume)), _ray(args) as address:
        if address:  # on a cluster: nodes that can hold every trial (and cross-play), in time
            from marlscale.sweeps.placement import wait_until_fits

            log = lambda line: print(line, flush=True)  # noqa: E731
            wait_until_fits(spec.sweep_spec(), args.resource_wait_s, log)
            if runners:
                _wait_for_cpus(args, runners, f"evaluation.num_env_runners={runners}")
        summary = league.run(spec, run_dir, resume=bool(args.resume),
                             log=lambda line: print(line, flush=True))
    if summary["interrupted"]:
        print(json.dumps(summary, indent=2))
        return _interrupted(f"with {summary['interrupted']} trial(s) unfinished; continue with: "
                            f"marlscale league --resume {run_dir}", summary["signal"])
    print(league.format_league(pd.read_csv(summary["files"]["league"]),
                               pd.read_csv(summary["files"]["ratings"])))
    print(json.dumps({k: v for k, v in summary.items() if k != "ratings"}, indent=2))
    _report_at_end(args, run_dir)
    return 1 if summary["errored"] else 0


def render(args: argparse.Namespace) -> int:
    from marlscale.evaluation.render import render

    info = render(args.checkpoint, args.out, opponent=args.opponent, side=args.side,
                  steps=args.steps, seed=args.seed, epsilon=args.epsilon, fps=args.fps,
                  cell=args.cell)
    print(json.dumps({k: v for k, v in info.items() if k != "alive"}, indent=2))
    return 0


def export(args: argparse.Namespace) -> int:
    from marlscale.evaluation.export import export

    print(json.dumps(export(args.checkpoint, args.out), indent=2))
    return 0


@contextlib.contextmanager
def _ray(args: argparse.Namespace, cpus: int = 0, what: str = ""):
    """Ray for a command: --address, else RAY_ADDRESS (set inside `ray job submit`), else a
    local Ray owned by this process (marlscale/cluster.py). Within, SIGTERM unwinds like
    Ctrl-C (marlscale/interrupts.py) rather than through Ray's C++ handler.

    `cpus` one-CPU actors or tasks (`what`) must fit at once: on a cluster, it waits at most
    --resource-wait-s for them (a local Ray's CPUs are checked before it starts)."""
    with _connect(args) as address, interrupts.terminate_as_interrupt():
        if address and cpus:
            _wait_for_cpus(args, cpus, what)
        yield address


def _wait_for_cpus(args: argparse.Namespace, cpus: int, what: str) -> None:
    from marlscale import cluster

    cluster.wait_for_cpus(cpus, what, args.resource_wait_s,
                          log=lambda line: print(line, file=sys.stderr, flush=True))


def _local_cpus(args: argparse.Namespace) -> tuple[int, str] | None:
    """The CPUs of the local Ray this command starts and where that number comes from; None
    on a cluster (--address, RAY_ADDRESS)."""
    if args.address or os.environ.get("RAY_ADDRESS"):
        return None
    if args.num_cpus is not None:
        return args.num_cpus, f"--num-cpus {args.num_cpus}"
    from ray._private.utils import get_num_cpus

    return get_num_cpus(), "all of this machine's, as Ray counts them"


def _check_local_cpus(args: argparse.Namespace, asked: float, what: str, holders: str) -> None:
    """Refuse, before Ray starts, what a local Ray can never place at once (it would wait for
    the CPUs forever, printing nothing): `asked` CPUs for `what`, held by `holders`."""
    local = _local_cpus(args)
    if local is None or asked <= local[0]:
        return
    cpus, source = local
    raise ValueError(f"{what} is invalid: {holders} hold {asked:g} CPUs at once and the local "
                     f"Ray has {cpus} ({source}); allowed: at most {cpus} CPUs (or a larger "
                     "--num-cpus, or a cluster: --address)")


def _check_trials_fit(args: argparse.Namespace, spec) -> None:
    """A sweep's (or league's) trials on a local Ray: each trial's CPUs (num_cpus plus one per
    EnvRunner) and GPUs must fit the local Ray, else it stays PENDING forever."""
    if _local_cpus(args) is None:
        return
    import logging

    from marlscale.runspec.sweep import SPEC_KEY
    from marlscale.sweeps.trial import SweepTrial

    _check_gpus(spec.resources.get("num_gpus", 0), "resources.num_gpus",
                "or a cluster (--address) whose nodes have them")
    need, shown = 0.0, ""
    config_log = logging.getLogger("ray.rllib.algorithms.algorithm_config")
    level = config_log.level
    config_log.setLevel(logging.ERROR)  # not RLlib's "new API stack" notice, once per trial
    try:
        requests = [SweepTrial.default_resource_request({SPEC_KEY: spec.to_dict(), **point})
                    for point in spec.points()]
    finally:
        config_log.setLevel(level)
    for request in requests:
        cpus = float(request.required_resources.get("CPU", 0))
        if cpus > need:
            resources = {**{"num_cpus": 1, "num_env_runners": 0}, **spec.resources}
            need, shown = cpus, (f"resources (num_cpus={resources['num_cpus']:g}, "
                                 f"num_env_runners={resources['num_env_runners']})")
    _check_local_cpus(args, need, shown, "each trial's process (num_cpus) and EnvRunners (one "
                      "CPU each)")


def _connect(args: argparse.Namespace):
    from marlscale import cluster

    return cluster.connect(args.address, args.num_cpus, dashboard=bool(args.dashboard),
                           dashboard_host=args.dashboard_host or cluster.LOOPBACK,
                           dashboard_port=args.dashboard_port or cluster.DASHBOARD_PORT,
                           log=lambda line: print(line, file=sys.stderr, flush=True))


def check_ray_flags(args: argparse.Namespace) -> None:
    """The local-Ray flags make sense only without a cluster address."""
    address = args.address or os.environ.get("RAY_ADDRESS")
    for flag in ("dashboard_host", "dashboard_port"):
        if getattr(args, flag) is not None and not args.dashboard:
            name = "--" + flag.replace("_", "-")
            raise ValueError(f"{name} {getattr(args, flag)!r} is invalid without --dashboard; "
                             f"allowed: --dashboard {name} VALUE")
    if address and args.dashboard:
        raise ValueError(f"--dashboard is invalid with a cluster address ({address!r}): the "
                         "cluster's dashboard is its head's; allowed: --dashboard for a local "
                         "Ray (no --address, no RAY_ADDRESS)")


def rollout(args: argparse.Namespace) -> int:
    from marlscale import rollout

    # Validate every config before Ray starts: a bad value fails fast and starts nothing.
    configs = [
        TeamEnvConfig.from_dict(
            {"game": game, "n_agents": args.n_agents, "map_size": args.map_size,
             "seed": seed, "max_cycles": args.max_cycles}
        )
        for game in args.games
        for seed in range(args.seeds)
    ]
    rollout.check_memory(configs)
    with _ray(args, 1, "rollout's tasks"):
        start = time.perf_counter()
        results = rollout.run(configs, args.episodes)
    summaries = [rollout.summarize(result) for result in results]
    for summary in summaries:
        print(json.dumps(summary))
    print(f"# {len(summaries)} rollouts in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def train_spec(args: argparse.Namespace):
    """The run's TrainSpec: the spec file's (if any), every spec flag given put at its path,
    and `--set KEY=VALUE` training settings."""
    import yaml

    from marlscale import specfile
    from marlscale.runspec import TrainSpec

    values = TrainSpec.load(args.spec).to_dict() if args.spec else {}
    flags.apply_spec_flags(values, args)
    training = dict(values.get("training", {}))
    for item in args.set:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r} is invalid; allowed: KEY=VALUE")
        try:
            training[key] = specfile.loads(text, f"--set {key}")
        except yaml.YAMLError as error:
            raise ValueError(f"--set {item!r}: the value is not valid YAML ({error}); allowed: "
                             "KEY=VALUE with a YAML value, e.g. lr=1e-4") from None
    values["training"] = training
    return TrainSpec.from_dict(values, source=args.spec or "command line")


def train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from marlscale import storage, train
    from marlscale.runspec import check_new_run_dir

    def log(line: str) -> None:
        print(line, flush=True)

    # Everything is checked before Ray starts or anything is written.
    for flag in ("resume", "run_dir"):
        if storage.is_uri(getattr(args, flag)):
            raise ValueError(f"--{flag.replace('_', '-')} {getattr(args, flag)!r} is invalid "
                             "for `marlscale train`; allowed: a local or shared folder "
                             "(object-store URIs are for `marlscale sweep`)")
    if args.resume:
        flags.check_resume_flags(args)
        stop = flags.apply_spec_flags({}, args, only_resumable=True).get("stop")

        def resumable():
            state = train.check_resumable(args.resume, stop)
            state.spec.wandb = flags.apply_spec_flags({"wandb": state.spec.wandb}, args,
                                                      only_resumable=True)["wandb"]
            return state

        state = resumable()
        run_dir = state.run_dir
    else:
        spec = train_spec(args)
        algorithm = spec.training.get("algorithm", "qmix")
        run_dir = Path(args.run_dir or
                       f"runs/train-{algorithm}-{time.strftime('%Y%m%d-%H%M%S')}")
        check_new_run_dir(run_dir)
        warm = train.check_warm_start(spec, args.from_checkpoint) \
            if args.from_checkpoint else None
    resources = (state.spec if args.resume else spec).resources
    # The train learner runs in this process: its GPUs must be this machine's.
    _check_gpus(resources.get("num_gpus", 0),
                "--num-gpus" if args.num_gpus is not None else "resources.num_gpus",
                "the learner runs in this process")
    runners = int(resources.get("num_env_runners", 0))
    what = ("--num-env-runners" if args.num_env_runners is not None else
            "resources.num_env_runners") + f"={runners}"
    _check_local_cpus(args, runners, what, "its EnvRunners (one CPU each)")
    with _locked(run_dir, "train", bool(args.resume)):
        if args.resume:  # again, now that no other process can change it
            state = resumable()
        with _ray(args, runners, what):
            final = train.resume(state, log=log) if args.resume else \
                train.run(spec, run_dir, log=log, from_checkpoint=warm)
    print(json.dumps({"run_dir": str(run_dir.resolve()),
                      "greedy_evaluation": final["greedy_evaluation"],
                      "wall_s": round(final["wall_s"], 1)}, indent=2))
    if final["interrupted"]:
        return _interrupted(f"at iteration {final['last']['training_iteration']}, checkpoint "
                            f"saved; continue with: marlscale train --resume {run_dir}",
                            final["signal"])
    _report_at_end(args, run_dir)
    return 0


def _spec_and_run_dir(args: argparse.Namespace, kind: str, spec_class, check_resumable,
                      folder: str):
    """The spec and run directory of a new or resumed sweep or league, checked before Ray
    starts or anything is written."""
    import os
    from pathlib import Path

    from marlscale import storage
    from marlscale.runspec import check_new_run_dir

    remote = kind == "sweep"  # sweeps may live on object storage (marlscale/storage.py)
    for flag in ("resume", "run_dir"):
        value = getattr(args, flag)
        if storage.is_uri(value) and not remote:
            raise ValueError(f"--{flag.replace('_', '-')} {value!r} is invalid for a {kind}; "
                             "allowed: a local or shared folder (object-store URIs are for "
                             "`marlscale sweep`)")
    if args.resume:
        if args.spec or args.run_dir:
            raise ValueError(f"--resume {args.resume!r} is invalid with a spec or --run-dir; "
                             "allowed: --resume RUN_DIR alone (the spec is "
                             f"RUN_DIR/{spec_class.spec_file})")
        if storage.is_uri(args.resume):
            return check_resumable(args.resume), args.resume.rstrip("/")
        return check_resumable(Path(args.resume)), Path(args.resume)
    if not args.spec:
        raise ValueError(f"spec=None is invalid; allowed: a {kind} spec file or --resume RUN_DIR")
    spec = spec_class.load(args.spec)
    hint = f" (continue an interrupted {kind} with --resume RUN_DIR)"
    if storage.is_uri(args.run_dir):
        storage.check_new(args.run_dir, hint=hint)
        return spec, args.run_dir.rstrip("/")
    root = Path(os.environ.get("MARLSCALE_RUNS", "~/marlscale_runs")).expanduser()
    run_dir = Path(args.run_dir) if args.run_dir else \
        root / folder / f"{spec.experiment}-{time.strftime('%Y%m%d-%H%M%S')}"
    check_new_run_dir(run_dir, hint=hint)
    return spec, run_dir


def sweep(args: argparse.Namespace) -> int:
    from marlscale.runspec import SweepSpec
    from marlscale.sweeps import resume, runner, warm_start

    spec, run_dir = _spec_and_run_dir(args, "sweep", SweepSpec, resume.check_resumable,
                                      "sweeps")
    # A new warm-started sweep: every trial's source trial and checkpoint (a resumed one's
    # trials keep theirs, in Tune's state).
    sources = None if args.resume else warm_start.resolve(spec)
    _check_trials_fit(args, spec)  # a local Ray: this machine's GPUs, its CPUs
    cluster = args.address or os.environ.get("RAY_ADDRESS")
    with _locked(run_dir, "sweep", bool(args.resume)), _ray(args):
        summary = runner.run(spec, run_dir, resume=bool(args.resume),
                             log=lambda line: print(line, flush=True),
                             resource_wait_s=args.resource_wait_s if cluster else None,
                             sources=sources)
    print(json.dumps(summary, indent=2))
    if summary["interrupted"]:
        return _interrupted(f"with {summary['interrupted']} trial(s) unfinished; each "
                            "continues from its last checkpoint with: marlscale sweep --resume "
                            f"{run_dir}", summary["signal"])
    _report_at_end(args, run_dir)
    return 1 if summary["errored"] else 0


def _check_gpus(asked, what: str, where: str) -> None:
    """Refuse, before Ray starts, GPUs this machine does not have (a trial asking for them
    would otherwise wait forever on a local Ray)."""
    if not asked:
        return
    import torch

    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if found < asked:
        raise ValueError(f"{what}={asked:g} is invalid: this machine has {found} CUDA GPU(s) "
                         f"(torch.cuda.device_count()); allowed: at most {found} ({where})")


def _interrupted(how: str, signal_name: str | None) -> int:
    """Say how an interrupted run goes on; the exit status after its signal (130 after
    Ctrl-C, 143 after SIGTERM)."""
    import signal

    signum = signal.Signals[signal_name or "SIGINT"]
    print(f"marlscale: interrupted by {signum.name} {how}", file=sys.stderr)
    return interrupts.exit_status(signum)


@contextlib.contextmanager
def _locked(run_dir, command: str, resume: bool):
    """The run directory's lock (marlscale/runlock.py) for the command's whole run, taken
    before Ray starts; none for an object-store URI. A new run's folder is created by it and
    checked again once locked (another process may have filled it meanwhile)."""
    from marlscale import storage
    from marlscale.runspec import check_new_run_dir

    if storage.is_uri(run_dir):
        yield
        return
    what = f"marlscale {command} " + (f"--resume {run_dir}" if resume else f"--run-dir {run_dir}")
    with runlock.hold(run_dir, what, log=lambda line: print(line, file=sys.stderr, flush=True)):
        if not resume:
            check_new_run_dir(run_dir)
        yield


def _report_at_end(args: argparse.Namespace, run_dir) -> None:
    """What train, sweep and league do last (unless --no-report): RUN_DIR/report/."""
    if args.no_report:
        return
    from marlscale.reports import report

    try:
        summary = report.build([run_dir], log=lambda line: None)
    except Exception as error:  # noqa: BLE001 - the run's own outcome stands; say why
        print(f"marlscale: no report: {type(error).__name__}: {error} (retry with `marlscale "
              f"report {run_dir}`)", file=sys.stderr)
        return
    print(f"report: {summary['report']} ({len(summary['figures'])} figures)", flush=True)


def report(args: argparse.Namespace) -> int:
    from marlscale.reports import report

    summary = report.build(args.runs, args.out, ci=args.ci, last=args.last, wandb=args.wandb,
                           thresholds=tuple(args.threshold or ()), budget_steps=args.budget,
                           aggregate_by=args.aggregate, log=lambda line: None)
    print(json.dumps(summary, indent=2))
    print(f"report: {summary['report']}")
    return 0


def bench(args: argparse.Namespace) -> int:
    if args.target == "train":
        from marlscale.bench import train as train_bench

        train_bench.check(args.n_agents, args.active)  # before Ray starts
        if args.cores and (args.n_agents or args.active):
            raise ValueError("--cores is invalid with --n-agents/--active; allowed: one of them")
        flag = "profile" if args.profile else "changes" if args.changes else None
        if flag and (args.cores or args.active or args.profile and args.changes):
            raise ValueError(f"--{flag} is invalid with --cores, --active or another of "
                             f"--profile/--changes; allowed: --{flag} alone or with --n-agents")
        if args.changes:
            from marlscale.bench import learner_changes

            report = learner_changes.report(args.n_agents)
        else:
            report = train_bench.run(steps=args.steps, n_agents=args.n_agents,
                                     n_active=args.active, cores=args.cores,
                                     profile_updates=args.profile)
        print(json.dumps(report, indent=2))
        return 0
    from marlscale.bench import env as env_bench

    report = env_bench.run(steps=args.steps, rounds=args.rounds, scaling=args.scaling)
    print(json.dumps(report, indent=2))
    return 0


COMMANDS = {"rollout": rollout, "train": train, "sweep": sweep, "evaluate": evaluate,
            "league": league, "render": render, "export": export, "report": report,
            "bench": bench}
"""Each subcommand's handler (its flags: `flags.add_<command>`)."""
