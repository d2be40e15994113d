#!/usr/bin/env bash
# Switchyard benchmark: the same non-streaming chat workload direct to a fixed-response upstream
# and through the gateway, on loopback; prints RPS, p50/p99 and the latency the gateway adds.
#
#   bench/run.sh [duration_seconds=15] [connections=16]
#
# Upstream: nginx answering every POST with tests/fixtures/openai/chat.json (one worker).
# Beside the gateway, the floor of one proxy hop: nginx as a plain reverse proxy (one worker,
# keep-alive upstream connections, CPU 0 like the gateway), measured in the same run.
# Load: wrk, one thread. Pinning: gateway on CPU 0; wrk and nginx on CPU 1 (in both runs), so
# the gateway gets one core and the load generator the other (UPSTREAM_CPU=0 puts nginx beside
# the gateway instead, so direct and proxied requests cross between CPUs equally often).
# The semantic cache is off (CACHE=true turns it on: the repeated body then hits it); the
# request log is on (LOGS=false turns it off). GOV=embedded or GOV=redis turns governance on: one
# virtual key (a budget and rate limits that never bind) that every request carries; with redis, a
# redis-server on a unix socket (CPU 1) holds the counters. Data goes to a temporary directory.
# Everything binds 127.0.0.1. PROFILE=1 also records where the gateway's CPU goes (perf;
# PROFILE=dwarf with DWARF unwinding, which sees through libc and the allocator). PERF_EVENT and
# PERF_RATE record another event instead of the CPU clock, e.g. the sizes of the gateway's copies:
# `perf probe -x /usr/lib/x86_64-linux-gnu/libc.so.6 --add 'mcpy=__memmove_avx512_unaligned_erms
# len=%dx:u64'`, then `PROFILE=dwarf PERF_EVENT=probe_libc:mcpy PERF_RATE="-c 1" bench/run.sh 3 16`
# (every call is recorded and the gateway runs about 100x slower, so per-poll copies are inflated).
# ENDPOINT=responses sends the same conversation to the gateway's /v1/responses instead (the
# upstream still answers chat completions), to measure what the Responses translation adds;
# STORE=true also keeps every response (as clients do by default). PLUGINS=pii-redact (or
# prompt-guard) runs that compiled-in plugin on every request; PLUGINS=tag-and-route runs the
# WebAssembly sample (build it first: cd plugins/tag-and-route && npm ci && npm run build) with a
# rule that rewrites every request, so both of its hooks do their full JSON round trip.
# STATE=postgres keeps the runtime configuration and the request log in a throwaway PostgreSQL
# cluster (initdb as the `postgres` user, a unix socket, CPU 1) instead of the embedded store.
# CACHE=exact turns the cache on in exact mode (no embedding model). UNIQUE=1 makes every request
# body different (a counter in the user message), so a cache misses and stores each answer.
# MCP=1 registers the calculator MCP server (stdio, built first) and, with governance, lets the
# key use its tools: they are offered to the model on every request and never called.
# STREAM=1 asks for a streamed answer ("stream": true) and the upstream answers with the recorded
# event stream tests/fixtures/openai/chat_stream.sse, for all three targets.
# MEMORY=1 samples the gateway's resident memory every 30 s of its measured run and prints the
# curve (MEMORY=1 REF_DURATION=10 FULL=1 bench/run.sh 600 16 gives the ten-minute curve).
# REF_DURATION sets the seconds of the direct and nginx runs alone (default: the same duration).
# BIN_B=path starts a second gateway binary beside the first (same config, its own port and data
# directory) and, after the usual runs, measures the two in alternating runs (A B, then B A),
# ROUNDS times (default 3), so two builds are compared on the same machine state, upstream and load; it prints
# each round and the medians (`BIN=/tmp/before BIN_B=/tmp/after FULL=1 bench/run.sh 10 16`).
# NGINX_ROUNDS=1 also runs the nginx proxy in each of those rounds (with or without BIN_B), and
# prints each build's CPU a request and requests a second against it, taken within each round
# and then the median: the issue's ratios read on one machine state (`NGINX_ROUNDS=1 ROUNDS=4
# FULL=1 REF_DURATION=2 bench/run.sh 8 16`).
# OFF_B=cache, logs, mcp or gov (several joined by commas) measures what features cost: B is the
# same binary (or BIN_B) with those features off in its config, in the same alternating runs
# (`FULL=1 OFF_B=cache ROUNDS=3 bench/run.sh 10 16`: B / A is the share left without the cache).
# CALLGRIND=1 counts the instructions the gateway runs per request instead (valgrind's callgrind,
# user space only: the kernel's share is not in it): each binary (BIN, and BIN_B if set) runs
# under callgrind alone, warmed up, then counted over DURATION seconds of wrk load at CONNS
# connections, divided by the requests its /metrics counted in that window. A count moves by
# about 1.5 % between runs of one binary (a single function's count not at all) where CPU time
# on a shared VM moves by 10-15 %, so small cuts can be told apart; the top functions (inclusive) go to
# bench/results/callgrind-{nginx,a,b}.txt, the raw counts beside them (`CALLGRIND=1 FULL=1 BIN_B=<other> bench/run.sh 20 4`).
# The nginx proxy is counted the same way first (one process, no master), as the floor.
# FLOOR=1 also measures the floor of the gateway's own stack (bench/hyper_floor.rs: tokio, hyper's
# server and hyper-util's pooled client forwarding bytes, no JSON and no stages), pinned like the
# gateway, in the same run (with CALLGRIND=1, counted the same way), so the gateway's cost splits
# into the stack's and its own. FLOOR_SPIN_US=<n> makes the floor busy-wait n us a request in user
# space: the same system calls at a lower rate, to see what the rate alone does to the kernel's
# cost of a request (every target's CPU a request is printed split into user and kernel time);
# FLOOR_TOUCH_KB=<k> makes that wait write through a k KiB buffer instead (the same user time with
# memory traffic: does the kernel's cost grow when the caches have been flushed by user work?).
# FULL=1 is issue 17's setting: request log on, governance (embedded, one key), MCP registered,
# cache in exact mode, every body unique (each of these can still be set on its own).
set -euo pipefail
if [ "${FULL:-0}" = 1 ]; then
  : "${LOGS:=true}" "${GOV:=embedded}" "${MCP:=1}" "${CACHE:=exact}" "${UNIQUE:=1}"
