#!/usr/bin/env bash
# Installs se_robot and everything its tests and benchmarks need into ./.venv (idempotent).
#   VENV=path    where the virtual environment goes (default .venv)
#   EXTRAS=...   pip extras (default ros,test,bench,display; use "display" or "" on a robot that has ROS 2 installed)
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
