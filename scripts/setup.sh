#!/usr/bin/env bash
# Set up a fresh machine: system packages, a virtualenv in .venv, the project and its tools.
# Idempotent: re-running installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# ffmpeg/ffprobe are the tests' independent reference (the pipeline itself runs the ffmpeg
# binary bundled by imageio-ffmpeg); espeak-ng speaks the sample and test clips.
# OpenCV (brought by mediapipe) loads libGL and glib at import. Chromium and its driver run
# the web UI test (dpl_assets_tests/test_web_ui.py) in a headless browser.
missing=()
for tool in ffmpeg ffprobe espeak-ng chromium chromedriver; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
for lib in libGL.so.1 libglib-2.0.so.0; do ldconfig -p | grep -q "$lib" || missing+=("$lib"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends ffmpeg espeak-ng libgl1 libglib2.0-0 \
    chromium chromium-driver
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: this version's CPU wheel is on this machine's disk, and an unpinned
# torch requirement would pull a multi-GB CUDA build. GPU users: install your CUDA torch
# before running this script; the project accepts any torch>=2.1 already installed.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[dev,face-alignment]"
# The optional face-alignment backend (tested on stand-in weights); --no-deps: see pyproject.
.venv/bin/python -c "import face_alignment" 2>/dev/null \
  || .venv/bin/pip install -q --no-deps "face-alignment==1.5.0"
echo "setup: ready (.venv)"
