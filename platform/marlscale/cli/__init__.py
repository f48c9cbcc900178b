"""The `marlscale` command line.

    marlscale train       one training run (IQL, VDN, QMIX, MFQ, MFQMIX) on Ray
    marlscale sweep       a tune_specs/ grid on Ray Tune (local, or a cluster), resumable
    marlscale evaluate    a checkpoint's policy against random or another checkpoint
    marlscale league      algorithms trained head-to-head, then cross-played
    marlscale render      one greedy episode as a GIF
    marlscale export      one team of a checkpoint as a file that plays outside Ray
    marlscale report      the paper's figures, tables and report.md from run directories
    marlscale rollout     random-policy rollouts of both games on Ray
    marlscale bench env   team-env vs raw magent2 throughput, as JSON
    marlscale bench train sampling / training / learner throughput, as JSON
"""

from __future__ import annotations

import errno
import signal
import sys

from marlscale import interrupts
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
        _say(error)
        return 2
    except DivergenceError as error:  # NaN/inf in training: one clear line, nothing saved
        _say(error)
        return 1
    except Exception as error:  # a full disk anywhere (maybe inside Ray): one line, its path
        full = disk_error(error)
        if full is None:
            raise
        _say(f"{_where(full, args)}: {full.strerror or 'cannot be written'} "
             f"({errno.errorcode.get(full.errno, full.errno)}); what was saved before stays "
             "(a train run's last checkpoint loads with --resume); allowed: free space, a "
             "larger quota or a writable folder, then run again")
        return 1
    except KeyboardInterrupt as error:  # Ctrl-C or SIGTERM where no checkpoint can be taken
        signum = getattr(error, "signum", signal.SIGINT)
        print(f"marlscale: interrupted by {signal.Signals(signum).name}", file=sys.stderr)
        return interrupts.exit_status(signum)


MAX_LINE = 2000
"""The longest error line printed: the start and the end (what is allowed) of a longer one are
kept, with '…' between."""
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
"""No space left, over the quota, read-only file system: the run's storage, not its input."""


def _say(error: object) -> None:
    """One error line: every line of the message joined, at most MAX_LINE characters."""
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    if len(text) > MAX_LINE:
        text = text[:MAX_LINE // 2] + " … " + text[-MAX_LINE // 2:]
    print(f"marlscale: error: {text}", file=sys.stderr)


def disk_error(error: BaseException) -> OSError | None:
    """The disk-full (or over-quota, or read-only) OSError in an exception or anything it
    wraps (`raise ... from`, a Ray task's cause), if any."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_ERRORS:
            return current
        cause = getattr(current, "cause", None)  # a RayTaskError's
        pending += [current.__cause__, current.__context__,
                    cause if isinstance(cause, BaseException) else None]
    return None


def _where(error: OSError, args) -> str:
    """The path a disk error names, else the command's output (run dir, --out, --json)."""
    if error.filename:
        return str(error.filename)
    outputs = [getattr(args, name, None) for name in ("run_dir", "resume", "out", "json")]
    given = [str(path) for path in outputs if path]
    return f"writing under {given[0]}" if given else "writing a file"
