#!/usr/bin/env bash
# Installs se_robot and everything its tests and benchmarks need into ./.venv (idempotent).
#   VENV=path    where the virtual environment goes (default .venv)
#   EXTRAS=...   pip extras (default ros,test,bench,display; use "display" or "" on a robot that has ROS 2 installed)
#   LEROBOT_VENV=path  also build a venv with LeRobot there (default: none; CI uses .venv-lerobot)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS-ros,test,bench,display}
PY=${PYTHON:-python3}

# Headless MuJoCo rendering needs EGL (Mesa's llvmpipe on a machine without a GPU).
if ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1'; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq libegl1 libgl1-mesa-dri libgles2 >/dev/null
  else
    echo "warning: libEGL not found; install libegl1 and libgl1-mesa-dri for MUJOCO_GL=egl" >&2
  fi
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# The CPU build of torch first: an open range would pull a multi-GB CUDA build. On a GPU machine,
# install the torch build for your CUDA first (https://pytorch.org) and this line keeps it.
"$VENV/bin/python" -c 'import torch' 2>/dev/null || "$VENV/bin/python" -m pip install -q torch==2.13.0
spec="."
[ -n "$EXTRAS" ] && spec=".[${EXTRAS}]"
"$VENV/bin/python" -m pip install -q -e "$spec"
echo "se_robot installed in $VENV"

# LeRobot interop (se-robot dataset export --format lerobot, se-robot dataset import) runs the lerobot
# package itself, whose newest release on Python 3.11 (0.4.4) pins torch<2.11: it cannot share the
# venv above (torch 2.13), so it gets its own. se_robot finds .venv-lerobot in this checkout, or the
# Python named by SE_ROBOT_LEROBOT_PYTHON. 8 GB (torch 2.10 with its CUDA libraries), 2.5 CPU-minutes
# to install (4.4 minutes wall here, two cores shared, pip cache warm).
LEROBOT_VENV=${LEROBOT_VENV-}
if [ -n "$LEROBOT_VENV" ]; then
  [ -x "$LEROBOT_VENV/bin/python" ] || "$PY" -m venv "$LEROBOT_VENV"
  "$LEROBOT_VENV/bin/python" -c 'import lerobot' 2>/dev/null || {
    "$LEROBOT_VENV/bin/python" -m pip install -q --upgrade pip
    "$LEROBOT_VENV/bin/python" -m pip install -q --no-compile "lerobot[feetech]==0.4.4"
  }
  echo "lerobot installed in $LEROBOT_VENV"
fi
