#!/usr/bin/env bash
# Start `listener dev` in the background, complete a booking with psql, show the
# pack's balance before and after, then stop the dev server (Ctrl-C does the same
# in a terminal). Needs `listener` (pip install session-ledger-listener) and psql.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# LISTENER may hold a command with arguments, e.g. "python -m listener". Without it: the
# `listener` on the PATH, else the one the README's first command installed in .venv.
default=listener
if ! command -v listener >/dev/null && [ -x "$here/../.venv/bin/listener" ]; then
    default="$here/../.venv/bin/listener"
fi
read -r -a listener <<<"${LISTENER:-$default}"
out=$(mktemp)

"${listener[@]}" dev >"$out" &
dev_pid=$!
trap 'kill -INT "$dev_pid" 2>/dev/null || true; wait "$dev_pid" || true; rm -f "$out"' EXIT

# The dev server prints DATABASE_URL=... once PGMQ, the demo schema and the ledger are in.
dsn=
for _ in $(seq 1 300); do
    dsn=$(sed -n 's/^DATABASE_URL=//p' "$out" | head -n 1)
    [ -n "$dsn" ] && break
    kill -0 "$dev_pid" 2>/dev/null || { cat "$out" >&2; echo "listener dev exited early" >&2; exit 1; }
    sleep 0.2
done
[ -n "$dsn" ] || { echo "listener dev did not print a DSN within 60 s" >&2; exit 1; }
echo "listener dev is up: $dsn"

psql "$dsn" -X -q -f "$here/complete_a_booking.sql"
