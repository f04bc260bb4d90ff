#!/bin/sh
# Install the Debian and npm packages that building and testing taphouse
# need. Safe to run again: it installs only what is missing.
set -eu

PKGS="build-essential pkg-config libmicrohttpd-dev libcjson-dev \
libsqlite3-dev sqlite3 libsodium-dev libncurses-dev libcmocka-dev \
tmux curl python3 jq time iproute2"
# A machine may carry Node.js from another packaging; install Debian's
# only when there is none.
command -v node >/dev/null 2>&1 || PKGS="$PKGS nodejs"
command -v npm >/dev/null 2>&1 || PKGS="$PKGS npm"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
            grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing:$missing"
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi

# The end-to-end tests drive the server with the official openai SDK,
# pinned by tests/e2e/package-lock.json.
cd "$(dirname "$0")/../tests/e2e"
if [ ! -d node_modules/openai ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi
