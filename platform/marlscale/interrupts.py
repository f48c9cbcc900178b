"""Ctrl-C as `marlscale train` and `marlscale sweep` take it: in steps, never mid-write.

`on_sigint(steps)` runs, on the k-th SIGINT, the k-th of `steps` (the first typically asks the
loop to stop at a safe point with a checkpoint, a later one stops harder); one more SIGINT
than there are steps raises KeyboardInterrupt. Signals reach only the main thread; elsewhere
nothing is caught and the block runs as it is.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Sequence


@contextlib.contextmanager
def on_sigint(steps: Sequence[Callable[[], None]]) -> Iterator[None]:
    """Within: the k-th Ctrl-C calls `steps[k - 1]`; past the last, KeyboardInterrupt. The
    previous SIGINT handler comes back on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    count = 0

    def handle(signum, frame):
        nonlocal count
        count += 1
        if count > len(steps):
            raise KeyboardInterrupt
        steps[count - 1]()

    before = signal.signal(signal.SIGINT, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