fi
export LOGS="${LOGS:-true}" GOV="${GOV:-none}" MCP="${MCP:-0}" CACHE="${CACHE:-false}" UNIQUE="${UNIQUE:-0}" STREAM="${STREAM:-0}"
cd "$(dirname "$0")/.."
DURATION="${1:-15}"
CONNS="${2:-16}"
UP_PORT=18081
GW_PORT=18080
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/switchyard/target}"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk; then
  echo "== installing nginx-light and wrk (Debian packages)"
  apt-get update -qq && apt-get install -y -qq nginx-light wrk >/dev/null
fi

# BUILD_PROFILE: the cargo profile built and measured, by default `dist` (the deployed build:
# fat LTO, one codegen unit; BUILD_PROFILE=release measures the quicker build instead).
BUILD_PROFILE="${BUILD_PROFILE:-dist}"
echo "== building the gateway (profile $BUILD_PROFILE)"
# BIN=path runs that gateway binary instead of building this checkout's (to compare two builds
# in alternating runs).
if [ -z "${BIN:-}" ]; then cargo build --profile "$BUILD_PROFILE" --quiet --bin switchyard; fi
if [ "${MCP:-0}" = 1 ]; then cargo build --profile "$BUILD_PROFILE" --quiet -p mcp-calculator; fi
BIN="${BIN:-$CARGO_TARGET_DIR/$BUILD_PROFILE/switchyard}"
if [ "${FLOOR:-0}" = 1 ]; then cargo build --profile "$BUILD_PROFILE" --quiet --example hyper_floor; fi
FLOOR_BIN="$CARGO_TARGET_DIR/$BUILD_PROFILE/examples/hyper_floor"
FLOOR_PORT=18085

