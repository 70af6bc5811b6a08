#!/usr/bin/env bash
# Set up a machine: system packages, a virtualenv in .venv, the project and its tools.
# Installs only what is missing: a second run installs nothing and prints one line.
#   scripts/setup.sh           what the pipeline and the demo need
#   scripts/setup.sh --cluster also the PostgreSQL and Redis servers that the cluster tests
#                              and scripts/cluster_demo.sh start
#   scripts/setup.sh --tests   also Chromium and its driver for the web UI test, real speech
#                              for the speech and av_sync tests (and --cluster)
#   scripts/setup.sh --bench   also what benchmarks/end_to_end.py needs (its clips' real face
#                              photos and speech, sox)
set -euo pipefail
cd "$(dirname "$0")/.."

tests=0
bench=0
cluster=0
for arg in "$@"; do
  case "$arg" in
    --tests) tests=1; cluster=1 ;;
    --cluster) cluster=1 ;;
    --bench) bench=1 ;;
    *) echo "usage: scripts/setup.sh [--tests] [--cluster] [--bench]" >&2; exit 2 ;;
  esac
done
did=()

# ffmpeg/ffprobe are the tests' independent reference (the pipeline itself runs the ffmpeg
# binary bundled by imageio-ffmpeg); espeak-ng speaks the sample and test clips.
# OpenCV (brought by mediapipe) loads libGL and glib at import. Chromium and its driver run
# the web UI test (dpl_assets_tests/test_web_ui.py) in a headless browser: tests only.
packages=(ffmpeg espeak-ng libgl1 libglib2.0-0)
tools=(ffmpeg ffprobe espeak-ng)
missing=()
if [ "$tests" -eq 1 ]; then
  packages+=(chromium chromium-driver)
  tools+=(chromium chromedriver)
  # Real speech (LibriVox readings) for the speech activity and av_sync tests.
  packages+=(pocketsphinx-testdata)
  [ -d /usr/share/pocketsphinx/test/data/librivox ] || missing+=(pocketsphinx-testdata)
fi
if [ "$cluster" -eq 1 ]; then
  # PostgreSQL (initdb, pg_ctl of the newest installed major) and redis-server: the
  # cluster tests and scripts/cluster_demo.sh start throwaway servers of their own.
  packages+=(postgresql redis-server)
  tools+=(redis-server)
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(initdb)
fi
if [ "$bench" -eq 1 ]; then
  packages+=(sox python3-skimage python-matplotlib-data pocketsphinx-testdata)
  tools+=(sox)
  for data in /usr/lib/python3/dist-packages/skimage/data/astronaut.png \
    /usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg \
    /usr/share/pocketsphinx/test/data/librivox; do
    [ -e "$data" ] || missing+=("$data")
  done
