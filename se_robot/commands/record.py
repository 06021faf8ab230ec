"""``se-robot record``: teleoperate the twin or the real arm and record operator-labelled episodes."""

from __future__ import annotations

import argparse
import sys
from typing import Any

TASKS = ("reach", "push", "lift")
TELEOP = ("keyboard", "gamepad", "spacemouse", "leader")
DISPLAY_HELP = ("live view in Rerun of camera frames, joints, actions, reward, success and interventions: "
                "without a value spawn a viewer here; HOST:PORT streams to a viewer running there (start it "
                "with `rerun`; it listens on 9876); a path ending in .rrd saves the recording for `rerun FILE.rrd`")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "record", help="record teleoperated episodes (keyboard, gamepad, SpaceMouse, leader arm)",
        description="Drive the sim twin or the real arm with a teleop device and record episodes in the "
                    "dataset format of `se-robot demos`. The operator marks success (Enter/y, gamepad A), "
                    "failure (n, B), re-record (x, X); Space (or the gamepad's mode button) latches the "
                    "e-stop. With a SpaceMouse, gamepad or leader arm the terminal keyboard still gives "
                    "these buttons.")
    p.add_argument("--task", choices=TASKS, default="push")
    p.add_argument("--backend", choices=("sim", "hardware", "ros"), default="sim",
                   help="sim: the twin in-process; hardware: SerialArm + camera; ros: a running arm_node "
                        "(+ camera_node) or sim_node, e.g. from robot.launch.py")
    p.add_argument("--teleop", choices=TELEOP, default="keyboard")
    p.add_argument("--device", default=None,
                   help="evdev node for gamepad/spacemouse (/dev/input/eventN), serial port of the leader "
                        "arm, or a tty for the keyboard (default: this terminal)")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--out", required=True, help="dataset directory (created; appends if it exists)")
    p.add_argument("--obs-mode", choices=("state", "pixels", "both"), default="both")
    p.add_argument("--image-size", type=int, default=84)
    p.add_argument("--camera", choices=("scene", "wrist"), default="scene")
    p.add_argument("--control-hz", type=float, default=10.0)
    p.add_argument("--speed", type=float, default=0.5, help="keyboard/gamepad speed scale in (0, 1]")
    p.add_argument("--port", default="/dev/ttyUSB0", help="hardware: the follower arm's serial port")
    p.add_argument("--arm-id", default=None,
                   help="hardware: the follower's arm id, whose calibration `se-robot calibrate --arm-id` stored "
                        "(default: the arm's name, so101)")
    p.add_argument("--calibration", default=None,
                   help="hardware: follower calibration YAML (default: the one stored for --arm-id)")
    p.add_argument("--camera-config", default="usb_scene", help="hardware: camera name in config/cameras or YAML")
    p.add_argument("--camera-source", default=None, help="hardware: override the camera source (index or URL)")
    p.add_argument("--leader-arm", default="so101", help="leader: arm description name or YAML")
    p.add_argument("--leader-arm-id", default=None,
                   help="leader: the leader arm's id (default: <leader arm>_leader, e.g. so101_leader); calibrate "
                        "it once with: se-robot calibrate --port LEADER_PORT --arm so101 --arm-id so101_leader")
    p.add_argument("--leader-calibration", default=None,
                   help="leader: calibration YAML of the leader arm (default: the one stored for --leader-arm-id)")
    p.add_argument("--auto-label", action="store_true",
                   help="when the env ends an episode, label it from info['is_success'] instead of asking")
    p.add_argument("--seed", type=int, default=None, help="sim: seed of the first episode")
    p.add_argument("--stream-port", type=int, default=None,
                   help="serve the camera view as MJPEG on this port (open http://HOST:PORT/stream.mjpg; "
                        "use ssh -L to watch from another machine)")
    add_display_option(p)
    p.add_argument("--scene-timeout", type=float, default=None, metavar="S",
                   help="hardware push/lift: seconds to wait for 'scene restored' (keyboard p, gamepad left "
                        "shoulder) before stopping with an error (default: wait)")
    p.add_argument("--scene-operator", default=None, metavar="WHO",
                   help="hardware push/lift: who restores the scene between episodes: the teleop device's 'scene "
                        "restored' button (default), or http://HOST:PORT of `se-robot emulate --scene-port`")
    p.add_argument("--reward-model", default=None, metavar="FILE",
                   help="a success classifier (se-robot reward train) whose sparse reward and success replace the "
                        "task's; the episode ends on success (the env's own judgement stays in info)")
    p.add_argument("--reward-threshold", type=float, default=None, metavar="P",
                   help="the classifier's success probability threshold (default: the model's own)")
    p.set_defaults(func=run)


def add_display_option(p: argparse.ArgumentParser) -> None:
    """``--display [WHERE]``: the same live-view option on record, train and evaluate."""
    p.add_argument("--display", nargs="?", const="spawn", default=None, metavar="WHERE", help=DISPLAY_HELP)