mkdir -p bench/results
work=$(mktemp -d)
cleanup() {
  # The gateway is stopped and waited for before its data directory goes.
  [ -n "${GW_PID:-}" ] && kill "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null || true
  [ -n "${GWB_PID:-}" ] && kill "$GWB_PID" 2>/dev/null && wait "$GWB_PID" 2>/dev/null || true
  [ -n "${NGX_CG_PID:-}" ] && kill "$NGX_CG_PID" 2>/dev/null && wait "$NGX_CG_PID" 2>/dev/null || true
  [ -n "${FLOOR_PID:-}" ] && kill "$FLOOR_PID" 2>/dev/null && wait "$FLOOR_PID" 2>/dev/null || true
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  [ -f "$work/proxy.pid" ] && kill "$(cat "$work/proxy.pid")" 2>/dev/null || true
  [ -f "$work/redis.pid" ] && kill "$(cat "$work/redis.pid")" 2>/dev/null || true
  [ -d "$work/pg" ] && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$work/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# One-line JSON body for nginx's `return` (single quotes escaped for nginx).
answer=$(python3 -c 'import json,sys; print(json.dumps(json.load(open("tests/fixtures/openai/chat.json")), separators=(",",":")))')
answer_type=application/json
if [ "${STREAM:-0}" = 1 ]; then
  # The recorded event stream, its newlines written as nginx escapes.
  answer=$(python3 -c 'import sys; print(open("tests/fixtures/openai/chat_stream.sse").read().replace("\\", "\\\\").replace("\x27", "\\\x27").replace("\n", "\\n"))')
  answer_type=text/event-stream
fi
# One nginx (one worker, keep-alive clients, files under $work/NAME) on CPU $2 serving the http
# block's body given on stdin; its pid in $work/NAME.pid.
start_nginx() { # name cpu
  mkdir -p "$work/$1"
  { cat <<CONF
worker_processes 1;
pid $work/$1.pid;
error_log $work/$1/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/$1;
  proxy_temp_path $work/$1;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
CONF
    cat
    echo "}"
  } > "$work/$1.conf"
  taskset -c "$2" nginx -c "$work/$1.conf" -p "$work"
}

start_nginx nginx "${UPSTREAM_CPU:-1}" <<CONF
  server {
    listen 127.0.0.1:$UP_PORT;
    location / {
      default_type $answer_type;
      return 200 '$answer';
    }
  }
CONF

# The floor of any proxy hop: Debian's nginx as a plain reverse proxy (one worker, keep-alive
# connections to the upstream, no JSON work), pinned like the gateway (CPU 0).
PROXY_PORT=18082
start_nginx proxy 0 <<CONF
  upstream up {
    server 127.0.0.1:$UP_PORT;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$PROXY_PORT;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
CONF

GOV="${GOV:-none}"
BENCH_KEY="sk-sy-bench-0123456789abcdef"
gov_conf=""
if [ "$GOV" != none ]; then
  store=""
  if [ "$GOV" = redis ]; then
    need redis-server || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
    taskset -c 1 redis-server --port 0 --unixsocket "$work/redis.sock" --save "" --appendonly no \
      --daemonize yes --pidfile "$work/redis.pid" --dir "$work" >/dev/null
    for _ in $(seq 50); do [ -S "$work/redis.sock" ] && break; sleep 0.1; done
    store=$'store = "redis"\nredis_url = "unix://'"$work"$'/redis.sock"'
  fi
  gov_conf=$(cat <<GOVCONF
[governance]
require_virtual_key = true
$store

[[governance.keys]]
id = "bench"
value = "$BENCH_KEY"
budgets = [ { max_usd = 1000000.0, period = "1d" } ]
rate_limits = { requests_per_minute = 1000000000, tokens_per_minute = 1000000000000 }
$( [ "${MCP:-0}" = 1 ] && echo 'mcp_tools = ["calc__*"]' )
GOVCONF
)
fi

state_conf=""
if [ "${STATE:-embedded}" = postgres ]; then
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  mkdir -p "$work/pg" && chown postgres:postgres "$work/pg" && chmod 755 "$work"
  runuser -u postgres -- "$PG_BIN/initdb" -D "$work/pg/data" -U switchyard --auth=trust --no-sync \
    --no-instructions -E UTF8 --locale=C.UTF-8 >/dev/null
  # Durable settings (fsync on, synchronous commits), as a production database runs.
  runuser -u postgres -- taskset -c 1 "$PG_BIN/pg_ctl" -D "$work/pg/data" -l "$work/pg/pg.log" -w start \
    -o "-c listen_addresses='' -k $work/pg" >/dev/null
  state_conf=$'state = "postgres"\npostgres_url = "postgresql://switchyard@/postgres?host='"$work"$'/pg"'
  export SWITCHYARD_SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
fi

cat > "$work/switchyard.toml" <<CONF
[server]
listen = "127.0.0.1:$GW_PORT"
data_dir = "$work/data"
$state_conf

$(case "${CACHE:-false}" in
  exact) printf '[cache]\nenabled = true\nmode = "exact"\n' ;;
  *) printf '[cache]\nenabled = %s\n' "${CACHE:-false}" ;;
esac)

[logs]
enabled = ${LOGS:-true}

[[providers]]
name = "bench"
kind = "openai"
base_url = "http://127.0.0.1:$UP_PORT/v1"
keys = ["sk-bench"]

