#!/bin/sh
# Install what taphouse needs, build it, create an API key, and serve the
# bundled model on 127.0.0.1:8080 (or $PORT). Prints a ready-to-paste
# curl request once the server accepts requests. Ctrl-C stops it.
set -eu
cd "$(dirname "$0")/.."

PORT=${PORT:-8080}
DATA=${TAPHOUSE_DATA_DIR:-$(pwd)/data}
DB="$DATA/taphouse.db"
MODEL=models/stories260K-f32.gguf

sh tools/install_deps.sh
make -j"$(nproc)"

if ss -Htln "sport = :$PORT" 2>/dev/null | grep -q .; then
    echo "port $PORT is already in use; run again with PORT=another" >&2
    exit 1
fi

mkdir -p "$DATA"
./build/taphouse serve --model "$MODEL" --port "$PORT" --db "$DB" &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true' INT TERM

i=0
until curl -fs --max-time 2 "http://127.0.0.1:$PORT/health" >/dev/null \
        2>&1 && kill -0 "$SERVER" 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -gt 300 ] || ! kill -0 "$SERVER" 2>/dev/null; then
        echo "the server did not start; see the messages above" >&2
        exit 1
    fi
    sleep 0.1
done

# The key is made once the server runs, so a failed start leaves none.
KEY=$(./build/taphouse keys create --db "$DB" --tenant demo \
      --name quickstart | tail -n 1)

cat <<MSG

taphouse is serving $MODEL on http://127.0.0.1:$PORT
Your new API key (shown once): $KEY
Try it:

curl http://127.0.0.1:$PORT/v1/chat/completions \\
  -H "Authorization: Bearer $KEY" \\
  -H "Content-Type: application/json" \\
  -d '{"model": "stories260K-f32", "messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": 60}'

Press Ctrl-C to stop the server.
MSG
wait "$SERVER"
