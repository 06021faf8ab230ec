"""benchmarks/compare_revs.py: the figures it reads from each revision's output, and the ratios."""

from __future__ import annotations

import sys
import textwrap

import pytest

from benchmarks import compare_revs as cr

SIM_OLD = """\
measurement              steps/s   raw steps/s   ratio   (median of 5 alternating rounds)
env state                    162           567    0.29   raw = raw mj_step
env pixels                    82           119    0.69   raw = raw mj_step+render
vector pixels x1 sync         91
vector pixels x2 async       129   scaling 1.41x on 2 cores
"""
SIM_NEW = """\
measurement     steps/s  raw at rest  ratio  raw moving  ratio   (median of 5 alternating rounds)
env state           326          814   0.40         742   0.44   raw = mj_step
env pixels          119          165   0.72         153   0.78   raw = mj_step+render
vector pixels x1 async        90
vector pixels x2 async        92   scaling 1.03x on 2 cores
"""
ROS_OLD = """\
  rate   p50 ms   p99 ms  jit99-50  std ms  ovh p50  ovh p99  wait p50 overruns  stale
    20    50.00    72.34     22.34   10.06     3.35    27.12      0.21        2      0
    50    19.74    34.04     14.30    5.83     5.19    28.02      3.52       13      0

direct ArmEnv(TwinRobot).step (obs_mode=both, compute incl. physics and render): p50 11.97 ms, p99 19.38 ms

      source      size  frames   p50 ms   p99 ms   max ms
    sim_node     84x84      60     4.46    12.21    14.84
    sim_node   640x480       0      nan      nan      nan
"""
ROS_NEW = """\
  rate spin ms   p50 ms   p99 ms  jit99-50  std ms  ovh p50  ovh p99  wait p50 overruns  stale stale frm cpu/step node % load 1m
    20     1.0    50.00    51.17      1.17    0.29     1.90     7.41      0.77        0      0         0     4.01     43    5.56
    50     1.0    20.00    26.17      6.17    1.68     1.86    12.34      0.99        0      0         0     3.42     56    5.51
"""
LEARNER_NEW = """\
row            image batch  updates/s  ms/update cpu-ms/upd    n  vs ref  settings
paper             84   256       0.24     4125.0     2122.3    3       -  drqv2 conv channels-last
cpu               64   128       1.18      846.7      538.9    3       -  drqv2 conv channels-last
"""


def test_sim_reads_both_layouts():
    old, new = cr.parse_sim(SIM_OLD), cr.parse_sim(SIM_NEW)
    assert old["env state steps/s"].value == 162 and old["env/raw pixels at rest"].value == 0.69
    assert "env/raw pixels moving" not in old
    assert new["env/raw pixels moving"].value == 0.78 and new["raw state at rest steps/s"].value == 814
    assert old["vector x1 steps/s"].value == 91 and new["vector scaling x2/x1"].value == 1.03
    assert old.keys() - new.keys() == set()


def test_ros_maps_columns_by_layout_and_skips_empty_latency_rows():
    old, new = cr.parse_ros(ROS_OLD), cr.parse_ros(ROS_NEW)
    assert old["50 Hz p99 ms"].value == 34.04 and new["50 Hz p99 ms"].value == 26.17
    assert old["20 Hz overruns"].value == 2 and new["20 Hz client cpu ms/step"].value == 4.01
    assert "20 Hz load" not in new and "20 Hz spin" not in new
    assert old["direct step p99 ms"].value == 19.38
    assert old["image latency sim_node 84x84 p50 ms"].value == 4.46
    assert not any("640x480" in k for k in old)
    assert not old["50 Hz jitter p99-p50 ms"].higher_is_better