$gov_conf
CONF
if [ "${MCP:-0}" = 1 ]; then
  printf '\n[[mcp.servers]]\nname = "calc"\ntransport = "stdio"\ncommand = "%s"\n' \
    "$CARGO_TARGET_DIR/$BUILD_PROFILE/mcp-calculator" >> "$work/switchyard.toml"
fi
if [ "${PLUGINS:-}" = tag-and-route ]; then
  wasm="$PWD/plugins/tag-and-route/build/tag-and-route.wasm"
  printf '\n[[plugins]]\nname = "tag-and-route"\nkind = "wasm"\npath = "%s"\nsha256 = "%s"\n' \
    "$wasm" "$(sha256sum "$wasm" | cut -d' ' -f1)" >> "$work/switchyard.toml"
  printf 'config = { rules = [{ model = "bench/*", to = "bench/gpt-4o-mini" }] }\n' >> "$work/switchyard.toml"
elif [ -n "${PLUGINS:-}" ]; then
  printf '\n[[plugins]]\nname = "%s"\nkind = "builtin"\n' "$PLUGINS" >> "$work/switchyard.toml"
  if [ "$PLUGINS" = prompt-guard ]; then
    printf 'config = { rules = [{ name = "keys", pattern = "(?i)private key" }] }\n' >> "$work/switchyard.toml"
  fi
fi
WRAP=() WAIT=50
if [ "${CALLGRIND:-0}" = 1 ]; then
  need valgrind || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
  # Counting starts only once the gateway is warm (callgrind_control -i on): until then it runs
  # at near full speed.
  WRAP=(valgrind -q --tool=callgrind --instr-atstart=no --dump-instr=no)
  WAIT=600
fi
SWITCHYARD_LOG=warn taskset -c 0 "${WRAP[@]}" ${WRAP[0]:+--callgrind-out-file="$work/cg-a"} "$BIN" serve --config "$work/switchyard.toml" &
GW_PID=$!
for _ in $(seq "$WAIT"); do curl -sf "http://127.0.0.1:$GW_PORT/health" >/dev/null && break; sleep 0.1; done
if [ -n "${OFF_B:-}" ]; then export BIN_B="${BIN_B:-$BIN}" OFF_B; fi
if [ -n "${BIN_B:-}" ]; then
  GWB_PORT=18083
  off=() off_list="${OFF_B:-}"
  for f in ${off_list//,/ }; do
    case "$f" in
      cache) off+=(-e '/^\[cache\]/,/^\[/ s/^enabled = true/enabled = false/') ;;
      logs) off+=(-e '/^\[logs\]/,/^\[/ s/^enabled = true/enabled = false/') ;;
      mcp) off+=(-e '/^\[\[mcp\.servers\]\]/,/^$/d' -e '/^mcp_tools = /d') ;;
      gov) off+=(-e '/^\[governance\]/,/^\[\[mcp/ { /^\[\[mcp/!d }') ;;
      *) echo "OFF_B: unknown feature $f (cache, logs, mcp, gov)" >&2; exit 2 ;;
    esac
  done
  sed -e "s#^listen = \"127.0.0.1:$GW_PORT\"#listen = \"127.0.0.1:$GWB_PORT\"#" \
    -e "s#^data_dir = \"$work/data\"#data_dir = \"$work/data-b\"#" "${off[@]}" \
    "$work/switchyard.toml" > "$work/switchyard-b.toml"
  if [ -n "${OFF_B:-}" ]; then
    echo "== B: $BIN_B with ${OFF_B} off"; diff "$work/switchyard.toml" "$work/switchyard-b.toml" | grep '^[<>]' | grep -v 'listen\|data_dir' || true
  fi
  SWITCHYARD_LOG=warn taskset -c 0 "${WRAP[@]}" ${WRAP[0]:+--callgrind-out-file="$work/cg-b"} "$BIN_B" serve --config "$work/switchyard-b.toml" &
  GWB_PID=$!
  for _ in $(seq "$WAIT"); do curl -sf "http://127.0.0.1:$GWB_PORT/health" >/dev/null && break; sleep 0.1; done
fi

STREAM_FIELD=""
[ "${STREAM:-0}" = 1 ] && STREAM_FIELD=',"stream":true'
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"bench/gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hello! How are you today?"}],"temperature":0.2,"max_tokens":64$STREAM_FIELD}'
LUA
if [ "${UNIQUE:-0}" = 1 ]; then
  cat >> "$work/post.lua" <<LUA
