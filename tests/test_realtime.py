"""``request_realtime``: a control thread gets SCHED_FIFO where the system allows it, and says why not elsewhere."""

from __future__ import annotations

import os
import threading

import pytest

from se_robot.robot import request_realtime

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setscheduler"), reason="Linux scheduling API")


def _in_a_thread(priority: int) -> tuple[str | None, int, int]:
    """(request_realtime's answer, the thread's policy after, the main thread's policy after)."""
    out: list = []

    def run() -> None:
        problem = request_realtime(priority)
        out.append((problem, os.sched_getscheduler(0)))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return out[0][0], out[0][1], os.sched_getscheduler(0)


def test_zero_leaves_the_thread_alone():
    assert _in_a_thread(0) == (None, os.SCHED_OTHER, os.SCHED_OTHER)


def test_fifo_for_the_calling_thread_only_or_a_message_naming_the_fix():
    problem, policy, main_policy = _in_a_thread(10)
    assert main_policy == os.SCHED_OTHER, "only the thread that asked changes"
    if problem is None:
        assert policy == os.SCHED_FIFO
    else:   # no privilege here: the thread stays as it was, and the message says how to allow it
        assert policy == os.SCHED_OTHER and "rtprio" in problem and "CAP_SYS_NICE" in problem
