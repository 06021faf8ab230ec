"""``--display``: the live view logged to Rerun, read back from the .rrd its file sink writes (and
from a Rerun server it streamed to): frames, joints, actions, reward, success and interventions of
the twin, of a keyboard takeover, of `se-robot record`, `train` and `evaluate`."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

rr = pytest.importorskip("rerun", reason="--display needs rerun-sdk (pip install -e '.[display]')")

from rerun.chunk import RrdReader  # noqa: E402

from se_robot.cli import main  # noqa: E402
from se_robot.envs import make_env  # noqa: E402
from se_robot.envs.display import RerunDisplay, close_display, display_url, open_display  # noqa: E402

pytestmark = pytest.mark.timeout(300)

COLUMNS = {"Scalars:scalars", "Image:buffer", "Image:format", "TextLog:text"}


def read_rrd(path: Path) -> dict[str, dict[str, list]]:
    """Every entity of the recording in ``path``: its columns (values and time), rows in step order."""
    rows: dict[str, list[dict]] = {}
    for chunk in RrdReader(path).stream():
        if chunk.is_static:   # series names and recording properties, not steps
            continue
        batch = chunk.to_record_batch()
        names = [n for n in batch.schema.names if n in COLUMNS or n.endswith("/step")]
        columns = {n: batch.column(n).to_pylist() for n in names}
        rows.setdefault(chunk.entity_path, []).extend(
            {n: columns[n][i] for n in names} for i in range(batch.num_rows))
    entities = {}
    for path, found in rows.items():   # chunks may come in any order: sort by the entity's own step
        step = f"{path.split('/')[1]}/step"
        found.sort(key=lambda row: row.get(step) or 0)
        entities[path] = {n: [row.get(n) for row in found] for n in {n for row in found for n in row}}
    return entities


def scalars(entities: dict, path: str) -> np.ndarray:
    return np.array(entities[path]["Scalars:scalars"], dtype=np.float64)


def test_twin_steps_are_logged_with_frames_joints_action_reward_and_success(tmp_path):
    rrd = tmp_path / "view.rrd"
    recording = open_display(str(rrd))
    env = RerunDisplay(make_env("reach", obs_mode="both", image_size=32, frame_stack=0), recording, "record")
    rng = np.random.default_rng(0)
    rewards, successes, measured, actions = [], [], [], []
    obs, _ = env.reset(seed=0)
    measured.append(env.unwrapped.measured_joints)
    for _ in range(6):
        action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        successes.append(info["is_success"])
        measured.append(env.unwrapped.measured_joints)
        actions.append(action)
    env.close()
    close_display(recording)

    seen = read_rrd(rrd)
    joints = env.unwrapped.arm.n_joints
    assert {"/record/camera/scene", "/record/joints/measured", "/record/joints/commanded", "/record/action",
            "/record/reward", "/record/success", "/record/intervention", "/record/events"} <= set(seen)
    np.testing.assert_allclose(scalars(seen, "/record/reward")[:, 0], rewards, rtol=1e-6)
    np.testing.assert_array_equal(scalars(seen, "/record/success")[:, 0], np.array(successes, float))
    np.testing.assert_array_equal(scalars(seen, "/record/intervention")[:, 0], 0.0)
    np.testing.assert_allclose(scalars(seen, "/record/action"), actions, rtol=1e-6)
    q = scalars(seen, "/record/joints/measured")   # the reset's reading, then one per step
    assert q.shape == (7, joints)
    np.testing.assert_allclose(q, measured, rtol=1e-6)
    assert seen["/record/reward"]["record/step"] == [1, 2, 3, 4, 5, 6]
    images = seen["/record/camera/scene"]
    assert len(images["Image:buffer"]) == 7
    (last,) = images["Image:buffer"][-1]   # one image per row
    last = np.asarray(last, np.uint8)
    np.testing.assert_array_equal(last, obs["pixels"].reshape(-1))   # the frame the agent saw, as RGB
    assert seen["/record/events"]["TextLog:text"][0] == ["episode 1 starts"]


def test_a_keyboard_takeover_is_logged_as_an_intervention_with_the_executed_action(tmp_path):
    from se_robot.envs.intervention import InterventionWrapper
    from se_robot.teleop.keyboard import KeyboardTeleop

    master, slave = os.openpty()
    keyboard = KeyboardTeleop(tty_path=os.ttyname(slave), speed=1.0)
    keyboard.connect()
    rrd = tmp_path / "takeover.rrd"
    recording = open_display(str(rrd))
    env = RerunDisplay(InterventionWrapper(make_env("push", obs_mode="state"), keyboard), recording, "train")
    try:
        policy = np.array([0.0, 0.0, -0.5, -1.0], np.float32)
        env.reset(seed=0)
        env.step(policy)
        os.write(master, b"w")   # the operator deflects the keyboard: the human drives this step
        select.select([keyboard._fd], [], [], 2.0)
        _, _, _, _, info = env.step(policy)
        assert info["intervention"]
    finally:
        env.close()
        close_display(recording)
        os.close(master)
        os.close(slave)
    seen = read_rrd(rrd)
    np.testing.assert_array_equal(scalars(seen, "/train/intervention")[:, 0], [0.0, 1.0])
    executed = scalars(seen, "/train/action")
    np.testing.assert_allclose(executed[0], policy)
    np.testing.assert_allclose(executed[1], info["executed_action"])   # the operator's, not the policy's
    assert "/train/camera/scene" not in seen   # a state env reads no camera


def test_a_foreign_env_shows_its_observation_vector(tmp_path):
    import gymnasium as gym

    rrd = tmp_path / "pendulum.rrd"
    recording = open_display(str(rrd))
    env = RerunDisplay(gym.make("Pendulum-v1"), recording, "train")
    obs, _ = env.reset(seed=0)
    observed = [obs]
    for _ in range(3):
        obs, *_ = env.step(np.array([0.5], np.float32))
        observed.append(obs)
    env.close()
    close_display(recording)
    seen = read_rrd(rrd)
    np.testing.assert_allclose(scalars(seen, "/train/observation/state"), observed, rtol=1e-6)
    np.testing.assert_allclose(scalars(seen, "/train/action")[:, 0], 0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.filterwarnings("ignore:RRD file has no footer")   # a streamed file ends without one
def test_host_port_streams_to_a_running_rerun_server(tmp_path):
    """A viewer elsewhere: `rerun --port P --save FILE` takes the stream as a viewer would."""
    port, received = free_port(), tmp_path / "received.rrd"
    server = subprocess.Popen([sys.executable, "-m", "rerun", "--port", str(port), "--save", str(received)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:   # generous: the machine may be loaded
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "rerun server did not start"
                time.sleep(0.2)
        recording = open_display(f"127.0.0.1:{port}")
        env = RerunDisplay(make_env("reach", obs_mode="state"), recording, "eval")
        env.reset(seed=0)
        for _ in range(3):
            env.step(np.zeros(env.action_space.shape, np.float32))
        env.close()
        close_display(recording)
        deadline, seen, torn = time.monotonic() + 120, {}, None
        while "/eval/reward" not in seen or len(scalars(seen, "/eval/reward")) < 3:
            assert time.monotonic() < deadline, f"the server saved {sorted(seen)}; last read: {torn!r}"
            time.sleep(0.5)
            try:   # the server writes as it receives: a read may catch its last message half written
                seen = read_rrd(received)
            except Exception as error:
                torn = error
    finally:   # `python -m rerun` runs the server binary as its child: end the whole group
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    assert "/eval/joints/measured" in seen


def test_display_targets_and_a_wrong_one_is_a_configuration_error(tmp_path, capsys):
    assert display_url("robot-pc:9876") == "rerun+http://robot-pc:9876/proxy"
    assert display_url("rerun+http://10.0.0.2:9000/proxy") == "rerun+http://10.0.0.2:9000/proxy"
    assert display_url("run.rrd") is None
    port = free_port()   # nothing listens there
    assert main(["record", "--task", "reach", "--out", str(tmp_path / "rec"), "--display", f"127.0.0.1:{port}"]) == 2
    assert f"no Rerun viewer at 127.0.0.1:{port}" in capsys.readouterr().err
    out = tmp_path / "rec"
    assert main(["record", "--task", "reach", "--out", str(out), "--display", "viewer.txt"]) == 2
    assert "--display: 'viewer.txt': expected no value" in capsys.readouterr().err
    assert not out.exists()   # refused before anything was built


def test_spawning_a_viewer_without_a_screen_says_what_works_instead(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    out = tmp_path / "rec"
    assert main(["record", "--task", "reach", "--out", str(out), "--display"]) == 2
    err = capsys.readouterr().err
    assert "no screen here to open a viewer on" in err and "--display THAT_HOST:9876" in err
    assert not out.exists()


def test_record_cli_logs_its_episode(tmp_path):
    from tests.support.keyboard_pty import run_cli_typing

    rrd = tmp_path / "record.rrd"
    assert run_cli_typing(lambda tty: [
        "record", "--task", "push", "--backend", "sim", "--teleop", "keyboard", "--device", tty,
        "--episodes", "1", "--out", str(tmp_path / "rec"), "--image-size", "32", "--control-hz", "50",
        "--display", str(rrd)], [b"w", b"y"]) == 0
    seen = read_rrd(rrd)
    assert {"/record/camera/scene", "/record/joints/measured", "/record/action", "/record/reward"} <= set(seen)
    assert len(scalars(seen, "/record/action")) >= 1


TINY = {
    "task": "reach", "algo": "sac", "obs_mode": "state", "steps": 30, "seed": 0, "learning_starts": 10,
    "eval_every": 30, "eval_episodes": 1, "eval_video": False, "checkpoint_every": 30, "log_every": 10,
    "tensorboard": False, "progress": False, "device": "cpu", "threads": 1, "frame_stack": 1,
    "replay": {"capacity": 200, "n_step": 1},
    "agent": {"batch_size": 8, "hidden_dim": 16},
}


def test_train_and_evaluate_log_training_and_evaluation_steps(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    run, train_rrd, eval_rrd = tmp_path / "run", tmp_path / "train.rrd", tmp_path / "eval.rrd"
    assert main(["train", "--config", str(config), "--out", str(run), "--display", str(train_rrd)]) == 0
    seen = read_rrd(train_rrd)
    assert len(scalars(seen, "/train/reward")) == 30
    assert {"/train/joints/measured", "/train/action", "/train/success", "/eval/reward"} <= set(seen)
    assert main(["evaluate", "--checkpoint", str(run), "--episodes", "1", "--out", str(tmp_path / "ev"),
                 "--display", str(eval_rrd)]) == 0
    seen = read_rrd(eval_rrd)
    length = json.loads((tmp_path / "ev" / "eval.json").read_text())["eval/episode_length"]
    assert len(scalars(seen, "/eval/reward")) == length == 25   # 50 control ticks at action repeat 2
    assert not any(path.startswith("/train/") for path in seen)