-- Each wrk run (the warm-up, then the measured run) counts from its own start.
math.randomseed(os.time())
local run = math.random(1, 1000000000)
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, string.format('{"model":"bench/gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hello! How are you today? (%d-%d)"}],"temperature":0.2,"max_tokens":64$STREAM_FIELD}', run, n))
end
LUA
fi
GW_PATH=/v1/chat/completions
cp "$work/post.lua" "$work/gw.lua"
if [ "${ENDPOINT:-chat}" = responses ]; then
  GW_PATH=/v1/responses
  cat > "$work/gw.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"bench/gpt-4o-mini","instructions":"You are terse.","input":"Hello! How are you today?","temperature":0.2,"max_output_tokens":64,"store":${STORE:-false}}'
LUA
fi
if [ "$GOV" != none ]; then
  echo "wrk.headers[\"Authorization\"] = \"Bearer $BENCH_KEY\"" >> "$work/post.lua"
  echo "wrk.headers[\"Authorization\"] = \"Bearer $BENCH_KEY\"" >> "$work/gw.lua"
fi
# B's load: without governance it carries no virtual key (one the gateway does not know is refused).
if [[ ",${OFF_B:-}," == *,gov,* ]]; then
  grep -v '"Authorization"' "$work/gw.lua" > "$work/gw-b.lua"
else
  cp "$work/gw.lua" "$work/gw-b.lua"
fi

if [ "${CALLGRIND:-0}" = 1 ]; then
  served() { # port: requests the gateway's /metrics has counted
    curl -sf "http://127.0.0.1:$1/metrics" | awk '/^switchyard_requests_total/ {n += $NF} END {printf "%d", n}'
  }
  count() { # name pid url script [port]: instructions per request, top functions in bench/results
    # Requests are those the gateway on `port` counted in /metrics, or (no port: the nginx proxy)
    # those wrk saw answered.
    taskset -c 1 wrk -t1 -c"$CONNS" -d3s -s "$4" "$3" >/dev/null # warm-up
    local before=0; [ -n "${5:-}" ] && before=$(served "$5")
    callgrind_control -i on "$2" >/dev/null
    taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$4" "$3" > "$work/$1.txt"
    callgrind_control -i off "$2" >/dev/null
    local n
    if [ -n "${5:-}" ]; then n=$(( $(served "$5") - before )); else n=$(awk '/requests in/ {print $1}' "$work/$1.txt"); fi
    callgrind_control -d "$2" >/dev/null
    local out; out=$(ls "$work/cg-$1"* | sort | tail -1)
    cp "$out" "bench/results/callgrind-$1.out" # for callgrind_annotate, by function or line
    callgrind_annotate --inclusive=yes "$out" > "$work/$1.annotated" 2>/dev/null || true
    sed -n 1,80p "$work/$1.annotated" > "bench/results/callgrind-$1.txt"
    local ir; ir=$(awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}' "$work/$1.annotated")
    [ -n "$ir" ] && [ "${n:-0}" -gt 0 ] || { echo "$1: nothing counted ($out)" >&2; exit 1; }
    local errors; errors=$(grep -o 'Non-2xx or 3xx responses: [0-9]*' "$work/$1.txt" || echo "Non-2xx or 3xx responses: 0")
    echo "$1: $n requests, $ir instructions, $((ir / n)) per request ($errors)"
  }
  # The floor, counted the same way: the nginx proxy (its config, one process without a master,
  # CPU 0) under callgrind.
  NGX_CG_PORT=18084
  { echo "daemon off; master_process off;"
    sed -e "s/listen 127.0.0.1:$PROXY_PORT;/listen 127.0.0.1:$NGX_CG_PORT;/" -e "s#^pid .*#pid $work/proxy-cg.pid;#" "$work/proxy.conf"
  } > "$work/proxy-cg.conf"
  taskset -c 0 valgrind -q --tool=callgrind --instr-atstart=no --dump-instr=no \
    --callgrind-out-file="$work/cg-nginx" nginx -c "$work/proxy-cg.conf" -p "$work" &
  NGX_CG_PID=$!
  for _ in $(seq 600); do curl -s -o /dev/null "http://127.0.0.1:$NGX_CG_PORT/" && break; sleep 0.1; done
  echo "== instructions per request (callgrind, user space), ${DURATION}s at $CONNS connections each"
  count nginx "$NGX_CG_PID" "http://127.0.0.1:$NGX_CG_PORT/v1/chat/completions" "$work/post.lua"
  if [ "${FLOOR:-0}" = 1 ]; then
    taskset -c 0 valgrind -q --tool=callgrind --instr-atstart=no --dump-instr=no \
      --callgrind-out-file="$work/cg-floor" "$FLOOR_BIN" "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$UP_PORT" &
    FLOOR_PID=$!
    for _ in $(seq 600); do curl -s -o /dev/null "http://127.0.0.1:$FLOOR_PORT/" && break; sleep 0.1; done
    count floor "$FLOOR_PID" "http://127.0.0.1:$FLOOR_PORT/v1/chat/completions" "$work/post.lua"
  fi
  count a "$GW_PID" "http://127.0.0.1:$GW_PORT$GW_PATH" "$work/gw.lua" "$GW_PORT"
  [ -n "${BIN_B:-}" ] && count b "$GWB_PID" "http://127.0.0.1:$GWB_PORT$GW_PATH" "$work/gw-b.lua" "$GWB_PORT"
  exit 0
