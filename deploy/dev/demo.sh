#!/usr/bin/env bash
# Run the demo city: every part of ChargeMitra on this machine, until Ctrl-C.
#
# `make demo` calls this after deploy/dev/bootstrap.sh; `make demo SCENARIO=auto` plays the
# story unattended and exits 0 once the receipt is printed. deploy/dev/demo_site.py prepares
# .state/demo/ (broker config, TLS, keys, the cloud's environment; reused by the next run) and
# cloud/demo/runner.py (python -m cloud.demo) starts, seeds, pairs, prints the guide and, on
# Ctrl-C or SIGTERM, stops everything it started.
#
# Environment: CHARGEMITRA_DEMO_API_PORT (default 8000), CHARGEMITRA_DEMO_DB_URL (default the
# development database), SCENARIO (auto, or empty for the interactive demo).
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BIN="$ROOT/.venv/bin"
STATE_DIR="${CHARGEMITRA_DEMO_STATE_DIR:-$ROOT/.state/demo}"
DB_URL="${CHARGEMITRA_DEMO_DB_URL:-postgresql://chargemitra:chargemitra@127.0.0.1:5432/chargemitra}"

[[ -x $BIN/chargemitra-sim ]] || {
    echo "[demo] no $BIN/chargemitra-sim: run make bootstrap first" >&2
    exit 1
}
mkdir -p "$STATE_DIR"
PYTHONPATH="$ROOT" "$BIN/python" deploy/dev/demo_site.py "$STATE_DIR" "$DB_URL" >/dev/null
args=(--site "$STATE_DIR/site.json")
case "${SCENARIO:-}" in
    "") ;;
    auto) args+=(--scenario auto) ;;
    *)
        echo "[demo] SCENARIO must be auto or empty (got '$SCENARIO')" >&2
        exit 2
        ;;
esac
# exec: the runner is this process, so Ctrl-C and SIGTERM reach it directly.
PYTHONPATH="$ROOT" exec "$BIN/python" -m cloud.demo "${args[@]}"
