#!/usr/bin/env bash
# Set up (if needed), make sample media offline, and run the default pipeline on it.
# Outputs land in demo_output/ (report: demo_output/report.json).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -f sample_media/inputs.json ] || .venv/bin/dpl samples sample_media
.venv/bin/dpl run --graph dpl_assets/configs/default.json \
  --inputs sample_media/inputs.json --output_dir demo_output
