#!/usr/bin/env bash
# The default graph over the sample media on a one-machine "cluster": a PostgreSQL server
# (the Dagster instance's storage), a Redis server (Celery broker and result backend), two
# Celery workers (queues `cpu` and `gpu`), the Dagster webserver and daemon, all on
# 127.0.0.1 and free ports; `dpl run --executor celery` sends every step to the workers.
# Writes cluster_demo_output/report.json, prints its summary, and stops what it started,
# by PID, on exit (also on Ctrl-C or an error). The servers' data and logs live in a temp
# folder deleted at the end (DPL_DEMO_KEEP=1 keeps it and says where).
#   DPL_DEMO_OUTPUT   output dir (default cluster_demo_output; replaced when it holds an
#                     earlier demo's instance)
#   DPL_DEMO_MEDIA    sample media folder (default sample_media, made when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --cluster

out=$(realpath -m "${DPL_DEMO_OUTPUT:-cluster_demo_output}")
media=$(realpath -m "${DPL_DEMO_MEDIA:-sample_media}")
work=$(mktemp -d /tmp/dpl-cluster-demo.XXXXXX)
chmod 755 "$work"
pids=()
pg_pid=""

say() { echo "cluster_demo: $*" >&2; }

stop_all() {
  local status=$?
  # Newest first: the run's clients, then the workers, then the servers they use.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$pg_pid" ]; then
    kill -INT "$pg_pid" 2>/dev/null || true # PostgreSQL's fast shutdown
    for _ in $(seq 300); do kill -0 "$pg_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  if [ "${DPL_DEMO_KEEP:-0}" = 1 ]; then say "servers' data and logs kept in $work"
  else rm -rf "$work"; fi
  exit "$status"
}
trap stop_all EXIT
trap 'exit 130' INT TERM

free_port() { .venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_for() { # wait_for WHAT SECONDS COMMAND...: until COMMAND succeeds
  local what=$1 seconds=$2; shift 2
  for _ in $(seq $((seconds * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  say "$what did not come up in ${seconds} s; logs in $work"; DPL_DEMO_KEEP=1; return 1
}

# PostgreSQL: a throwaway cluster, trusted on 127.0.0.1 only. It refuses to run as root:
# then its folder belongs to, and it runs as, the postgres user Debian's package creates.
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg=()
mkdir "$work/pgdata"
if [ "$(id -u)" -eq 0 ]; then
  chown postgres "$work/pgdata"
  as_pg=(runuser -u postgres --)
fi
pg_port=$(free_port)
"${as_pg[@]}" "$pg_bin/initdb" -D "$work/pgdata" -U dagster --auth=trust >/dev/null
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pgdata" -l "$work/pgdata/postgres.log" -w start \
  -o "-p $pg_port -k $work/pgdata -c listen_addresses=127.0.0.1" >/dev/null
pg_pid=$(head -1 "$work/pgdata/postmaster.pid")
"${as_pg[@]}" "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U dagster dagster
export DAGSTER_PG_HOST=127.0.0.1 DAGSTER_PG_PORT=$pg_port DAGSTER_PG_DB=dagster
export DAGSTER_PG_USERNAME=dagster DAGSTER_PG_PASSWORD=""
say "PostgreSQL on 127.0.0.1:$pg_port (pid $pg_pid)"

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
  >"$work/redis.log" 2>&1 &
pids+=($!)
wait_for "Redis" 30 .venv/bin/python -c "import socket; socket.create_connection(('127.0.0.1', $redis_port), 1)"
export DPL_CELERY_BROKER="redis://127.0.0.1:$redis_port/0"
export DPL_CELERY_BACKEND="redis://127.0.0.1:$redis_port/1"
say "Redis on 127.0.0.1:$redis_port (pid ${pids[-1]})"

# The instance (Postgres) in the output dir, and the sample media.
if [ -d "$out/.dagster" ]; then rm -rf "$out"; fi
.venv/bin/dpl init-instance --output_dir "$out" --postgres
[ -f "$media/inputs.json" ] || .venv/bin/dpl samples "$media"
export DAGSTER_HOME="$out/.dagster" DPL_OUTPUT_DIR="$out" DPL_EXECUTOR=celery

# Two workers, one pool process each: `cpu` steps and `gpu` steps (wav2vec, EMOCA, ...;
# on this machine they run on the CPU). On real machines: one per host, same variables.
for queue in cpu gpu; do
  .venv/bin/celery -A dpl_assets.celery_worker worker -Q "$queue" -n "$queue@%h" \
    --concurrency 1 --loglevel INFO --without-gossip --without-mingle \
    >"$work/worker-$queue.log" 2>&1 &
  pids+=($!)
done
for queue in cpu gpu; do wait_for "worker $queue" 120 grep -q " ready." "$work/worker-$queue.log"; done
say "Celery workers cpu and gpu ready"

web_port=$(free_port)
PYTHONWARNINGS="ignore" .venv/bin/dagster-webserver -m dpl_assets -h 127.0.0.1 -p "$web_port" \
  >"$work/webserver.log" 2>&1 &
pids+=($!)
PYTHONWARNINGS="ignore" .venv/bin/dagster-daemon run -m dpl_assets >"$work/daemon.log" 2>&1 &
pids+=($!)
wait_for "webserver" 180 .venv/bin/python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$web_port/server_info', timeout=2)"
say "Dagster webserver on http://127.0.0.1:$web_port (runs show there while this runs)"

status=0
.venv/bin/dpl run --graph dpl_assets/configs/default.json --inputs "$media/inputs.json" \
  --output_dir "$out" --executor celery || status=$?
.venv/bin/python - "$out/report.json" <<'EOF'
import json
import sys

report = json.load(open(sys.argv[1], encoding="utf-8"))
print("cluster_demo: report", sys.argv[1], json.dumps(report["summary"]))
for video in report["videos"]:
    print(f"  {video['video_id']}: {video['status']}" + (f" ({video['reason']})" if video.get("reason") else ""))
EOF
exit "$status"
