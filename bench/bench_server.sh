#!/bin/sh
# Side-by-side HTTP benchmark of `taphouse serve` against llama.cpp's
# llama-server on the same GGUF file, threads and number of parallel
# sequences. Run through `make bench-server`, which builds taphouse first.
#
# Each round starts llama-server, runs every load against it and stops
# it, then does the same with taphouse, so only one server runs at a
# time. The loads (bench/serve_client.mjs) send POST /v1/completions with
# a fixed 108-token prompt, max_tokens 64, temperature 0 and
# logit_bias {"2": -100}, so every request generates 64 tokens:
#   c1, c4, c8   non-streaming, 1, 4 and 8 clients, 8 requests per client
#   s1, s4       streaming, 1 and 4 clients, 8 and 4 requests per client
# llama-server gets "cache_prompt": false, because taphouse has no
# prompt cache and would otherwise process the prompt that llama-server
# reuses from the previous request in the same slot.
#
# Environment:
#   BUILD          build folder holding taphouse (default: build)
#   BENCH_MODEL    GGUF file (default: bench/models/llama-110m-q8_0.gguf)
#   BENCH_THREADS  compute threads for both servers (default 2)
#   BENCH_PARALLEL sequences generated at once (default 4)
#   BENCH_CTX      context length per sequence in tokens (default 512)
#   BENCH_ROUNDS   rounds; the table keeps each side's best (default 3)
#   BENCH_BUDGET_S no new round starts after this many seconds, and a
#                  round starts only if the last one would still fit
#                  (default 420)
#   VOCAB          tokenizer source for generating the default model
#                  (default ../shared/models/llama-2-tiny-random.gguf)
#   PEER_TAR       llama.cpp build to unpack
#                  (default ../shared/peers/llama.cpp-b9749-cpu.tar.xz)
#   PEER_DIR       where it is unpacked (default /tmp/taphouse-peer)
#
# Servers listen on 127.0.0.1 on a free port in 17000-17999. Prints a
# markdown table and also writes it to bench/models/last_server_run.md.
set -eu

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
MODEL=${BENCH_MODEL:-bench/models/llama-110m-q8_0.gguf}
THREADS=${BENCH_THREADS:-2}
PARALLEL=${BENCH_PARALLEL:-4}
CTX=${BENCH_CTX:-512}
ROUNDS=${BENCH_ROUNDS:-3}
BUDGET_S=${BENCH_BUDGET_S:-420}
PEER_TAR=${PEER_TAR:-../shared/peers/llama.cpp-b9749-cpu.tar.xz}
PEER_DIR=${PEER_DIR:-/tmp/taphouse-peer}
OUT=bench/models/last_server_run.md
CLIENT=bench/serve_client.mjs
MODEL_NAME=$(basename "$MODEL" .gguf)
# Each load stops sending new requests after this many seconds.
LOAD_LIMIT_S=60
# Each request is aborted after this many seconds.
REQUEST_TIMEOUT_S=30
# Seconds to wait for a server's GET /health to return 200.
START_TIMEOUT_S=60

TMP=$(mktemp -d /tmp/taphouse-sbench.XXXXXX)
SERVER_PID=

# Stop the running server, if any: SIGTERM, then SIGKILL after 10 s.
stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        waited=0
        while kill -0 "$SERVER_PID" 2>/dev/null && [ $waited -lt 100 ]; do
            sleep 0.1
            waited=$((waited + 1))
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "bench_server.sh: server $SERVER_PID did not stop;" \
                 "sending SIGKILL" >&2
            kill -9 "$SERVER_PID" 2>/dev/null || true
        fi
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}