fi

cpu_ticks() { # utime and stime of a process, in clock ticks
  awk '{print $14, $15}' "/proc/$1/stat"
}
rss() { # pid: resident KiB in all, anonymous, file-backed (mapped files such as the cache shard)
  awk '/^VmRSS/ {a=$2} /^RssAnon/ {b=$2} /^RssFile/ {c=$2} END {print a, b, c}' "/proc/$1/status"
}
run() { # name url [script] [pid]
  local script="${3:-$work/post.lua}" pid="${4:-$GW_PID}"
  taskset -c 1 wrk -t1 -c"$CONNS" -d3s -s "$script" "$2" >/dev/null # warm-up
  local before; before=($(cpu_ticks "$pid"))
  local sampler=""
  if [ "${MEMORY:-0}" = 1 ] && [ "$1" = gateway ]; then
    # The gateway's resident memory every 30 s of the measured run (the memory curve).
    ( t=0; while kill -0 "$pid" 2>/dev/null; do
        echo "$t $(rss "$pid")" >> "$work/rss.txt"
        sleep 30; t=$((t + 30)); done ) &
    sampler=$!
  fi
  local secs="${REF_DURATION:-$DURATION}"
  case "$1" in gateway | floor | a[0-9]* | b[0-9]* | n[0-9]*) secs="$DURATION" ;; esac
  echo "$secs" > "$work/$1.secs"
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${secs}s" --latency -s "$script" "$2" > "$work/$1.txt"
  if [ -n "$sampler" ]; then
    kill "$sampler" 2>/dev/null || true
    echo "$DURATION $(rss "$pid")" >> "$work/rss.txt"
  fi
  # The proxy's own CPU time over the run (its process only: not the upstream, not Postgres):
  # user and kernel ticks.
  local after; after=($(cpu_ticks "$pid"))
  echo "$(( after[0] - before[0] )) $(( after[1] - before[1] ))" > "$work/$1.cpu"
}
run direct "http://127.0.0.1:$UP_PORT/v1/chat/completions"
PROXY_WORKER=$(pgrep -P "$(cat "$work/proxy.pid")" | head -1)
run proxy "http://127.0.0.1:$PROXY_PORT/v1/chat/completions" "$work/post.lua" "$PROXY_WORKER"
if [ "${PROFILE:-0}" != 0 ]; then
  # Where the gateway's CPU goes (software clock sampling; works without hardware counters).
  # PROFILE=dwarf unwinds through libc and the allocator too (larger files, slower reports).
  graph="-g"
  [ "$PROFILE" = dwarf ] && graph="--call-graph dwarf,16384"
  # shellcheck disable=SC2086
  perf record -e "${PERF_EVENT:-cpu-clock}" ${PERF_RATE:--F 999} $graph -p "$GW_PID" -o bench/results/perf.data -- sleep "$((DURATION + 3))" >/dev/null 2>&1 &
  PERF_PID=$!
fi
run gateway "http://127.0.0.1:$GW_PORT$GW_PATH" "$work/gw.lua"
if [ "${FLOOR:-0}" = 1 ]; then
  taskset -c 0 "$FLOOR_BIN" "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$UP_PORT" &
  FLOOR_PID=$!
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$FLOOR_PORT/" && break; sleep 0.1; done
  run floor "http://127.0.0.1:$FLOOR_PORT/v1/chat/completions" "$work/post.lua" "$FLOOR_PID"
