"""Ctrl-C and SIGTERM take the same steps (marlscale/interrupts.py), signalled for real to this
process: the k-th signal of either kind runs the k-th step, one past the last raises
Interrupted, and the exit status is 128 + the first signal's number."""

from __future__ import annotations

import os
import signal

import pytest
from marlscale import interrupts


@pytest.mark.parametrize("first, second", [(signal.SIGINT, signal.SIGTERM),
                                           (signal.SIGTERM, signal.SIGINT)])
def test_either_signal_runs_the_next_step_then_interrupts(first, second):
    ran = []
    before = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
    with pytest.raises(interrupts.Interrupted) as raised:
        with interrupts.on_interrupt([lambda: ran.append("checkpoint")]) as received:
            os.kill(os.getpid(), first)
            assert ran == ["checkpoint"] and received.name == first.name
            assert received.exit_status == 128 + first
            os.kill(os.getpid(), second)  # past the last step
    assert raised.value.signum == second and isinstance(raised.value, KeyboardInterrupt)
    assert {s: signal.getsignal(s) for s in interrupts.SIGNALS} == before  # put back


def test_sigterm_outside_a_loop_unwinds_like_ctrl_c():
    with pytest.raises(interrupts.Interrupted) as raised:
        with interrupts.terminate_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
    assert raised.value.signum == signal.SIGTERM
    assert interrupts.exit_status(signal.SIGTERM) == 143
