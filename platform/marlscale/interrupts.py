"""Ctrl-C and SIGTERM as `marlscale train`, `sweep` and `league` take them: in steps, never
mid-write.

SIGTERM is what Kubernetes, SLURM, `ray job stop` and `kill` send; it is taken exactly as
Ctrl-C (SIGINT) is. `on_interrupt(steps)` runs, on the k-th of either signal, the k-th of
`steps` (the first typically asks the loop to stop at a safe point with a checkpoint, a later
one stops harder); one more signal than there are steps raises `Interrupted`. Outside such a
block, `terminate_as_interrupt()` makes SIGTERM raise `Interrupted` as Python's default makes
SIGINT raise KeyboardInterrupt: `with` blocks unwind (the local Ray is shut down) instead of
Ray's C++ handler dumping a stack and exiting 134. A command interrupted either way exits
128 + the signal's number: 130 for SIGINT, 143 for SIGTERM.

Signals reach only the main thread; elsewhere nothing is caught and the block runs as it is.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Sequence

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A signal past the last step (or SIGTERM outside `on_interrupt`); `signum` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Received:
    """The first interrupting signal a block received (None until one comes)."""

    signum: int | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    @property
    def exit_status(self) -> int:
        return exit_status(self.signum or signal.SIGINT)


def exit_status(signum: int) -> int:
    """A command's exit status after `signum`, as shells report it: 128 + its number."""
    return 128 + int(signum)


@contextlib.contextmanager
def on_interrupt(steps: Sequence[Callable[[], None]]) -> Iterator[Received]:
    """Within: the k-th SIGINT or SIGTERM calls `steps[k - 1]`; past the last, Interrupted.
    Yields what was received. The previous handlers come back on exit."""
    received = Received()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    count = 0

    def handle(signum, frame):
        nonlocal count
        count += 1
        if received.signum is None:
            received.signum = signum
        if count > len(steps):
            raise Interrupted(signum)
        steps[count - 1]()

    with _handlers(handle, SIGNALS):
        yield received


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within: SIGTERM raises Interrupted(SIGTERM). Enter it after Ray has started: Ray's
    driver installs a C++ SIGTERM handler of its own, and the last handler set wins."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum, frame):
        raise Interrupted(signum)

    with _handlers(handle, (signal.SIGTERM,)):
        yield


@contextlib.contextmanager
def _handlers(handle, signums) -> Iterator[None]:
    before = {signum: signal.signal(signum, handle) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in before.items():
            # None: a handler not installed from Python (Ray's C++ one); the default is the
            # closest Python can put back.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