def test_learner_bus_camera_homing():
    rows = cr.parse_learner(LEARNER_NEW)
    assert rows["cpu updates/s"].value == 1.18 and rows["paper cpu-ms/update"].value == 2122.3
    bus = cr.parse_bus("  median 0.590 ms  p90 0.921 ms  p99 4.880 ms  max 5.752 ms  -> 1696 Hz possible")
    assert bus["tick p99 ms"].value == 4.88
    cam = cr.parse_camera("  frames read by the camera thread: 124 (31.0 fps), drops 0\n"
                          "  produce -> grab latency:      p50    1.1 ms  p95    3.1 ms  max    6.1 ms  (n=34)\n")
    assert cam["frames read fps"].value == 31.0 and cam["produce->grab p95 ms"].value == 3.1
    homing = cr.parse_homing("homed 3 of 6 sub-floor poses (seed 0, 20 s limit, tolerance 0.05 rad) in 7 s; load 5")
    assert homing == {"poses homed": cr.Figure(3, True), "wall s": cr.Figure(7, False)}
    audited = cr.parse_homing("homed 19 of 40 sub-floor poses (seed 0, 20 s limit) in 56 s; load average 7.0\n"
                              "  goals sent: 4177; lowering the lowest link under the clearance: 0\n")
    assert audited["wall ms per goal"].value == pytest.approx(56e3 / 4177)


def _run(side: str, rnd: int, value: float, higher: bool = True) -> cr.Run:
    return cr.Run(side, rnd, 1.0, {"x": cr.Figure(value, higher)})


@pytest.mark.parametrize("higher, a, b, verdict", [
    (True, [10, 11, 12], [5, 6, 7], "worse"),
    (True, [10, 11, 12], [11.5, 13, 14], "~"),
    (False, [10, 11, 12], [5, 6, 7], "better"),
    (False, [10, 11, 12], [13, 14, 15], "worse"),
])
def test_medians_ratio_and_verdict(higher, a, b, verdict):
    runs = [_run("A", i, v, higher) for i, v in enumerate(a)] + [_run("B", i, v, higher) for i, v in enumerate(b)]
    (row,) = cr.summarize(runs)
    assert (row.a, row.b, row.n) == (a[1], b[1], 3)
    assert row.ratio == pytest.approx(b[1] / a[1])
    assert row.verdict == verdict


def test_a_row_renamed_on_one_side_is_compared_with_the_other_sides_row():
    figures = cr.parse_learner(LEARNER_NEW.replace("paper    ", "paper+cl "))
    assert set(cr.renamed(figures, {"paper+cl": "paper"})) == set(cr.parse_learner(LEARNER_NEW))


def test_figures_only_one_side_printed_are_left_out():
    runs = [_run("A", 0, 1.0), cr.Run("B", 0, 1.0, {"y": cr.Figure(2.0, True)})]
    assert cr.summarize(runs) == []


def test_rounds_alternate_which_side_runs_first():
    assert cr.order(3) == [(0, "A"), (0, "B"), (1, "B"), (1, "A"), (2, "A"), (2, "B")]


def test_runs_each_tree_from_its_root_and_reads_logs_back(tmp_path):
    """Two fake trees whose ``python -m benchmarks bus`` prints a tick time: the comparison runs
    each from its own root and the saved logs summarize to the same rows."""
    trees = {}
    for side, ms in (("A", "0.500"), ("B", "0.250")):
        pkg = tmp_path / side / "benchmarks"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "__main__.py").write_text(textwrap.dedent(f"""\
            import sys
            assert sys.argv[1:] == ["bus", "--ticks", "5"], sys.argv
            print("  median {ms} ms  p90 1.0 ms  p99 2.0 ms  max 3.0 ms")
        """))
        trees[side] = tmp_path / side
    logs = tmp_path / "logs"
    runs = cr.run_rounds(trees, "bus", ["--ticks", "5"], {"A": [], "B": []}, rounds=2, python=sys.executable,
                         log_dir=logs, timeout_s=60)
    rows = {r.figure: r for r in cr.summarize(runs)}
    assert rows["tick median ms"].ratio == pytest.approx(0.5)
    assert rows["tick median ms"].verdict == "better"
    assert cr.summarize(cr.runs_from_logs(logs, "bus")) == cr.summarize(runs)
    assert len(list(logs.glob("r*_[AB].txt"))) == 4