fi
if [ -n "${PERF_PID:-}" ]; then
  wait "$PERF_PID" || true
  perf report -i bench/results/perf.data --no-children --percent-limit 0.7 --stdio -g none 2>/dev/null \
    | grep -v '^#' | grep -v '^$' > bench/results/perf-top.txt || true
  echo "== profile: bench/results/perf-top.txt"
fi

ROUNDS_DONE=0
if [ -n "${BIN_B:-}" ] || [ "${NGINX_ROUNDS:-0}" = 1 ]; then
  # The order alternates (A B, B A, ...) so neither build always runs second; with NGINX_ROUNDS=1
  # the nginx proxy runs first in odd rounds and last in even ones.
  nginx_round() {
    [ "${NGINX_ROUNDS:-0}" = 1 ] && run "n$1" "http://127.0.0.1:$PROXY_PORT/v1/chat/completions" "$work/post.lua" "$PROXY_WORKER"
    return 0
  }
  for i in $(seq "${ROUNDS:-3}"); do
    if [ $((i % 2)) = 1 ]; then
      nginx_round "$i"
      run "a$i" "http://127.0.0.1:$GW_PORT$GW_PATH" "$work/gw.lua" "$GW_PID"
      [ -n "${BIN_B:-}" ] && run "b$i" "http://127.0.0.1:$GWB_PORT$GW_PATH" "$work/gw-b.lua" "$GWB_PID"
    else
      [ -n "${BIN_B:-}" ] && run "b$i" "http://127.0.0.1:$GWB_PORT$GW_PATH" "$work/gw-b.lua" "$GWB_PID"
      run "a$i" "http://127.0.0.1:$GW_PORT$GW_PATH" "$work/gw.lua" "$GW_PID"
      nginx_round "$i"
    fi
    ROUNDS_DONE=$i
  done
fi
export ROUNDS_DONE

python3 - "$work" "$DURATION" "$CONNS" <<'PY'
import re, sys
work, duration, conns = sys.argv[1], sys.argv[2], sys.argv[3]
def us(v, unit):
    return float(v) * {"us": 1, "ms": 1000, "s": 1e6}[unit]
