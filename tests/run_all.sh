#!/bin/sh
# Run every unit test binary, then the end-to-end tests, and finish with
# one line that counts passed and failed tests across both.
set -u
BUILD=${BUILD:-build}
passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    echo "== $t"
    "$t" >"$log" 2>&1
    rc=$?
    cat "$log"
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" |
        awk '{s+=$1} END {print s+0}')
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" |
        awk '{s+=$1} END {print s+0}')
    # A binary that crashed or exited non-zero without reporting a
    # failure still counts as one failure.
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
done

echo "== end-to-end tests (tests/e2e)"
TAPHOUSE_BIN="$(pwd)/$BUILD/taphouse"
export TAPHOUSE_BIN
(cd tests/e2e && node --test --test-concurrency=1 --test-reporter=tap \
    ./*.test.mjs) >"$log" 2>&1
rc=$?
cat "$log"
p=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$log" | tail -n 1)
f=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$log" | tail -n 1)
p=${p:-0}
f=${f:-0}
if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    f=1
fi
passed=$((passed + p))
failed=$((failed + f))

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
