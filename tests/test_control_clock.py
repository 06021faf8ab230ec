"""ControlClock's pacing, driven by a fake clock: where it sleeps, where it spins, when it ticks."""

import pytest

from se_robot.robot import ControlClock


class FakeTime:
    """A monotonic clock that moves only when read (``read_step_s`` per read, the spin's cost) or
    slept on (the request plus ``oversleep_s``, a kernel waking the thread late)."""

    def __init__(self, read_step_s: float = 1e-6, oversleep_s: float = 0.0):
        self.t = 100.0
        self.read_step_s = read_step_s
        self.oversleep_s = oversleep_s
        self.sleeps: list[float] = []

    def clock(self) -> float:
        self.t += self.read_step_s
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds + self.oversleep_s

    def work(self, seconds: float) -> None:
        self.t += seconds


def make(period_s=0.02, spin_s=0.001, **fake):
    ft = FakeTime(**fake)
    return ft, ControlClock(period_s, spin_s=spin_s, clock=ft.clock, sleep=ft.sleep)


def test_sleeps_until_spin_before_the_tick_then_returns_at_the_tick():
    ft, clock = make(read_step_s=1e-6, oversleep_s=0.0004)
    first_tick = clock.next_tick
    ft.work(0.005)
    assert clock.wait() == 0.0
    # coarse stage: everything but the last spin_s; the 0.4 ms late wake-up is absorbed by the spin
    assert ft.sleeps[-1] == pytest.approx(first_tick - 0.001 - (100.0 + 2e-6 + 0.005), abs=1e-9)
    assert first_tick <= ft.t <= first_tick + 2e-6


def test_schedule_is_absolute_so_late_wakeups_do_not_accumulate():
    ft, clock = make(oversleep_s=0.003)   # wakes 3 ms late, more than the 1 ms spin covers
    t0 = clock.next_tick
    for k in range(50):
        ft.work(0.004)
        assert clock.wait() == 0.0
        assert ft.t >= t0 + k * 0.02
    assert clock.next_tick == pytest.approx(t0 + 50 * 0.02, abs=1e-9)
    assert ft.t - (t0 + 49 * 0.02) == pytest.approx(0.002, abs=1e-5)   # late by 3 - 1 ms, every tick alike


def test_an_overrun_is_reported_and_restarts_from_now_without_a_burst():
    ft, clock = make()
    ft.work(0.035)                          # missed the first tick by ~15 ms
    late = clock.wait()
    assert late == pytest.approx(0.015, abs=1e-4)
    assert ft.sleeps == []                  # no waiting when already late
    restarted = ft.t
    ft.work(0.001)
    assert clock.wait() == 0.0              # the next tick is a full period after the overrun
    assert ft.t == pytest.approx(restarted + 0.02, abs=1e-5)


def test_spin_zero_is_one_plain_sleep_to_the_tick():
    ft, clock = make(spin_s=0.0)
    tick = clock.next_tick
    ft.work(0.004)
    reads_before = ft.t
    clock.wait()
    assert len(ft.sleeps) == 1
    assert ft.sleeps[0] == pytest.approx(tick - reads_before - 1e-6, abs=1e-9)
    assert ft.t == pytest.approx(tick, abs=5e-6)


def test_less_than_spin_left_only_spins():
    ft, clock = make(spin_s=0.001)
    ft.work(0.0195)                         # 0.5 ms before the tick
    assert clock.wait() == 0.0
    assert ft.sleeps == []
    assert ft.t >= clock.next_tick - 0.02


def test_restart_schedules_a_full_period_from_now():
    ft, clock = make()
    ft.work(1.0)
    clock.restart()
    assert clock.next_tick == pytest.approx(ft.t + 0.02, abs=1e-9)


def test_before_tick_runs_after_the_sleep_and_before_the_tick_and_not_when_late():
    ft, clock = make(read_step_s=1e-6)
    first_tick = clock.next_tick
    calls: list[float] = []
    ft.work(0.005)
    assert clock.wait(lambda: calls.append(ft.t)) == 0.0
    assert len(calls) == 1 and first_tick - 0.001 <= calls[0] < first_tick   # in the spin window
    assert ft.t >= first_tick
    ft.work(0.05)   # the next tick is long past: nothing runs, the overrun is reported
    assert clock.wait(lambda: calls.append(ft.t)) > 0.0
    assert len(calls) == 1
