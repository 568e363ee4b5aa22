#!/usr/bin/env bash
# Create or reuse the project venv at .venv/ and install what the package needs on a machine without ROS.
#
#   scripts/setup_venv.sh [EXTRAS]      EXTRAS: comma list of setup.py extras (default: core,ros,sim,onnx)
#
# - ROS 2 comes from the PyPI wheels (extra "ros"); robots that have ROS installed use colcon instead.
# - torch: installs torch==2.13.0 (the local CPU build on development machines) only when no torch is
#   importable; set DREAM_VLA_TORCH to another spec, or to "skip" to never touch torch.
# - Headless rendering for the simulated arm needs Mesa EGL; it is installed with apt-get when missing and
#   this script may (root, or passwordless sudo), else it says what to install.
# - With the "interfaces" extra (make venv-test) and ../shared/ros2_python present: the ROS 2 launch/CLI
#   tooling (`ros2 launch`, `ros2 topic`, ...) from there, and the package's share directory in the venv
#   (test/ros_tooling.py); robots and machines with ROS installed have their own.
# - wordllama (the pretrained instruction encoder's files) is installed with --no-deps: it declares numpy>=2,
#   which must not replace a robot's numpy 1.x (the package reads its two files, never imports it).
# - A second run with the same inputs is a no-op (a stamp file records what was installed).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-core,ros,sim,onnx}"
VENV=.venv
TORCH_SPEC="${DREAM_VLA_TORCH:-torch==2.13.0}"

say() { printf '[setup] %s\n' "$*"; }

stamp_file="$VENV/.installed-$(echo "$EXTRAS" | tr ',' '-')"
stamp_value="$(cat setup.py scripts/setup_venv.sh test/ros_tooling.py test/control_msgs_build.py | sha256sum |
  cut -c1-16)-$TORCH_SPEC-$([ -d ../shared/ros2_python ] && echo ros2-tooling)"
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp_value" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi

PYTHON="${PYTHON:-python3}"
"$PYTHON" - <<'PY' || { echo "[setup] Python >= 3.10 is required (found $("$PYTHON" --version 2>&1))"; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY

if [[ ",$EXTRAS," == *",sim,"* ]] && ! ldconfig -p 2>/dev/null | grep -q 'libEGL_mesa.so.0'; then
  pkgs="libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6"
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    say "installing Mesa for headless rendering: $pkgs"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $pkgs >/dev/null ||
      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $pkgs >/dev/null; }
  elif command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then
    say "installing Mesa for headless rendering: $pkgs"
    sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $pkgs >/dev/null
  else
    say "WARNING: Mesa EGL not found; the simulated arm cannot render. Install: sudo apt-get install $pkgs"
  fi
fi

[ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
if [ "$TORCH_SPEC" != skip ] && ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  say "installing $TORCH_SPEC"
  "${PIP[@]}" "$TORCH_SPEC"
fi
say "installing dream_vla_ros[$EXTRAS] (editable)"
"${PIP[@]}" -e ".[$EXTRAS]"
if [[ ",$EXTRAS," == *",core,"* ]]; then  # the instruction encoder's files only: its numpy>=2 pin stays out
  say "installing wordllama==0.4.0.post1 (no dependencies)"
  "${PIP[@]}" --no-deps wordllama==0.4.0.post1
fi
if [[ ",$EXTRAS," == *",interfaces,"* ]] && [ -d ../shared/ros2_python ]; then
  say "installing the ROS 2 launch/CLI tooling from ../shared/ros2_python"
  "$VENV/bin/python" test/ros_tooling.py ||
    say "WARNING: the ROS 2 tooling was not installed; the launch/CLI tests will skip with the reason"
fi
echo "$stamp_value" >"$stamp_file"
say "ready: $VENV"
