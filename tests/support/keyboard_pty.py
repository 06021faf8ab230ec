"""Drive a CLI command whose keyboard teleop reads a pty, as a person typing at its terminal."""

from __future__ import annotations

import os
import threading
from typing import Callable


def run_cli_typing(argv_for_tty: Callable[[str], list[str]], keys: list[bytes]) -> int:
    """Run ``se-robot`` with ``argv_for_tty(tty_path)`` in a thread, typing ``keys`` in turn (round
    robin, every 0.1 s) on the pty's other end until the command returns; its exit code."""
    from se_robot.cli import main

    master, slave = os.openpty()
    rc: list[int] = []
    t = threading.Thread(target=lambda: rc.append(main(argv_for_tty(os.ttyname(slave)))))
    t.start()
    try:
        i = 0
        while t.is_alive():
            os.write(master, keys[i % len(keys)])
            i += 1
            t.join(0.1)
    finally:
        os.close(master)
        os.close(slave)
    return rc[0] if rc else -1