fi
for tool in "${tools[@]}"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
# grep reads all of ldconfig's output: with -q it would stop early, ldconfig would die of
# SIGPIPE, and pipefail would count a present library as missing.
for lib in libGL.so.1 libglib-2.0.so.0; do ldconfig -p | grep "$lib" >/dev/null || missing+=("$lib"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages (missing: ${missing[*]})"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get -o Acquire::Retries=5 update -q
  $sudo apt-get -o Acquire::Retries=5 install -y -q --no-install-recommends "${packages[@]}"
  did+=("system packages")
fi

# Downloads from package registries break off now and then (CI once failed on a 79 MB wheel
# cut at 54 MB five times): pip resumes a download up to 20 times, and a failed install is
# run again twice more (pip keeps what it downloaded in its cache).
export PIP_RETRIES=${PIP_RETRIES:-10} PIP_RESUME_RETRIES=${PIP_RESUME_RETRIES:-20}
pip_install() {
  local attempt
  for attempt in 1 2 3; do
    .venv/bin/python -m pip install "$@" && return 0
    [ "$attempt" -lt 3 ] && echo "setup: pip install failed (attempt $attempt of 3); again in 15 s" >&2 && sleep 15
  done
  return 1
}

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $python"
  "$python" -m venv .venv
  pip_install -q --upgrade pip
  did+=(.venv)
fi

# One Python start answers every question about the venv: which of torch, face_alignment,
# silero_vad, scenedetect and the project need installing. The project counts as installed
# when its distribution is an editable install of this checkout made from the current
# pyproject.toml and setup.cfg (their hash is kept in .venv/.dpl-setup-stamp after a
# successful install).
# Isolated (-I): a stale dpl_assets.egg-info in the checkout must not count as installed.
extras="dev,face-alignment,postgres,celery,k8s"
stamp=.venv/.dpl-setup-stamp
digest=$(cat pyproject.toml setup.cfg | sha256sum | cut -d' ' -f1)
need=$(.venv/bin/python -I - "$stamp" "$digest:$extras" <<'EOF'
import importlib.metadata as md
import importlib.util
import json
import pathlib
import sys

stamp, expected = pathlib.Path(sys.argv[1]), sys.argv[2]
modules = ("torch", "face_alignment", "silero_vad", "scenedetect")
need = [name for name in modules if importlib.util.find_spec(name) is None]
try:
    dist = md.distribution("dpl-assets")
    url = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
    current = url == pathlib.Path.cwd().as_uri() and stamp.is_file()
    if current:  # same pyproject/setup.cfg, installed with at least these extras
        have_digest, _, have_extras = stamp.read_text().strip().partition(":")
        want_digest, _, want_extras = expected.partition(":")
        current = have_digest == want_digest and set(want_extras.split(",")) <= set(
            have_extras.split(",")
        )
except md.PackageNotFoundError:
    current = False
if not current:
    need.append("project")
print(" ".join(need))
EOF
)

# torch first, pinned: this version's CPU wheel is on this machine's disk, and an unpinned
# torch requirement would pull a multi-GB CUDA build. GPU users: install your CUDA torch
# before running this script; the project accepts any torch>=2.1 already installed.
if [[ " $need " == *" torch "* ]]; then
  echo "setup: installing torch 2.13.0 (CPU)"
  pip_install -q "torch==2.13.0"
  did+=(torch)
fi
if [[ " $need " == *" project "* ]]; then
  echo "setup: installing the project (.[${extras}], editable)"
  rm -f "$stamp"
  # setuptools says "Editable installation. Please be careful with folders ... same name as
  # your package" on every editable install: information, not a problem; keep it quiet.
  PYTHONWARNINGS="ignore:Editable installation" pip_install -q -e ".[${extras}]"
  echo "$digest:$extras" >"$stamp"
  did+=(project)
fi
# SpeechNode's and SceneCutNode's libraries, after torch and the project (which brings their
# other requirements); --no-deps: see pyproject (scenedetect would pull opencv-python).
if [[ " $need " == *" silero_vad "* ]]; then
  echo "setup: installing silero-vad 6.2.3 (--no-deps; its weights are in the wheel)"
  pip_install -q --no-deps "silero-vad==6.2.3"
  did+=(silero-vad)
fi
if [[ " $need " == *" scenedetect "* ]]; then
  echo "setup: installing scenedetect 0.7.2 (--no-deps)"
  pip_install -q --no-deps "scenedetect==0.7.2"
  did+=(scenedetect)
fi
# The optional face-alignment backend (tested on stand-in weights); --no-deps: see pyproject.
if [[ " $need " == *" face_alignment "* ]]; then
  echo "setup: installing face-alignment 1.5.0 (--no-deps)"
  pip_install -q --no-deps "face-alignment==1.5.0"
  did+=(face-alignment)
fi
# The project's bytecode, as pip writes it for an installed wheel (an editable install does
# not): where PYTHONDONTWRITEBYTECODE is set (this machine, many Docker images) every process
# would otherwise compile dpl_assets from source, ~0.3 s of CPU each, and dpl run starts
# several. Only stale files are rewritten; Python checks each against its source.
.venv/bin/python -m compileall -q dpl_assets || echo "setup: compiling dpl_assets' bytecode failed (above)" >&2
if [ ${#did[@]} -eq 0 ]; then
  echo "setup: ready (.venv), nothing to install"
else
  echo "setup: ready (.venv), installed: ${did[*]}"
fi