def parse(name):
    t = open(f"{work}/{name}.txt").read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    pct = {p: us(v, u) for p, v, u in re.findall(r"\s(50|75|90|99)%\s+([\d.]+)(us|ms|s)", t)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    sock = re.search(r"Socket errors: (.*)", t)
    return rps, pct, (int(errors.group(1)) if errors else 0), (sock.group(1) if sock else "none")
d, n, g = parse("direct"), parse("proxy"), parse("gateway")
import os
e = os.environ.get
print(f"\nworkload: {'streaming' if e('STREAM') == '1' else 'non-streaming'} {e('ENDPOINT', 'chat')}, {conns} connections, {duration}s, wrk -t1 (CPU 1), gateway on CPU 0, log: {e('LOGS')}, governance: {e('GOV')}, MCP: {'registered' if e('MCP') == '1' else 'none'}, cache: {e('CACHE')}, unique bodies: {e('UNIQUE') == '1'}, plugins: {e('PLUGINS') or 'none'}, state: {e('STATE', 'embedded')}")
print(f"{'':10} {'RPS':>10} {'p50 (us)':>10} {'p99 (us)':>10} {'non-2xx':>8}")
for name, (rps, p, err, _) in (("direct", d), ("nginx-proxy", n), ("gateway", g)):
    print(f"{name:11} {rps:10.0f} {p['50']:10.0f} {p['99']:10.0f} {err:8d}")
print(f"added latency p50: nginx proxy {n[1]['50'] - d[1]['50']:.0f} us, gateway {g[1]['50'] - d[1]['50']:.0f} us; p99: {n[1]['99'] - d[1]['99']:.0f} us, {g[1]['99'] - d[1]['99']:.0f} us")
print(f"throughput / direct: nginx proxy {n[0] / d[0]:.2f}, gateway {g[0] / d[0]:.2f}; gateway / nginx proxy {g[0] / n[0]:.2f}")
hz = os.sysconf("SC_CLK_TCK")
def ticks_of(name):
    """(user, kernel) clock ticks of a target's process over its measured run."""
    t = [int(x) for x in open(f"{work}/{name}.cpu").read().split()] + [0, 0]
    return t[0], t[1]
def us_per_request(name, rps):
    """(all, user, kernel) CPU microseconds a request."""
    secs = float(open(f"{work}/{name}.secs").read().strip())
    u, k = ticks_of(name)
    f = 1e6 / hz / (rps * secs) if rps else float("nan")
    return (u + k) * f, u * f, k * f
cpu, split = {}, {}
for name, (rps, *_rest) in (("proxy", n), ("gateway", g)):
    if rps:
        split[name] = us_per_request(name, rps)
        cpu[name] = split[name][0]
if len(cpu) == 2:
    print(f"CPU per request (the process alone): nginx proxy {cpu['proxy']:.1f} us, gateway {cpu['gateway']:.1f} us ({cpu['gateway'] / cpu['proxy']:.1f}x)")
    print(f"  of which user / kernel: nginx proxy {split['proxy'][1]:.1f} / {split['proxy'][2]:.1f} us, gateway {split['gateway'][1]:.1f} / {split['gateway'][2]:.1f} us")
if os.path.exists(f"{work}/floor.txt"):
    f = parse("floor")
    fcpu, fuser, fkernel = us_per_request("floor", f[0])
    print(f"stack floor (bench/hyper_floor.rs): {f[0]:.0f} RPS, p50 {f[1]['50']:.0f} us, p99 {f[1]['99']:.0f} us, non-2xx {f[2]}, added p50 {f[1]['50'] - d[1]['50']:.0f} us, "
          f"throughput / nginx proxy {f[0] / n[0]:.2f}, CPU per request {fcpu:.1f} us (user {fuser:.1f}, kernel {fkernel:.1f}; {fcpu / cpu['proxy']:.1f}x the nginx proxy; the gateway {cpu['gateway'] / fcpu:.1f}x the floor)")
print(f"socket errors: direct {d[3]}, nginx proxy {n[3]}, gateway {g[3]}")
rounds = int(e("ROUNDS_DONE", "0"))
if rounds:
    import statistics
    def per_request(name):
        rps, _, err, _ = parse(name)
        all_, user, kernel = us_per_request(name, rps)
        return rps, all_, err, user, kernel
    has_b = bool(e("BIN_B"))
    has_n = os.path.exists(f"{work}/n1.txt")
    off = f", with {e('OFF_B')} off" if e('OFF_B') else ""
    builds = f"A = BIN ({e('BIN')})" + (f", B = BIN_B ({e('BIN_B')}{off})" if has_b else "")
    print(f"\nalternating runs: {builds}" + (", N = the nginx proxy" if has_n else ""))
    cols = ["A"] + (["B"] if has_b else []) + (["N"] if has_n else [])
    print(f"{'round':6} " + " ".join(f"{c + ' RPS':>9} {c + ' CPU/req':>10}" for c in cols) + f" {'non-2xx':>8}")
    runs = {c: [] for c in cols}
    for i in range(1, rounds + 1):
        for c in cols:
            runs[c].append(per_request(f"{c.lower()}{i}"))
        print(f"{i:<6} " + " ".join(f"{runs[c][-1][0]:9.0f} {runs[c][-1][1]:8.1f}us" for c in cols)
              + " " + "/".join(str(runs[c][-1][2]) for c in cols))
    med = {c: [statistics.median(x[k] for x in runs[c]) for k in range(5)] for c in cols}
    print(f"{'median':6} " + " ".join(f"{med[c][0]:9.0f} {med[c][1]:8.1f}us" for c in cols))
    if has_b:
        print(f"B / A: requests per second {med['B'][0] / med['A'][0]:.3f}, CPU per request {med['B'][1] / med['A'][1]:.3f}")
    if has_n:
        # Each round's ratio is taken within the round (one machine state), then the median.
        for c in cols[:-1]:
            cpu_r = statistics.median(runs[c][i][1] / runs["N"][i][1] for i in range(rounds))
            rps_r = statistics.median(runs[c][i][0] / runs["N"][i][0] for i in range(rounds))
            print(f"{c} against the nginx proxy, medians of each round's ratio: CPU per request {cpu_r:.2f}x, requests per second {rps_r:.3f}")
    print("user / kernel CPU per request, medians: " + ", ".join(f"{c} {med[c][3]:.1f} / {med[c][4]:.1f} us" for c in cols))
if os.path.exists(f"{work}/rss.txt"):
    print("gateway RSS under load (seconds into the run: MiB in all / anonymous / mapped files): " + ", ".join(
        f"{t}: {int(a) / 1024:.1f} / {int(b) / 1024:.1f} / {int(c) / 1024:.1f}"
        for t, a, b, c in (l.split() for l in open(f"{work}/rss.txt") if len(l.split()) == 4)))
PY