cleanup() {
    stop_server
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for tool in node curl ss "$BUILD/taphouse"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "bench_server.sh: $tool not found; run 'make deps' and" \
             "'make BUILD=$BUILD bench-server'" >&2
        exit 1
    fi
done
# Generate the default model as bench/run.sh does, if it is missing.
if [ ! -f "$MODEL" ] && [ -z "${BENCH_MODEL:-}" ] && \
   [ -x "$BUILD/gen_model" ]; then
    echo "generating $MODEL" >&2
    mkdir -p bench/models
    "$BUILD/gen_model" --out "$MODEL.tmp" --type q8_0 --dim 768 --ff 2048 \
        --layers 12 --heads 12 --kv-heads 12 --ctx 2048 --seed 1 \
        --vocab-from "${VOCAB:-../shared/models/llama-2-tiny-random.gguf}"
    mv "$MODEL.tmp" "$MODEL"
fi
if [ ! -f "$MODEL" ]; then
    echo "bench_server.sh: model $MODEL not found; set BENCH_MODEL or run" \
         "'make BUILD=$BUILD bench-server', which generates the default" >&2
    exit 1
fi

# Unpack the peer once; later runs reuse it.
if [ ! -x "$PEER_DIR/llama-server" ]; then
    if [ ! -f "$PEER_TAR" ]; then
        echo "bench_server.sh: peer build $PEER_TAR not found; set PEER_TAR" >&2
        exit 1
    fi
    mkdir -p "$PEER_DIR"
    tar -C "$PEER_DIR" -xJf "$PEER_TAR"
fi

# Print a port in 17000-17999 with no listener, starting at a random one.
free_port() {
    start=$(awk 'BEGIN { srand(); print int(rand() * 1000) }')
    i=0
    while [ $i -lt 1000 ]; do
        port=$((17000 + (start + i) % 1000))
        if [ -z "$(ss -Htln "sport = :$port")" ]; then
            echo "$port"
            return 0
        fi
        i=$((i + 1))
    done
    echo "bench_server.sh: no free port in 17000-17999" >&2
    return 1
}

# wait_ready URL LOG: wait until URL/health returns 200 or the server exits.
wait_ready() {
    waited=0
    while [ $waited -lt $((START_TIMEOUT_S * 10)) ]; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "bench_server.sh: server exited during start; log $2:" >&2
            tail -20 "$2" >&2
            exit 1
        fi
        if curl -sf -o /dev/null "$1/health"; then
            return 0
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    echo "bench_server.sh: server not ready after ${START_TIMEOUT_S}s;" \
         "log $2:" >&2
    tail -20 "$2" >&2
    exit 1
}

# start_server peer|ours ROUND: start one server and set SERVER_PID, URL.
start_server() {
    port=$(free_port)
    URL=http://127.0.0.1:$port
    log=$TMP/$1.$2.log
    if [ "$1" = peer ]; then
        LD_LIBRARY_PATH=$PEER_DIR "$PEER_DIR/llama-server" -m "$MODEL" \
            --host 127.0.0.1 --port "$port" -t "$THREADS" -tb "$THREADS" \
            -np "$PARALLEL" -c $((PARALLEL * CTX)) --no-webui \
            > "$log" 2>&1 &
    else
        "$BUILD/taphouse" serve --model "$MODEL" --db "$DB" \
            --host 127.0.0.1 --port "$port" --threads "$THREADS" \
            --parallel "$PARALLEL" --ctx-size "$CTX" > "$log" 2>&1 &
    fi
    SERVER_PID=$!
    wait_ready "$URL" "$log"
}

# load SERVER TEST ROUND ARGS...: run one load and keep its JSON result.
load() {
    server=$1
    test=$2
    round=$3
    shift 3
    extra='{}'
    key=
    if [ "$server" = peer ]; then
        extra='{"cache_prompt": false}'
    else
        key=$KEY
    fi
    BENCH_API_KEY=$key node "$CLIENT" load --url "$URL" \
        --model "$MODEL_NAME" --extra "$extra" \
        --time-limit $LOAD_LIMIT_S --request-timeout $REQUEST_TIMEOUT_S \
        "$@" > "$TMP/$server.$test.$round.json"
}

# run_server SERVER ROUND: start the server, warm it up, run every load,
# record its peak RSS and stop it.
run_server() {
    start_server "$1" "$2"
    # Warm-up: one request in each slot, not measured.
    load "$1" warmup "$2" --concurrency "$PARALLEL" --requests "$PARALLEL" \
        2> /dev/null || true
    rm -f "$TMP/$1.warmup.$2.json"
    for c in 1 4 8; do
        load "$1" "c$c" "$2" --concurrency $c --requests $((8 * c))
    done
    load "$1" s1 "$2" --stream --concurrency 1 --requests 8
    load "$1" s4 "$2" --stream --concurrency 4 --requests 16
    awk '/^VmHWM:/ { print $2 }' "/proc/$SERVER_PID/status" \
        > "$TMP/$1.rss.$2"
    stop_server
}

DB=$TMP/taphouse.db
KEY=$("$BUILD/taphouse" keys create --db "$DB" --tenant bench \
      --name bench-server 2> "$TMP/keys.log" | tail -1)
if [ -z "$KEY" ]; then
    echo "bench_server.sh: 'taphouse keys create' printed no key:" >&2
    cat "$TMP/keys.log" >&2
    exit 1
fi

load_before=$(cut -d' ' -f1 /proc/loadavg)
t0=$(date +%s)
round=1
last_round_s=0
while [ $round -le "$ROUNDS" ]; do
    elapsed=$(($(date +%s) - t0))
    if [ $round -gt 1 ] && [ $((elapsed + last_round_s)) -gt "$BUDGET_S" ]; then
        echo "bench_server.sh: stopping after $((round - 1)) rounds" \
             "(${elapsed}s spent, budget ${BUDGET_S}s)" >&2
        break
    fi
    round_t0=$(date +%s)
    echo "round $round: llama-server, then taphouse" >&2
    run_server peer $round
    run_server ours $round
    last_round_s=$(($(date +%s) - round_t0))
    echo "round $round: ${last_round_s}s" >&2
    round=$((round + 1))
done
rounds_done=$((round - 1))

# The ledger must contain one usage row per request taphouse served.
usage_rows=n/a
if command -v sqlite3 >/dev/null 2>&1; then
    usage_rows=$(sqlite3 "$DB" "SELECT count(*) FROM usage")
fi

mkdir -p bench/models
{
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
    echo "- Model: $MODEL; threads: $THREADS, parallel sequences:" \
         "$PARALLEL, context per sequence: $CTX"
    echo "- Rounds: $rounds_done. Each cell is the round with the best" \
         "t/s (non-stream) or first-token p50 (stream)."
    echo "- Load average (1 min): $load_before before," \
         "$(cut -d' ' -f1 /proc/loadavg) after"
    echo "- taphouse usage rows written (including warm-up): $usage_rows"
    echo
    node "$CLIENT" table "$TMP"
} | tee "$OUT"
