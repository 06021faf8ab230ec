"""``se-robot doctor``: can this machine run the robot? Checks the rig and the software it needs.

Checks, in order: torch and its device; MuJoCo and offscreen rendering (EGL: the twin's cameras);
rclpy, its middleware (RMW) and ROS_DOMAIN_ID; the serial ports and the servos on them; the cameras.

Servos: without ``--port``, every serial port the OS lists (and every path ``--scan`` names: the
emulator's pty or link is not listed) is pinged with both protocols (Feetech and Dynamixel 2.0),
and each servo that answers is listed with its id, model and firmware version; the one port that
holds the arm's ids is then checked as ``--port`` checks it. With ``--port``: which servos answer
there against the arm's description, whether the calibration the hardware backend would use exists
(``--calibration``, else the one ``se-robot calibrate`` stored for ``--arm-id``) and, when the servos
answer, whether each one's present position lies inside its calibrated range.

Cameras: with ``--camera``, what each one delivers (size, rate, frame age); without, every video
device (``/dev/video*``) with its name, size and rate. ``--timing`` adds the time of a control tick
on the bus and the frame age a control loop sees. Probing only reads, so nothing moves.

Every problem is printed with the command that fixes it. The exit status is 1 when the robot cannot
run (a FAIL: torch or MuJoCo missing, no port holding the arm's servos, the port or a camera that was
asked for unusable, the arm's servos not all answering, no calibration for the arm or one that does
not fit it), 0 otherwise; WARN lines (no ROS, no offscreen rendering, no camera found, two arms on
two ports) name what will not work without stopping the rest.
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Literal

#: Without --ids, a scan pings ids 0..SCAN_MAX_ID (and the arm's): a new servo comes with id 1.
SCAN_MAX_ID = 20
EMULATOR_HINT = "se-robot emulate --link /tmp/so101 --camera-port 8080  for a virtual arm"
RENDER_PROBE = ("import mujoco; m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><light pos=\"0 0 1\"/>"
                "<geom size=\".1\"/></worldbody></mujoco>'); r = mujoco.Renderer(m, 32, 32); r.render(); "
                "print(mujoco.__version__)")
ROS_PROBE = ("import sys; from se_robot.nodes.runtime import ensure_ament_prefix; ensure_ament_prefix(); "
             "import rclpy; from rclpy.context import Context; "
             "from rclpy.utilities import get_rmw_implementation_identifier as rmw; c = Context(); "
             "rclpy.init(context=c, domain_id=int(sys.argv[1])); rclpy.try_shutdown(context=c); print(rmw())")


@dataclass(frozen=True)
class Finding:
    """One line of the report: ``level`` is ok, warn or fail; ``fix`` the command that fixes a problem."""

    level: Literal["ok", "warn", "fail"]
    what: str
    fix: str = ""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("doctor", help="check serial ports, servos, cameras, rendering, ROS and torch",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", help="serial port of the arm's servo bus (e.g. /dev/ttyACM0): check its servos and "
                   "calibration (default: scan every port and check the one holding the arm's servos)")
    p.add_argument("--scan", action="append", default=[], metavar="GLOB",
                   help="also scan these paths (globs): a pty or a link to one, such as se-robot emulate --link's, "
                        "is not listed by the OS (repeat for several)")
    p.add_argument("--arm", default="so101", help="arm name or YAML path: expected ids, protocol, model")
    p.add_argument("--arm-id", help="the arm id whose stored calibration to check on the arm's port "
                   "(default: the arm's name; a leader arm's is <arm>_leader)")
    p.add_argument("--calibration", metavar="YAML", help="check this calibration file instead of --arm-id's")
    p.add_argument("--ids", help=f"servo ids to ping, e.g. 1-6 or 1,2,7 (default: the arm's; scanning, also "
                   f"0-{SCAN_MAX_ID})")
    p.add_argument("--baud", type=int, help="bus baud rate (default: the arm's)")
    p.add_argument("--camera", action="append", default=[], metavar="SOURCE",
                   help="a camera to open: device index, /dev/videoN or URL (repeat for several; default: every "
                        "/dev/video* device)")
    p.add_argument("--timing", action="store_true", help="also time bus control ticks and camera frame age")
    p.add_argument("--ticks", type=int, default=200, help="control ticks to time with --timing")
    p.add_argument("--seconds", type=float, default=2.0, help="how long to watch each camera")
    p.add_argument("--control-hz", type=float, default=10.0,
                   help="the control rate the timing figures are judged against")
    p.set_defaults(func=run)


def parse_ids(text: str) -> list[int]:
    """``"1-6"``, ``"1,2,7"`` or a mix, as a sorted list of ids."""
    ids: set[int] = set()
    for part in (p.strip() for p in text.split(",") if p.strip()):
        low, _, high = part.partition("-")
        try:
            ids.update(range(int(low), int(high or low) + 1))
        except ValueError:
            raise SystemExit(f"se-robot doctor: --ids {text!r}: expected ids like 1-6 or 1,2,7") from None
    return sorted(ids)


def check_torch() -> list[Finding]:
    try:
        import torch

        from se_robot.agents.base import pick_device
    except ImportError as e:
        return [Finding("fail", f"torch does not import: {e}", "bash scripts/install.sh  (or pip install torch)")]
    device = pick_device("auto")
    name = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    return [Finding("ok", f"torch {torch.__version__}: device {device}{name}, {torch.get_num_threads()} CPU threads")]


def check_mujoco() -> list[Finding]:
    """Rendering runs in a child process: a broken GL driver can abort the process that tries it."""
    try:
        import mujoco
    except ImportError as e:
        return [Finding("fail", f"MuJoCo does not import: {e}", "pip install mujoco")]
    backend = os.environ.get("MUJOCO_GL", "")
    env = dict(os.environ, MUJOCO_GL=backend or "egl")
    try:
        probe = subprocess.run([sys.executable, "-c", RENDER_PROBE], env=env, capture_output=True, text=True,
                               timeout=120)
        error = probe.stderr.strip().splitlines()[-1:] if probe.returncode else []
    except subprocess.TimeoutExpired:
        error = ["timed out after 120 s"]
    if error:
        return [Finding("warn", f"MuJoCo {mujoco.__version__} cannot render offscreen with MUJOCO_GL={env['MUJOCO_GL']}: "
                                f"{error[0]} (the twin's camera observations need it)",
                        "sudo apt-get install libegl1 libgl1  and  export MUJOCO_GL=egl  "
                        "(no GPU driver: MUJOCO_GL=osmesa with libosmesa6)")]
    unset = "" if backend else " (MUJOCO_GL unset: export MUJOCO_GL=egl, as checked here)"
    return [Finding("ok", f"MuJoCo {mujoco.__version__} renders offscreen with MUJOCO_GL={env['MUJOCO_GL']}{unset}")]


def check_ros() -> list[Finding]:
    """rclpy starts in a child process: only nodes/ import rclpy, and a broken middleware stays there."""
    domain_text = os.environ.get("ROS_DOMAIN_ID", "")
    if domain_text and (not domain_text.isdigit() or int(domain_text) > 232):
        return [Finding("fail", f"ROS_DOMAIN_ID={domain_text!r} is not a domain id (0-232)",
                        "export ROS_DOMAIN_ID=0  (the same number on every machine of the robot)")]
    domain = int(domain_text or 0)
    try:
        probe = subprocess.run([sys.executable, "-c", ROS_PROBE, str(domain)], capture_output=True, text=True,
                               timeout=120)
    except subprocess.TimeoutExpired:
        return [Finding("fail", "rclpy did not start within 120 s", "unset RMW_IMPLEMENTATION and try again")]
    error = probe.stderr.strip().splitlines()[-1:] if probe.returncode else []
    if error and "ModuleNotFoundError" in error[0]:
        return [Finding("warn", f"rclpy does not import: {error[0]} (the ROS nodes and --backend ros need it)",
                        "pip install -e '.[ros]'  (or source /opt/ros/<distro>/setup.bash)")]
    if error:
        return [Finding("fail", f"rclpy imports but does not start on ROS_DOMAIN_ID={domain}: {error[0]}",
                        "unset RMW_IMPLEMENTATION  (or install the middleware it names)")]
    shown = f"ROS_DOMAIN_ID={domain}" + ("" if domain_text else " (unset: 0)")
    return [Finding("ok", f"rclpy starts with {probe.stdout.strip()} (RMW_IMPLEMENTATION="
                          f"{os.environ.get('RMW_IMPLEMENTATION', 'unset')}), {shown}")]


def check_serial(args: argparse.Namespace) -> list[Finding]:
    """With ``--port``: that port's servos and the arm's calibration. Without: every serial port the
    OS lists (and ``--scan``'s) pinged in both protocols; the one holding the arm's servos is then
    checked as ``--port`` would check it."""
    from se_robot.hardware.rig_check import find_serial_ports

    ports = find_serial_ports(args.scan)
    unmatched = [Finding("warn", f"--scan {pattern}: no such path", "ls -l " + pattern + "  (se-robot emulate --link "
                         "PATH makes one)") for pattern in args.scan if not glob.glob(pattern)]
    listed = ", ".join(f"{dev} ({desc})" for dev, desc in ports)
    if ports or args.port:  # a pty (the emulator) is not listed: with --port, an empty list is no problem
        findings = [*unmatched, Finding("ok", f"serial ports: {listed or 'none the OS lists'}")]
    else:
        return [*unmatched, Finding("fail", "no serial ports with a device behind them: the arm's USB adapter is not seen",
                        "plug in the arm's USB adapter, then: ls /dev/serial/by-id/;  " + EMULATOR_HINT
                        + "  and  se-robot doctor --scan /tmp/so101")]
    if args.port is not None:
        return findings + check_arm_port(args, args.port)
    from se_robot.arm import load_arm

    arm = load_arm(args.arm)
    ids = parse_ids(args.ids) if args.ids else sorted(set(range(SCAN_MAX_ID + 1)) | set(arm.servo_ids))
    baud = args.baud or arm.bus.baudrate
    holding = []   # ports where some servo with one of the arm's ids answers, in either protocol
    for port, _ in ports:
        found = scan_port(port, ids, baud, arm)
        if isinstance(found, Finding):
            findings.append(Finding("warn", found.what, found.fix))   # another program's port is no arm problem
            continue
        findings += listing(found, port, baud)
        if not any(found.values()):
            findings.append(Finding("ok", f"no servo answered on {port} (ids {ids[0]}-{ids[-1]}, both protocols at "
                                          f"{baud} baud): not a servo bus, or one at another baud rate"))
        if any(s.servo_id in arm.servo_ids for servos in found.values() for s in servos):
            holding.append((port, found))
    # the arm's own protocol first; servos with its ids in the other one only when there are none
    # (then judging that port names the protocol to configure)
    own = [(port, found) for port, found in holding
           if any(s.servo_id in arm.servo_ids for s in found[arm.bus.protocol])]
    holding = own or holding
    if not holding:
        findings.append(Finding("fail", f"no port has servos of {arm.name} ({arm.bus.protocol}, ids "
                                        f"{', '.join(map(str, arm.servo_ids))} at {baud} baud)",
                                "check the arm's power supply and USB cable; a bus at another baud rate: "
                                "se-robot doctor --baud 57600;  " + EMULATOR_HINT))
        return findings
    if len(holding) > 1:
        names = ", ".join(port for port, _ in holding)
        findings.append(Finding("warn", f"servos with {arm.name}'s ids answer on {len(holding)} ports ({names}): "
                                        "a leader and a follower? the calibration is checked for one port at a time",
                                f"se-robot doctor --port {holding[0][0]} --arm-id ID  (for each port and its arm id)"))
        return findings
    port, found = holding[0]
    findings.append(Finding("ok", f"{arm.name}'s servo ids answer on {port}: checking it as --port {port}"))
    servos = judge_servos(args, arm, port, ids, baud, found)
    return findings + servos + check_calibration(args, port, servos_answer=not any(f.level == "fail" for f in servos))


def check_arm_port(args: argparse.Namespace, port: str) -> list[Finding]:
    """The servos on the arm's port, and the calibration for them."""
    from se_robot.arm import load_arm

    arm = load_arm(args.arm)
    if not os.path.exists(port):
        return [Finding("fail", f"serial port {port} does not exist",
                        "ls /dev/serial/by-id/ /dev/ttyACM* /dev/ttyUSB*  and pass one with --port;  "
                        + EMULATOR_HINT)]
    if not os.access(port, os.R_OK | os.W_OK):
        return [Finding("fail", f"no permission to open {port}",
                        "sudo usermod -aG dialout $USER  (then log out and in)")]
    ids = parse_ids(args.ids) if args.ids else list(arm.servo_ids)
    baud = args.baud or arm.bus.baudrate
    found = scan_port(port, ids, baud, arm)
    if isinstance(found, Finding):
        return [found]
    servos = listing(found, port, baud) + judge_servos(args, arm, port, ids, baud, found)
    return servos + check_calibration(args, port, servos_answer=not any(f.level == "fail" for f in servos))


def scan_port(port: str, ids: list[int], baud: int, arm) -> dict | Finding:
    """The servos answering a ping on ``port`` in each protocol (the arm's first: a reply in the
    other one is then a configuration error; its ids pinged twice when silent), or a FAIL when the
    port cannot be opened."""
    from se_robot.hardware.rig_check import PROTOCOLS, scan_bus
    from se_robot.hardware.transport import BusError

    found = {}
    try:
        for protocol in sorted(PROTOCOLS, key=lambda p: p != arm.bus.protocol):
            found[protocol] = scan_bus(port, protocol, ids, baud, recheck=tuple(arm.servo_ids))
    except BusError as e:
        return Finding("fail", f"{port}: {e}", "close whatever holds the port (another se-robot, arm_node), "
                                               "or sudo usermod -aG dialout $USER")
    return found


def listing(found: dict, port: str, baud: int) -> list[Finding]:
    """One line per protocol that has servos on ``port``: each one's id, model and firmware."""
    return [Finding("ok", f"{protocol} servos on {port} at {baud} baud: {', '.join(s.describe() for s in servos)}")
            for protocol, servos in found.items() if servos]


def judge_servos(args: argparse.Namespace, arm, port: str, ids: list[int], baud: int, found: dict) -> list[Finding]:
    """Do the servos ``found`` on ``port`` make up ``arm``: its protocol, every id, its model?"""
    from se_robot.hardware.registers import get_model
    from se_robot.hardware.rig_check import PROTOCOLS

    findings = []
    expected_model = get_model(arm.bus.model)
    own = {s.servo_id: s for s in found[arm.bus.protocol]}
    other = [p for p in PROTOCOLS if p != arm.bus.protocol and found[p]]
    arm_file = f"config/arms/{arm.name}.yaml"
    if not any(found.values()):
        findings.append(Finding("fail", f"no servo answered on {port} (ids {ids[0]}-{ids[-1]}, feetech and "
                                        f"dynamixel at {baud} baud)",
                                f"check the arm's power supply and bus cable; if the baud rate differs: "
                                f"se-robot doctor --port {port} --baud 57600"))
        return findings
    if other and not own:
        findings.append(Finding("fail", f"the servos answer in {other[0]}, but {arm.name} is configured for "
                                        f"{arm.bus.protocol}", f"set bus.protocol: {other[0]} in {arm_file}"))
        return findings
    missing = [s for s in arm.servo_ids if s in ids and s not in own]
    if missing:
        findings.append(Finding("fail", f"servos {', '.join(map(str, missing))} of {arm.name} did not answer "
                                        f"(answered: {', '.join(map(str, sorted(own))) or 'none'})",
                                "check the daisy-chain cable after the last servo that answered; "
                                f"a servo with a wrong id needs its id set (ids are in {arm_file})"))
    wrong = [s for s in own.values() if s.servo_id in arm.servo_ids and s.model_number != expected_model.model_number]
    if wrong:
        findings.append(Finding("warn", f"servos {', '.join(str(s.servo_id) for s in wrong)} report model "
                                        f"{wrong[0].model_number}, {arm_file} says {expected_model.name} "
                                        f"({expected_model.model_number})",
                                f"set bus.model in {arm_file} to the servos' model"))
    if args.timing and not missing:
        findings.append(time_bus(arm, port, baud, args))
    return findings


def check_calibration(args: argparse.Namespace, port: str, servos_answer: bool) -> list[Finding]:
    """The calibration the hardware backend would use: does it exist, does it fit the arm's joints
    and servo ids, and (when ``servos_answer``) does every servo's present position lie inside its
    calibrated range? One outside means a calibration made on another arm, or a remounted horn."""
    from se_robot.arm import load_arm
    from se_robot.config import ConfigError
    from se_robot.hardware.calibration import (CalibrationError, calibrate_command, calibration_file,
                                               default_arm_id, load_calibration)
    from se_robot.hardware.registers import get_model
    from se_robot.hardware.rig_check import read_present_ticks
    from se_robot.hardware.transport import BusError

    arm = load_arm(args.arm)
    arm_id = args.arm_id or default_arm_id(arm)
    try:
        path = args.calibration or calibration_file(arm_id)
    except ValueError as e:
        return [Finding("fail", f"--arm-id: {e}", "se-robot doctor --port PORT --arm-id my_so101")]
    fix = calibrate_command(arm, arm_id, port) + (f" --out {path}" if args.calibration else "")
    if not os.path.exists(path):
        whose = f"--calibration {path}" if args.calibration else f"arm id {arm_id!r} ({path})"
        return [Finding("fail", f"no calibration for {whose}: the hardware backend refuses to start without one",
                        fix)]
    try:
        cal = load_calibration(path, arm)
    except (ConfigError, ValueError) as e:
        return [Finding("fail", f"calibration {path} does not fit {arm.name}: {e}", fix)]
    found = Finding("ok", f"calibration of arm id {arm_id!r}: {path}" if not args.calibration
                    else f"calibration {path}")
    if not servos_answer or (args.ids and not set(arm.servo_ids) <= set(parse_ids(args.ids))):
        return [found]   # the range check needs every servo of the arm
    try:
        ticks = read_present_ticks(port, arm.bus.protocol, get_model(arm.bus.model), list(arm.servo_ids),
                                   args.baud or arm.bus.baudrate)
    except BusError as e:
        return [found, Finding("fail", f"could not read the servos' present positions on {port}: {e}",
                               "check the bus cable and power; close whatever else holds the port")]
    by_joint = [ticks[j.servo_id] for j in arm.joints]
    try:
        cal.check_within_range(by_joint, arm.joint_names)
    except CalibrationError as e:
        return [found, Finding("fail", str(e), fix)]
    return [found, Finding("ok", f"every servo of {arm.name} is inside its calibrated range "
                                 f"({', '.join(f'{n} {t}' for n, t in zip(arm.joint_names, by_joint))} ticks)")]


def time_bus(arm, port: str, baud: int, args: argparse.Namespace) -> Finding:
    import numpy as np

    from se_robot.hardware.registers import get_model
    from se_robot.hardware.rig_check import time_control_ticks
    from se_robot.hardware.servo_bus import open_bus

    bus = open_bus(port, arm.bus.protocol, get_model(arm.bus.model), baud)
    try:
        ms = time_control_ticks(bus, list(arm.servo_ids), args.ticks) * 1e3
    finally:
        bus.transport.close()
    possible_hz = 1e3 / float(np.median(ms))
    text = (f"control tick on {port} (sync read + sync write of {arm.n_joints} servos, {args.ticks} ticks): "
            f"median {np.median(ms):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms -> {possible_hz:.0f} Hz possible; "
            f"retries {bus.counters.retries}, timeouts {bus.counters.timeouts}")
    if 1e3 / float(np.percentile(ms, 99)) < args.control_hz:
        return Finding("warn", text + f" (below --control-hz {args.control_hz:g})",
                       "raise the bus baud rate (servo Baud_Rate register and bus.baudrate), or a lower control_hz")
    return Finding("ok", text)


def check_camera(source: str, args: argparse.Namespace) -> list[Finding]:
    from se_robot.hardware.camera import CameraError, OpenCVCamera
    from se_robot.hardware.rig_check import percentile_ms, probe_camera, sample_frame_timing

    try:
        probe = probe_camera(source, seconds=args.seconds)
    except CameraError as e:
        fix = ("open the URL in a browser to see whether it streams" if "://" in source else
               "v4l2-ctl --list-devices  (or ls /dev/video*), then --camera with an index or path that exists; "
               "sudo usermod -aG video $USER when it is a permission problem")
        return [Finding("fail", f"camera {source}: {e}", fix)]
    findings = [Finding("ok", f"camera {source}: {probe.width}x{probe.height}, {probe.fps:.1f} fps delivered, "
                              f"newest frame {probe.frame_age_ms:.0f} ms old")]
    if probe.fps < args.control_hz:
        findings.append(Finding("warn", f"camera {source} delivers {probe.fps:.1f} fps, below --control-hz "
                                        f"{args.control_hz:g}: observations will repeat frames",
                                "a lower control_hz, a smaller camera size, or MJPG (camera config fourcc: MJPG)"))
    if args.timing:
        with OpenCVCamera(source) as cam:
            timing = sample_frame_timing(cam, args.seconds, args.control_hz)
        findings.append(Finding("ok", f"camera {source} at {args.control_hz:g} Hz: frame age p50 "
                                      f"{percentile_ms(timing['age_s'], 50):.1f} ms, p95 "
                                      f"{percentile_ms(timing['age_s'], 95):.1f} ms; wait for a fresh frame p50 "
                                      f"{percentile_ms(timing['wait_s'], 50):.1f} ms, p95 "
                                      f"{percentile_ms(timing['wait_s'], 95):.1f} ms"))
    return findings


def list_cameras(args: argparse.Namespace) -> list[Finding]:
    """Every video device with what it delivers. Nothing found is a WARN: state-only policies and
    an IP camera (--camera URL) need no device."""
    from se_robot.hardware.camera import CameraError
    from se_robot.hardware.rig_check import list_video_devices, probe_camera

    devices = list_video_devices()
    if not devices:
        return [Finding("warn", "no cameras: no /dev/video* device (an IP camera is checked with --camera URL)",
                        "plug in the USB camera, then: v4l2-ctl --list-devices;  sudo usermod -aG video $USER "
                        "when it is a permission problem;  se-robot doctor --camera http://HOST:PORT/stream.mjpg "
                        "for an IP camera or the emulator's")]
    findings = []
    for path, name in devices:
        try:
            probe = probe_camera(path, seconds=min(args.seconds, 1.0), open_timeout_s=2.0)
        except CameraError as e:
            findings.append(Finding("ok", f"camera {path} ({name}): no frames ({e}): a metadata node of the "
                                          "camera before it, or a device in use"))
            continue
        index = path.removeprefix("/dev/video")
        findings.append(Finding("ok", f"camera {path} ({name}, index {index}): {probe.width}x{probe.height}, "
                                      f"{probe.fps:.1f} fps delivered"))
    return findings


LABELS = {"ok": "ok", "warn": "WARN", "fail": "FAIL"}


def report(findings: list[Finding]) -> None:
    """Print each finding as it is known (a slow camera should not hide the lines before it)."""
    for f in findings:
        print(f"{LABELS[f.level]:<5} {f.what}", flush=True)
        if f.fix:
            print(f"      fix: {f.fix}", flush=True)


def run(args: argparse.Namespace) -> int:
    findings: list[Finding] = []
    cameras = [lambda source=source: check_camera(source, args) for source in args.camera]
    checks = [check_torch, check_mujoco, check_ros, lambda: check_serial(args), *(cameras or [lambda: list_cameras(args)])]
    for check in checks:
        found = check()
        report(found)
        findings += found
    failures = sum(f.level == "fail" for f in findings)
    warnings = sum(f.level == "warn" for f in findings)
    if failures:
        print(f"doctor: {failures} problem(s), {warnings} warning(s): the robot cannot run until the FAIL lines are fixed")
        return 1
    print(f"doctor: no problems ({warnings} warning(s))")
    return 0
