"""The `marlscale` command line.

    marlscale rollout     random-policy rollouts of both games on Ray (the main job for now)
    marlscale bench env   team-env vs raw magent2 throughput, as JSON
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from marlscale.envs import GAMES, TeamEnvConfig


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is invalid; allowed: an integer >= 1")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marlscale", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

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
    rollout.add_argument("--address", default=None,
                         help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    rollout.add_argument("--num-cpus", type=_positive_int, default=2,
                         help="CPUs of the local Ray, when one is started (default 2)")

    bench = commands.add_parser("bench", help="benchmarks that print JSON")
    targets = bench.add_subparsers(dest="target", required=True)
    env = targets.add_parser("env", help="team env vs raw magent2 agent-steps/s")
    env.add_argument("--steps", type=_positive_int, default=1000, help="env steps per round")
    env.add_argument("--rounds", type=_positive_int, default=3, help="interleaved rounds")
    env.add_argument("--scaling", action="store_true",
                     help="also sweep N = 25..1000 to show per-agent cost against N")
    return parser


def _rollout(args: argparse.Namespace) -> int:
    import os

    import ray

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
    address = args.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=args.num_cpus, include_dashboard=False)
    start = time.perf_counter()
    try:
        results = rollout.run(configs, args.episodes)
    finally:
        ray.shutdown()
    summaries = [rollout.summarize(result) for result in results]
    for summary in summaries:
        print(json.dumps(summary))
    print(f"# {len(summaries)} rollouts in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from marlscale.bench import env as env_bench

    report = env_bench.run(steps=args.steps, rounds=args.rounds, scaling=args.scaling)
    print(json.dumps(report, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "rollout":
            return _rollout(args)
        return _bench(args)
    except ValueError as error:  # bad config: one clear line, no traceback
        print(f"marlscale: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
