#!/bin/sh
# Side-by-side benchmark of taphouse's engine against llama.cpp's
# llama-bench on the same random-weight GGUF files and the same threads.
# Run through `make bench`, which builds gen_model and bench_engine first.
#
# Environment:
#   BUILD          build folder holding gen_model and bench_engine
#                  (default: build)
#   BENCH_LARGE=1  also run the 1.1B shape (slow on 2 cores)
#   BENCH_THREADS  threads for both engines (default 2)
#   BENCH_REPS     timed repetitions per test (default 3)
#   BENCH_ROUNDS   times the whole set is run; the table keeps each
#                  side's best median (default 2)
#   PEER_TAR       llama.cpp build to unpack
#                  (default ../shared/peers/llama.cpp-b9749-cpu.tar.xz)
#   PEER_DIR       where it is unpacked (default /tmp/taphouse-peer)
#
# Prints a markdown table and also writes it to bench/models/last_run.md.
set -eu

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
THREADS=${BENCH_THREADS:-2}
REPS=${BENCH_REPS:-3}
ROUNDS=${BENCH_ROUNDS:-2}
N_PROMPT=512
N_GEN=128
PEER_TAR=${PEER_TAR:-../shared/peers/llama.cpp-b9749-cpu.tar.xz}
PEER_DIR=${PEER_DIR:-/tmp/taphouse-peer}
MODELS=bench/models
VOCAB=${VOCAB:-../shared/models/llama-2-tiny-random.gguf}
OUT=$MODELS/last_run.md
TMP=$(mktemp -d /tmp/taphouse-bench.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

for tool in jq /usr/bin/time "$BUILD/gen_model" "$BUILD/bench_engine"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "run.sh: $tool not found; run 'make deps' and" \
             "'make BUILD=$BUILD bench'" >&2
        exit 1
    fi
done

# Unpack the peer once; later runs reuse it.
if [ ! -x "$PEER_DIR/llama-bench" ]; then
    if [ ! -f "$PEER_TAR" ]; then
        echo "run.sh: peer build $PEER_TAR not found; set PEER_TAR" >&2
        exit 1
    fi
    mkdir -p "$PEER_DIR"
    tar -C "$PEER_DIR" -xJf "$PEER_TAR"
fi

# gen NAME TYPE DIM FF LAYERS HEADS KV_HEADS: write the model if missing.
gen() {
    file=$MODELS/llama-$1-$2.gguf
    if [ ! -f "$file" ]; then
        mkdir -p "$MODELS"
        echo "generating $file" >&2
        "$BUILD/gen_model" --out "$file.tmp" --type "$2" --dim "$3" \
            --ff "$4" --layers "$5" --heads "$6" --kv-heads "$7" \
            --ctx 2048 --seed 1 --vocab-from "$VOCAB"
        mv "$file.tmp" "$file"
    fi
    echo "$file"
}

MODEL_LIST=$(gen 110m q8_0 768 2048 12 12 12; gen 110m q4_0 768 2048 12 12 12)
if [ "${BENCH_LARGE:-0}" = 1 ]; then
    MODEL_LIST="$MODEL_LIST
$(gen 1.1b q8_0 2048 5632 22 32 4; gen 1.1b q4_0 2048 5632 22 32 4)"
fi

# Median of llama-bench's per-repetition speeds for one test, so both
# sides report the same statistic (llama-bench's own column is the mean).
peer_median() {
    jq -r --arg t "$2" '
        .[] | select(($t == "pp" and .n_prompt > 0) or
                     ($t == "tg" and .n_gen > 0))
        | .samples_ts | sort
        | if length % 2 == 1 then .[length / 2 | floor]
          else (.[length / 2 - 1] + .[length / 2]) / 2 end
        | . * 100 | round / 100' "$1"
}

ours_median() {
    sed -n "s/^test=$2[0-9]* .*median_tps=\([0-9.]*\).*/\1/p" "$1"
}

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a == "" || b == "" || b + 0 == 0) print "n/a";
        else printf "%.2f\n", a / b }'
}

mib() {
    awk '{ printf "%.0f\n", $1 / 1024 }' "$1"
}

# The machine may be shared, so record how busy it was during the run.
load_before=$(cut -d' ' -f1 /proc/loadavg)

# Each round runs every model on both engines back to back. Rounds are
# spread over time, so a burst of load from other processes spoils one
# round rather than every measurement of one side.
round=1
while [ $round -le "$ROUNDS" ]; do
    for model in $MODEL_LIST; do
        name=$(basename "$model" .gguf)
        out=$TMP/$name.$round
        echo "round $round: $name: llama-bench, then bench_engine" >&2

        LD_LIBRARY_PATH=$PEER_DIR /usr/bin/time -f %M -o "$out.peer.rss" \
            "$PEER_DIR/llama-bench" -m "$model" -p $N_PROMPT -n $N_GEN \
            -t "$THREADS" -r "$REPS" -o json > "$out.peer.json" \
            2> "$out.peer.err" || {
            echo "run.sh: llama-bench failed on $model:" >&2
            tail -5 "$out.peer.err" >&2
            exit 1
        }
        /usr/bin/time -f %M -o "$out.ours.rss" \
            "$BUILD/bench_engine" -m "$model" -p $N_PROMPT -n $N_GEN \
            -t "$THREADS" -r "$REPS" > "$out.ours.txt" \
            2> "$out.ours.err" || {
            echo "run.sh: bench_engine failed on $model:" >&2
            tail -5 "$out.ours.err" >&2
            exit 1
        }
    done
    round=$((round + 1))
done

# max_of: the largest of the numbers in $1 (space-separated).
max_of() {
    echo "$1" | tr ' ' '\n' | awk 'NF && ($1 > m || m == "") { m = $1 }
        END { print m }'
}

{
    echo "| model | test | llama.cpp t/s | taphouse t/s" \
         "| taphouse/llama.cpp | llama.cpp rounds | taphouse rounds |"
    echo "|---|---|---:|---:|---:|---|---|"
} > "$TMP/table"

for model in $MODEL_LIST; do
    name=$(basename "$model" .gguf)
    for t in pp tg; do
        n=$N_PROMPT
        [ $t = tg ] && n=$N_GEN
        peer_all=
        ours_all=
        round=1
        while [ $round -le "$ROUNDS" ]; do
            out=$TMP/$name.$round
            peer_all="$peer_all $(peer_median "$out.peer.json" $t)"
            ours_all="$ours_all $(ours_median "$out.ours.txt" $t)"
            round=$((round + 1))
        done
        peer=$(max_of "$peer_all")
        ours=$(max_of "$ours_all")
        echo "| $name | $t$n | $peer | $ours | $(ratio "$ours" "$peer")" \
             "|$peer_all |$ours_all |" >> "$TMP/table"
    done
    peer_rss=$(mib "$TMP/$name.1.peer.rss")
    ours_rss=$(mib "$TMP/$name.1.ours.rss")
    echo "| $name | peak RSS MiB | $peer_rss | $ours_rss |" \
         "$(ratio "$ours_rss" "$peer_rss") | | |" >> "$TMP/table"
done

mkdir -p "$MODELS"
{
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
    echo "- Threads: $THREADS, repetitions: $REPS, rounds: $ROUNDS." \
         "Each cell is the best of the rounds' medians."
    echo "- Load average (1 min): $load_before before," \
         "$(cut -d' ' -f1 /proc/loadavg) after"
    echo
    cat "$TMP/table"
} | tee "$OUT"
