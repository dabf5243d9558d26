#!/usr/bin/env bash
# Load test of the monitoring-link endpoints, with durable acceptance, against nginx serving
# `empty_gif` with an access log — same machine, same 2 cores, loopback only, bounded in time.
#
#   benches/load_collect.sh            # DURATION=20 CONNS=64 by default
#
# For each server: peak requests/s (wrk, CONNS connections), then p99 latency at 50 % of our
# peak (wrk paced by a Lua `delay()`), the daemon's peak RSS, and the freshness of every hit
# (receive → its `ad_events` batch committed). Installs wrk and nginx-light from Debian if
# missing. Prints a Markdown table for the README.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${BACKFLOW_CACHE:-$HOME/.cache/backflow}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
DURATION=${DURATION:-20}
CONNS=${CONNS:-64}
NGINX_PORT=18090
PUBLIC_PORT=18091
ADMIN_PORT=18092

log() { printf '==> %s\n' "$*" >&2; }

if ! command -v wrk >/dev/null || ! [ -x /usr/sbin/nginx ]; then
  log "installing wrk and nginx-light"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
fi
log "building backflow (release)"
(cd "$ROOT" && cargo build --release --quiet --bin backflow)
BIN=$CARGO_TARGET_DIR/release/backflow
PY=$CACHE/tools/py/bin/python   # DuckDB for the freshness figure (`scripts/dev tools` installs it)
[ -x "$PY" ] || "$ROOT/scripts/dev" tools

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# nginx: the reference every pixel server is measured against.
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log $WORK/nginx/access.log;
  client_body_temp_path $WORK/nginx;
  proxy_temp_path $WORK/nginx;
  fastcgi_temp_path $WORK/nginx;
  uwsgi_temp_path $WORK/nginx;
  scgi_temp_path $WORK/nginx;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { empty_gif; }
  }
}
NGINX
/usr/sbin/nginx -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
PIDS+=($!)

# backflow: one activity on a redirect/GIF media, its impression and click links.
mkdir -p "$WORK/bf"
cp -r "$ROOT/pipelines" "$ROOT/schemas" "$WORK/bf/"
cd "$WORK/bf"
export BACKFLOW__PUBLIC__LISTEN=127.0.0.1:$PUBLIC_PORT BACKFLOW__ADMIN__LISTEN=127.0.0.1:$ADMIN_PORT
export BACKFLOW__PUBLIC__BASE_URL=http://127.0.0.1:$PUBLIC_PORT BACKFLOW__LOG__LEVEL=warn
ACTIVITY=$("$BIN" activity create --workspace bench --name load --group g --channel huawei \
  --format feed --landing https://example.com/landing --json)
IMP=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["impression_url"])' "$ACTIVITY")
CLK=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["click_url"])' "$ACTIVITY")
"$BIN" serve >/dev/null 2>"$WORK/bf/serve.log" &
BF_PID=$!
PIDS+=($BF_PID)
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$ADMIN_PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

# Peak RSS of the daemon, sampled every 0.2 s.
RSS_FILE=$WORK/rss
( peak=0; while kill -0 "$BF_PID" 2>/dev/null; do
    r=$(ps -o rss= -p "$BF_PID" 2>/dev/null | tr -d ' '); [ -n "$r" ] && [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" >"$RSS_FILE"
    sleep 0.2; done ) &
PIDS+=($!)

cat >"$WORK/pace.lua" <<'LUA'
-- Spreads a target rate over all connections: each waits conns/rate seconds between requests.
local rate = tonumber(os.getenv("RATE"))
local conns = tonumber(os.getenv("CONNS"))
function delay() return math.floor(conns * 1000 / rate) end
LUA

run() { # url [lua]
  local extra=()
  [ $# -gt 1 ] && extra=(-s "$2")
  wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "${extra[@]}" "$1" 2>&1
}
rps() { awk '/Requests\/sec/ {print int($2)}'; }
p99() { awk '$1=="99%" {print $2}'; }

results=()
for target in "nginx empty_gif|http://127.0.0.1:$NGINX_PORT/i/x?a=1" "backflow /i (GIF)|$IMP" "backflow /c (302)|$CLK"; do
  name=${target%%|*}; url=${target#*|}
  log "$name: peak for ${DURATION}s"
  out=$(run "$url"); peak=$(echo "$out" | rps); peak_p99=$(echo "$out" | p99)
  half=$((peak / 2))
  log "$name: paced at $half req/s"
  out=$(RATE=$half CONNS=$CONNS run "$url" "$WORK/pace.lua"); half_rps=$(echo "$out" | rps); half_p99=$(echo "$out" | p99)
  results+=("| $name | $peak | $peak_p99 | $half_rps | $half_p99 |")
done

records=$(find "$WORK/bf/data/journal" -name '*.seg' -printf '%s\n' | awk '{s+=$1} END {print s+0}')

# Freshness (hit → committed Parquet) at the default settings: once the lake stops growing, each
# row's batch commit time (catalog) minus its received_at, over every hit of the runs above.
log "waiting for ad_events to land every accepted hit"
FRESH=$("$PY" - "$WORK/bf/data" 2>&1 <<'PYEOF' || true
import duckdb, sqlite3, sys, time, re, datetime as dt
data = sys.argv[1]
glob = f"{data}/lake/ad_events/**/*.parquet"
def count():
    try:
        return duckdb.sql(f"select count(*) from read_parquet('{glob}')").fetchone()[0]
    except duckdb.Error:  # a file being renamed into place, or none yet
        return -1
last, stable = -1, 0
for _ in range(600):  # at most 10 minutes
    n = count()
    stable = stable + 1 if n == last else 0
    last = n
    if stable >= 25:   # unchanged for 25 s: the pipeline has caught up
        break
    time.sleep(1)
commits = {seq: dt.datetime.fromisoformat(at.replace("Z", "+00:00")) for seq, at in sqlite3.connect(
    f"{data}/catalog.sqlite").execute(
    "select seq, committed_at from batches where pipeline = 'ad_events' and state = 'committed'")}
lat = []
for name, received in duckdb.sql(
        f"select filename, received_at from read_parquet('{glob}', filename = true)").fetchall():
    seq = int(re.search(r"part-(\d{12})-", name).group(1))
    if received.tzinfo is None:
        received = received.replace(tzinfo=dt.timezone.utc)
    lat.append((commits[seq] - received).total_seconds())
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(f"{len(lat)} hits landed; hit → committed Parquet: p50 {q(0.5):.1f} s, p95 {q(0.95):.1f} s, max {lat[-1]:.1f} s")
PYEOF
)
echo
echo "wrk -t2 -c$CONNS -d${DURATION}s on 127.0.0.1, $(nproc) cores; backflow answers only after fsync of the journal"
echo
echo "| server | peak req/s | p99 at peak | paced req/s (50 % of peak) | p99 paced |"
echo "|---|---|---|---|---|"
printf '%s\n' "${results[@]}"
echo
echo "backflow peak RSS: $(( $(cat "$RSS_FILE" 2>/dev/null || echo 0) / 1024 )) MiB; journal bytes written: $records"
echo "freshness (ad_events at its defaults: every 10 s, ≤ 20 000 records a batch): $FRESH"
