"""The `marlscale` command line.

    marlscale train       one training run (IQL, VDN, QMIX, MFQ, MFQMIX) on Ray
    marlscale sweep       a tune_specs/ grid on Ray Tune (local, or a cluster), resumable
    marlscale evaluate    a checkpoint's policy against random or another checkpoint
    marlscale league      algorithms trained head-to-head, then cross-played
    marlscale render      one greedy episode as a GIF
    marlscale report      the paper's figures, tables and report.md from run directories
    marlscale rollout     random-policy rollouts of both games on Ray
    marlscale bench env   team-env vs raw magent2 throughput, as JSON
    marlscale bench train sampling / training / learner throughput, as JSON
"""

from __future__ import annotations

import sys

from marlscale.algorithms.learner import DivergenceError
from marlscale.cli.commands import COMMANDS, check_ray_flags
from marlscale.cli.flags import parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if hasattr(args, "dashboard"):
            check_ray_flags(args)
        return COMMANDS[args.command](args)
    except ValueError as error:  # bad config: one clear line, no traceback
        print(f"marlscale: error: {error}", file=sys.stderr)
        return 2
    except DivergenceError as error:  # NaN/inf in training: one clear line, nothing saved
        print(f"marlscale: error: {error}", file=sys.stderr)
        return 1
