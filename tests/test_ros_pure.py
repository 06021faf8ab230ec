"""Pure pieces of the ROS layer: parameter specs, message conversions, the chunked wire format."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from se_robot import ros_params
from se_robot.nodes import conversions as conv
from se_robot.nodes import wire

pytestmark = pytest.mark.timeout(60)


# ---------------------------------------------------------------- ros_params
@pytest.mark.parametrize("node", sorted(ros_params.NODE_PARAMS))
def test_every_node_config_has_ros_parameter_form(node):
    for cls in ros_params.NODE_PARAMS[node]:
        specs = ros_params.parameter_specs(cls)
        assert [s.name for s in specs] == [f.name for f in dataclasses.fields(cls)]
        for s in specs:
            assert s.description, f"{cls.__name__}.{s.name} has no help text"
            assert ros_params.check_value(cls, s.name, s.default) is None


def test_sim_declares_the_arm_and_camera_parameter_names():
    sim = {f.name for f in dataclasses.fields(ros_params.SimParams)}
    shared_arm = {f.name for f in dataclasses.fields(ros_params.ArmParams)} - {"port", "arm_id", "calibration"}
    shared_cam = {f.name for f in dataclasses.fields(ros_params.CameraParams)} - {"camera_source"}
    assert shared_arm <= sim and shared_cam <= sim


def test_check_value_gives_reasons():
    assert "out of range" in ros_params.check_value(ros_params.SimParams, "camera_rate_hz", 500.0)
    assert "allowed" in ros_params.check_value(ros_params.SimParams, "task", "juggle")
    assert "expected an integer" in ros_params.check_value(ros_params.SimParams, "image_width", "wide")
    assert "not a parameter" in ros_params.check_value(ros_params.SimParams, "nope", 1)


def test_parameters_file_problems_are_named():
    data = {"sim_node": {"ros__parameters": {"image_width": 8, "colour": "red"}}, "ghost": {"ros__parameters": {}}}
    problems = ros_params.check_parameters_file(data, ros_params.NODE_PARAMS, "x.yaml")
    text = "\n".join(problems)
    assert "image_width" in text and "colour" in text and "ghost" in text


# ---------------------------------------------------------------- conversions
@pytest.mark.parametrize("encoding,shape,dtype", [("rgb8", (5, 7, 3), np.uint8), ("mono8", (4, 6), np.uint8),
                                                  ("32FC1", (3, 2), np.float32), ("16UC1", (2, 9), np.uint16)])
def test_image_round_trip(encoding, shape, dtype):
    rng = np.random.default_rng(0)
    frame = (rng.random(shape) * 200).astype(dtype)
    msg = conv.image_to_msg(frame, 1_700_000_000_123_456_789, "cam", encoding)
    assert conv.time_to_ns(msg.header.stamp) == 1_700_000_000_123_456_789
    back = conv.msg_to_image(msg, want=encoding)
    np.testing.assert_array_equal(back.reshape(shape), frame)


def test_bgr_and_padded_rows_become_rgb():
    frame = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    msg = conv.image_to_msg(frame[:, :, ::-1].copy(), 0, encoding="bgr8")
    msg.step = 12  # 9 bytes of pixels + 3 of padding per row
    msg.data = np.pad(frame[:, :, ::-1].reshape(2, 9), ((0, 0), (0, 3))).tobytes()
    np.testing.assert_array_equal(conv.msg_to_image(msg), frame)


def test_bad_images_say_which_field():
    msg = conv.image_to_msg(np.zeros((4, 4, 3), np.uint8), 0)
    msg.step = 5
    with pytest.raises(conv.ConversionError, match="step"):
        conv.msg_to_image(msg)
    msg = conv.image_to_msg(np.zeros((4, 4, 3), np.uint8), 0)
    msg.data = bytes(10)
    with pytest.raises(conv.ConversionError, match="data"):
        conv.msg_to_image(msg)
    with pytest.raises(conv.ConversionError, match="encoding"):
        conv.image_to_msg(np.zeros((4, 4), np.uint8), 0, encoding="yuv422")


def test_joint_state_reorders_by_name_and_rejects_missing():
    msg = conv.joint_state_to_msg(["b", "a"], np.array([2.0, 1.0]), np.array([20.0, 10.0]), None, 5)
    pos, vel, eff = conv.msg_to_joint_state(msg, ["a", "b"])
    np.testing.assert_array_equal(pos, [1.0, 2.0])
    np.testing.assert_array_equal(vel, [10.0, 20.0])
    np.testing.assert_array_equal(eff, [0.0, 0.0])
    with pytest.raises(conv.ConversionError, match="lacks joint"):
        conv.msg_to_joint_state(msg, ["a", "c"])


def test_commands_need_one_finite_value_per_joint():
    with pytest.raises(conv.ConversionError, match="expected 3"):
        conv.msg_to_command(conv.array_msg(np.zeros(2)), 3)
    with pytest.raises(conv.ConversionError, match="non-finite"):
        conv.msg_to_command(conv.array_msg(np.array([0.0, np.nan, 0.0])), 3)


# ---------------------------------------------------------------- wire
@settings(max_examples=40, deadline=None)
@given(payload=st.binary(min_size=0, max_size=3000), chunk=st.integers(wire.HEADER_BYTES + 1, 700),
       seed=st.integers(0, 1000))
def test_chunks_reassemble_in_any_order(payload, chunk, seed):
    chunks = wire.split(wire.KIND_WEIGHTS, 7, 3, payload, chunk)
    order = np.random.default_rng(seed).permutation(len(chunks))
    r = wire.Reassembler()
    results = [r.add(chunks[i]) for i in order]
    assert all(x is None for x in results[:-1])
    header, out = results[-1]
    assert out == payload and header.seq == 3 and header.count == len(chunks)


@settings(max_examples=60, deadline=None)
@given(junk=st.binary(max_size=200))
def test_hostile_chunks_raise_wire_errors_only(junk):
    r = wire.Reassembler()
    try:
        r.add(junk)
    except wire.WireError:
        pass


def test_damaged_payload_is_rejected_and_lost_chunks_are_dropped():
    chunks = wire.split(wire.KIND_TRANSITIONS, 1, 1, b"x" * 500, 100)
    bad = bytearray(chunks[2])
    bad[-1] ^= 0xFF
    r = wire.Reassembler()
    for c in chunks[:2] + [bytes(bad)] + chunks[3:-1]:
        assert r.add(c) is None
    with pytest.raises(wire.WireError, match="CRC"):
        r.add(chunks[-1])
    # message 2 loses a chunk; message 3 completes and evicts it
    r2 = wire.Reassembler()
    two = wire.split(wire.KIND_TRANSITIONS, 1, 2, b"a" * 300, 100)
    three = wire.split(wire.KIND_TRANSITIONS, 1, 3, b"b" * 50, 100)
    for c in two[:-1]:
        r2.add(c)
    assert r2.add(three[0])[1] == b"b" * 50
    assert r2.dropped == {"superseded": 1}


def test_arrays_and_weights_round_trip():
    tree = {"action": np.ones((3, 4), np.float32), "next_obs": {"pixels": np.zeros((3, 8, 8, 3), np.uint8)},
            "start": np.array([True, False, False])}
    back = wire.decode_arrays(wire.encode_arrays(tree))
    np.testing.assert_array_equal(back["next_obs"]["pixels"], tree["next_obs"]["pixels"])
    assert back["start"].dtype == bool
    import torch as torch
    state = {"actor": {"w": torch.arange(6.0).reshape(2, 3)}, "steps": 4}
    version, step, out = wire.decode_weights(wire.encode_weights(state, 7, 120))
    assert (version, step) == (7, 120)
    assert torch.equal(out["actor"]["w"], state["actor"]["w"]) and out["steps"] == 4
    with pytest.raises(wire.WireError):
        wire.decode_arrays(b"not an npz")


# ---------------------------------------------------------------- trajectory
def test_trajectory_interpolates_clamps_and_rejects_time_going_back():
    from se_robot.nodes.trajectory import Trajectory

    traj = Trajectory(10.0, np.zeros(2), np.array([1.0, 3.0]), np.array([[1.0, 2.0], [1.0, 4.0]]))
    np.testing.assert_allclose(traj.at(10.5), [0.5, 1.0])
    np.testing.assert_allclose(traj.at(12.0), [1.0, 3.0])
    np.testing.assert_allclose(traj.at(99.0), [1.0, 4.0])
    assert traj.end_s == 13.0
    with pytest.raises(ValueError, match="must not decrease"):
        Trajectory(0.0, np.zeros(1), np.array([2.0, 1.0]), np.ones((2, 1)))


def test_trajectory_from_msg_fills_unnamed_joints_and_names_what_is_wrong():
    from builtin_interfaces.msg import Duration
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from se_robot.nodes.trajectory import trajectory_from_msg

    joints = ["a", "b", "c"]
    start = np.array([1.0, 2.0, 3.0])
    msg = JointTrajectory(joint_names=["c", "a"], points=[
        JointTrajectoryPoint(positions=[30.0, 10.0], time_from_start=Duration(sec=1, nanosec=500_000_000))])
    traj = trajectory_from_msg(msg, joints, start, 5.0)
    assert traj.end_s == 6.5
    np.testing.assert_allclose(traj.at(6.5), [10.0, 2.0, 30.0])
    np.testing.assert_allclose(start, [1.0, 2.0, 3.0])   # the start configuration is not modified
    with pytest.raises(ValueError, match=r"unknown joints \['x'\]"):
        trajectory_from_msg(JointTrajectory(joint_names=["x"], points=msg.points), joints, start, 0.0)
    with pytest.raises(ValueError, match="no points"):
        trajectory_from_msg(JointTrajectory(joint_names=["a"]), joints, start, 0.0)
    with pytest.raises(ValueError, match="point 0 has 2 positions for 1 joint names"):
        trajectory_from_msg(JointTrajectory(joint_names=["a"], points=msg.points), joints, start, 0.0)


# ---------------------------------------------------------------- arm diagnostics
def test_arm_diagnostics_levels_follow_errors_rate_and_estop():
    from diagnostic_msgs.msg import DiagnosticStatus

    from se_robot.estop import EStop
    from se_robot.nodes.arm_diagnostics import arm_diagnostics, loop_rate_hz

    assert loop_rate_hz([0.0, 0.1]) == 0.0
    assert loop_rate_hz([0.0, 0.1, 0.2, 0.3]) == pytest.approx(10.0)
    estop = EStop()
    counters = {"watchdog_holds": 0, "rejected_commands": 0, "loop_ticks": 4, "bus_errors": 1}
    stats = {"bus/errors": 2, "arm/clipped": 3}

    def levels(**kw):
        args = dict(counters=counters, last_error="", rate_hz=10.0, want_rate_hz=10.0, mode="idle", active=True)
        msg = arm_diagnostics("arm", 1_500_000_000, stats, estop, **{**args, **kw})
        return {s.name: (s.level, {v.key: v.value for v in s.values}) for s in msg.status}

    ok = levels()
    assert [lvl for lvl, _ in ok.values()] == [DiagnosticStatus.OK] * 4
    assert ok["arm: bus"][1] == {"errors": "3", "bus/errors": "2"}
    assert ok["arm: safety"][1] == {"arm/clipped": "3"}
    assert levels(last_error="PortLostError: gone")["arm: bus"][0] == DiagnosticStatus.WARN
    assert levels(rate_hz=7.9)["arm: loop"][0] == DiagnosticStatus.WARN
    estop.latch("test")
    assert levels()["arm: estop"] == (DiagnosticStatus.ERROR, {"latched": "True", "latch_count": "1"})
