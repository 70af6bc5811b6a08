#!/usr/bin/env bash
# Start and stop `dagster dev` (UI, daemon, code server) on a dpl output dir, by PID.
#
#   bash scripts/dagster_ui.sh start OUTPUT_DIR [PORT]   # UI on http://127.0.0.1:PORT (3000)
#   bash scripts/dagster_ui.sh stop OUTPUT_DIR
#
# Why a script: a program started with `&` from a script (or from anything that ignores
# SIGINT) inherits "SIGINT ignored"; `dagster dev` then passes SIGINT on to its webserver,
# daemon and code servers, which ignore it, and it keeps running after SIGTERM (measured:
# all five processes still up 45 s after SIGTERM to the group). This script starts
# `dagster dev` with SIGINT back at its default, as the leader of a process group of its
# own, writes that PID to OUTPUT_DIR/.dagster/dagster-dev.pid, and `stop` sends SIGTERM to
# that group, waits for every process of it to end, and sends SIGKILL to what is left
# after DPL_UI_STOP_TIMEOUT seconds (20).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command="${1:-}"
output_dir="${2:-}"
if [[ -z "$command" || -z "$output_dir" ]]; then
    echo "usage: $0 start OUTPUT_DIR [PORT] | stop OUTPUT_DIR" >&2
    exit 2
fi
output_dir="$(mkdir -p "$output_dir" && cd "$output_dir" && pwd)"
home="${DAGSTER_HOME:-$output_dir/.dagster}"
pid_file="$home/dagster-dev.pid"

group_alive() {  # any process left in group $1?
    pgrep -g "$1" >/dev/null 2>&1
}

case "$command" in
start)
    port="${3:-3000}"
    if [[ -f "$pid_file" ]] && group_alive "$(cat "$pid_file")"; then
        echo "dagster dev already runs for $output_dir (process group $(cat "$pid_file"))" >&2
        exit 1
    fi
    mkdir -p "$home"
    # The instance (and its databases) exists before dagster dev starts: dpl creates it
    # under a lock, so this never races another dpl process.
    "$here/.venv/bin/python" -c \
        'import sys; from pathlib import Path; from dpl_assets.cli import _open_instance; _open_instance(Path(sys.argv[1])).dispose()' \
        "$output_dir"
    cd "$here"
    DAGSTER_HOME="$home" DPL_OUTPUT_DIR="$output_dir" "$here/.venv/bin/python" -c '
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)  # not inherited as ignored
os.setsid()  # its own session and process group, led by this PID
os.execv(sys.argv[1], sys.argv[1:])
' "$here/.venv/bin/dagster" dev -w workspace.yaml -h 127.0.0.1 -p "$port" \
        </dev/null >>"$home/dagster-dev.log" 2>&1 &
    echo $! >"$pid_file"
    echo "dagster dev: process group $! (log: $home/dagster-dev.log), http://127.0.0.1:$port"
    ;;
stop)
    if [[ ! -f "$pid_file" ]]; then
        echo "no $pid_file: nothing started by this script" >&2
        exit 0
    fi
    group="$(cat "$pid_file")"
    kill -TERM -- "-$group" 2>/dev/null || true
    deadline=$((SECONDS + ${DPL_UI_STOP_TIMEOUT:-20}))
    while group_alive "$group" && ((SECONDS < deadline)); do
        sleep 0.2
    done
    if group_alive "$group"; then
        echo "dagster dev (group $group) still running; SIGKILL" >&2
        kill -KILL -- "-$group" 2>/dev/null || true
    fi
    rm -f "$pid_file"
    echo "dagster dev stopped"
    ;;
*)
    echo "usage: $0 start OUTPUT_DIR [PORT] | stop OUTPUT_DIR" >&2
    exit 2
    ;;
esac
