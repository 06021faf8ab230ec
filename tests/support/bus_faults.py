"""Bus faults injected through the emulator's knobs while a test trains on it."""

from __future__ import annotations

import threading

from se_robot.hardware.emulator import VirtualArm


class FaultInjector:
    """Bus faults through the emulator's knobs while training runs: a dropped packet or a corrupted
    reply, one at a time, each only after ``spacing`` more instructions reached the emulator (the
    previous glitch was long consumed): single glitches the driver retries, never a burst that
    exhausts its retries on one transaction."""

    def __init__(self, vm: VirtualArm, spacing: int = 60):
        self.vm, self.spacing = vm, spacing
        self.injected = {"drop": 0, "corrupt": 0}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="fault-injector", daemon=True)

    def _run(self) -> None:
        emu = self.vm.emulator
        last = emu.instructions_seen
        k = 0
        while not self.done.wait(0.05):
            if emu.instructions_seen - last < self.spacing:
                continue
            kind = ("drop", "corrupt")[k % 2]
            emu.inject(kind, 1)
            self.injected[kind] += 1
            last = emu.instructions_seen
            k += 1

    def __enter__(self) -> "FaultInjector":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()
        self.vm.emulator.clear_injections()
