#!/usr/bin/env bash
# Install sahmr and everything it needs, system packages included, into the current Python.
#
#   bash tools/install.sh          # CPU route (default on machines without an NVIDIA GPU)
#   bash tools/install.sh --dev    # ... plus the test and lint tools
#   bash tools/install.sh --gpu    # GPU route: CUDA build of torch from PyPI
#   bash tools/install.sh --no-detector  # without the person/keypoint detector (mediapipe)
#
# CPU route: torch is installed first and pinned, so that nothing later pulls the
# multi-gigabyte CUDA build. On the team's Debian machines `pip install torch==2.13.0` finds a
# local CPU wheel; elsewhere the script falls back to PyTorch's CPU index. An existing torch
# (any build, >= 2.1) is kept as it is. Running the script again is quick: it only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
dev=0
detector=1
route=auto
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --gpu) route=gpu ;;
    --cpu) route=cpu ;;
    --no-detector) detector=0 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option '$arg' (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$route" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then route=gpu; else route=cpu; fi
fi

# System libraries the wheels load: open3d links libGL/libEGL/libX11 and libusb-1.0.
debs=(libusb-1.0-0 libgl1 libegl1 libx11-6 libgomp1)
if command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for d in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q "install ok installed" || missing+=("$d")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "install.sh: installing Debian packages: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  echo "install.sh: not a Debian system; make sure ${debs[*]} (or their equivalents) are installed" >&2
fi

pip=("$PY" -m pip install -q --disable-pip-version-check)
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  if [ "$route" = gpu ]; then
    echo "install.sh: installing torch (CUDA build)"
    "${pip[@]}" torch
  else
    echo "install.sh: installing torch (CPU build)"
    "${pip[@]}" "torch==2.13.0" 2>/dev/null ||
      "${pip[@]}" torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
torch_version=$("$PY" -c "import torch; print(torch.__version__)")
echo "install.sh: torch $torch_version ($route route)"

# Constrain torch to the installed build so that no dependency replaces it.
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==${torch_version}" > "$constraints"
target="."
[ "$dev" -eq 1 ] && target=".[dev]"
"${pip[@]}" -c "$constraints" -e "$target"
echo "install.sh: sahmr installed"

# Person and keypoint detector (sahmr.detect): mediapipe, pinned with its reason in
# sahmr/detect/runtime.py (MEDIAPIPE_VERSION: the last wheel shipping the pose Full model and
# the legacy solutions API). It goes into a private folder with --no-deps, never into this
# environment: its generated code needs protobuf<5 (tensorboard needs >=6.31), and its declared
# jax + jaxlib (~380 MB installed), opencv-contrib (~305 MB) and sounddevice are unused by the
# pose solution (~240 MB instead, mostly OpenCV headless). Measured in docs/detection.md.
if [ "$detector" -eq 1 ]; then
  mp_site=$("$PY" -c "from sahmr.detect.runtime import default_site; print(default_site())")
  if "$PY" -c "import sys; from sahmr.detect.runtime import detector_available as a; sys.exit(0 if a() else 1)"; then
    echo "install.sh: person detector present ($mp_site)"
  elif "$PY" -c "import sys; sys.exit(0 if (3, 8) <= sys.version_info[:2] <= (3, 12) else 1)"; then
    mapfile -t mp_reqs < <("$PY" -c "from sahmr.detect.runtime import DETECTOR_REQUIREMENTS as r; print(*r, sep='\n')")
    echo "install.sh: installing the person detector (${mp_reqs[0]}) into $mp_site"
    rm -rf "$mp_site.partial"  # staged, so that a failed download leaves no half folder
    if "${pip[@]}" --no-deps --target "$mp_site.partial" "${mp_reqs[@]}"; then
      rm -rf "$mp_site" && mv "$mp_site.partial" "$mp_site"
    else
      rm -rf "$mp_site.partial"
      echo "install.sh: the person detector could not be installed: the demo needs --bbox" >&2
    fi
  else
    echo "install.sh: no mediapipe wheel for this Python: the demo needs --bbox" >&2
  fi
fi