def open_display_of(args: argparse.Namespace) -> Any:
    """The Rerun recording ``--display`` asks for, or None without it."""
    if getattr(args, "display", None) is None:
        return None
    from se_robot.envs.display import open_display

    return open_display(None if args.display == "spawn" else args.display)


def make_record_env(args: argparse.Namespace, action_mode: str) -> Any:
    """The env through ``make_env`` with ``frame_stack=0``: a dataset holds single H x W x 3 frames."""
    from se_robot.envs import make_env

    options: dict[str, Any] = dict(obs_mode=args.obs_mode, image_size=args.image_size, camera=args.camera,
                                   action_mode=action_mode, control_hz=args.control_hz,
                                   reward_model=args.reward_model or "", reward_threshold=args.reward_threshold)
    if args.backend == "hardware":
        options.update(port=args.port, calibration=args.calibration, arm_id=args.arm_id,
                       scene_camera=args.camera_config, camera_source=args.camera_source)
    return make_env(args.task, backend=args.backend, frame_stack=0, **options)


def live_view_url(env: Any) -> str | None:
    """The scene camera's own MJPEG/HTTP URL, where the robot has one (the emulator's, an IP camera)."""
    cameras = getattr(env.unwrapped.robot, "cameras", {})
    cam = cameras.get("scene") or cameras.get("wrist")
    source = getattr(cam, "source", None)
    return source if isinstance(source, str) and source.startswith(("http://", "https://")) else None


def run(args: argparse.Namespace, scene_operator: Any = None) -> int:
    """``scene_operator``: who restores push/lift scenes on the arm (default: the teleop device's
    'scene restored' button; tests pass the emulator's ``VirtualArm.scene_operator()``)."""
    import numpy as np

    from se_robot.data.episodes import DatasetError
    from se_robot.data.writer import EpisodeWriter
    from se_robot.data.recording import dataset_meta_for
    from se_robot.envs.operator import TeleopButtonOperator, make_operator
    from se_robot.teleop.devices import make_teleop
    from se_robot.teleop.keyboard import KeyboardTeleop
    from se_robot.envs.display import close_display, with_display
    from se_robot.teleop.session import record_teleop

    action_mode = "joint_delta" if args.teleop == "leader" else "ee_delta"
    display = open_display_of(args)
    env = with_display(make_record_env(args, action_mode), display, "record")
    server = None
    try:
        base = env.unwrapped
        device = make_teleop(args.teleop, device=args.device, estop=base.robot.estop, leader_arm=args.leader_arm,
                             leader_calibration=args.leader_calibration, leader_arm_id=args.leader_arm_id,
                             follower_arm=base.arm,
                             speed=args.speed, action_scale_rad=base.cfg.joint_step_rad)
        # The keyboard holds the terminal in raw mode: the scene is confirmed with the device's button.
        base.operator = scene_operator or (make_operator(args.scene_operator, args.scene_timeout) if args.scene_operator
                                           else TeleopButtonOperator(device, timeout_s=args.scene_timeout))
        meta = dataset_meta_for(env, args.task, camera=args.camera, obs_mode=args.obs_mode,
                                image_size=args.image_size, action_mode=action_mode, backend=args.backend)
        try:
            writer = EpisodeWriter(args.out, meta)
        except DatasetError as e:
            print(f"se-robot record: {e}", file=sys.stderr)
            return 1
        episode_meta = {"backend": args.backend}
        if args.backend == "hardware":
            calibration = base.robot.calibration
            from se_robot.config import to_dict

            episode_meta["calibration"] = to_dict(calibration)
            episode_meta["arm_id"] = base.robot.device.arm_id
        on_step = None
        if args.stream_port is not None and args.obs_mode != "state":
            from se_robot.hardware.mjpeg_server import MjpegServer

            latest = {"frame": np.zeros((args.image_size, args.image_size, 3), np.uint8)}
            server = MjpegServer(lambda: latest["frame"].repeat(4, 0).repeat(4, 1), host="0.0.0.0",
                                 port=args.stream_port, fps=args.control_hz).start()
            print(f"live view: {server.url}", flush=True)

            def on_step(obs, cmd):  # noqa: ARG001 - the signature record_teleop calls
                latest["frame"] = obs["pixels"]
        elif live_view_url(env):
            print(f"live view: {live_view_url(env)} (the camera's own stream)", flush=True)
        elif args.backend != "sim":
            print("live view: none; add --stream-port PORT to watch the camera over HTTP", flush=True)
        print(KeyboardTeleop.help_text())
        with device:
            result = record_teleop(env, device, writer, args.episodes, auto_label=args.auto_label,
                                   episode_metadata=episode_meta, on_step=on_step, seed=args.seed)
    finally:
        if server is not None:
            server.stop()
        env.close()
        if display is not None:
            close_display(display)
    print(f"wrote {result.written} episodes ({result.successes} successes, {result.rerecorded} re-recorded) "
          f"to {args.out}; ended by {result.ended_by}")
    return 3 if result.ended_by == "estop" else 0
