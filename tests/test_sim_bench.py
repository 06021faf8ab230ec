"""``python -m benchmarks sim --breakdown`` runs and accounts for the whole step (no timing checked)."""

from __future__ import annotations

import argparse
import os

import pytest

from benchmarks import sim

pytestmark = pytest.mark.timeout(300)


def test_breakdown_names_every_part_and_the_whole_step(capsys):
    os.environ.setdefault("MUJOCO_GL", "egl")
    affinity = os.sched_getaffinity(0)
    parser = argparse.ArgumentParser()
    sim.register(parser.add_subparsers())
    args = parser.parse_args(["sim", "--steps", "50", "--rounds", "1", "--no-vector", "--breakdown", "--clock", "cpu"])
    try:
        assert sim.run(args) == 0
    finally:
        os.sched_setaffinity(0, affinity)  # the benchmark pins itself to one core
    out = capsys.readouterr().out
    assert "env pixels" in out and "pixel step, CPU time per step in place (50 steps" in out
    for label, _, _ in sim._PARTS:
        assert label in out, label
    assert "rest (wrappers, glue)" in out and "whole step" in out
