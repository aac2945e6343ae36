#!/usr/bin/env bash
# Run the demo: every part of ChargeMitra that exists, on this machine, until Ctrl-C.
#
# `make demo` calls this after deploy/dev/bootstrap.sh. Each part is started with
# `start_part NAME COMMAND...`: its output is prefixed with [NAME], and Ctrl-C (SIGINT) or
# SIGTERM stops every part and exits 0. If a part exits by itself, the others are stopped
# and the demo exits with that part's code.
#
# Today: the simulated site (`chargemitra-sim site`), when the simulator has that command.
# Adding the cloud is a few `start_part` lines in main(), e.g.:
#   broker_port=$(free_port)
#   start_part broker mosquitto -c deploy/mosquitto/cloud.conf -p "$broker_port"
#   start_part api "$BIN/chargemitra-cloud" api --port "$(free_port)"
#   start_part ingest "$BIN/chargemitra-cloud" ingest --broker "127.0.0.1:$broker_port"
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BIN="$ROOT/.venv/bin"
# Logs, databases and sockets of a demo run live here (.state/ is git-ignored).
STATE_DIR="$ROOT/.state/demo"
STOP_GRACE_S=10

PART_NAMES=()
PART_PIDS=()

log() { printf '[demo] %s\n' "$*" >&2; }

# A free TCP port on 127.0.0.1, chosen by the kernel.
free_port() {
    "$BIN/python" -c 'import socket
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])'
}

start_part() {
    local name=$1
    shift
    # Process substitution keeps $! the part's own pid (not a pipeline's last stage).
    "$@" > >(sed -u "s/^/[$name] /") 2> >(sed -u "s/^/[$name] /" >&2) &
    PART_NAMES+=("$name")
    PART_PIDS+=("$!")
    log "started $name (pid $!): $*"
}

# Stop every part still running: SIGTERM, then SIGKILL after STOP_GRACE_S.
stop_parts() {
    local pid deadline=$((SECONDS + STOP_GRACE_S))
    for pid in "${PART_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PART_PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

on_signal() {
    trap - INT TERM
    log "stopping (signal)"
    stop_parts
    log "stopped"
    exit 0
}

# Wait until one part exits; then stop the rest and exit with its status.
supervise() {
    local rc=0 i
    if ((${#PART_PIDS[@]} == 0)); then
        return 0
    fi
    wait -n "${PART_PIDS[@]}" || rc=$?
    for i in "${!PART_PIDS[@]}"; do
        if ! kill -0 "${PART_PIDS[$i]}" 2>/dev/null; then
            log "${PART_NAMES[$i]} exited with status $rc; stopping the others"
            break
        fi
    done
    trap - INT TERM
    stop_parts
    return "$rc"
}

main() {
    [[ -x $BIN/chargemitra-sim ]] || {
        log "no $BIN/chargemitra-sim: run make bootstrap first"
        exit 1
    }
    mkdir -p "$STATE_DIR"
    trap on_signal INT TERM

    if "$BIN/chargemitra-sim" site --help >/dev/null 2>&1; then
        start_part sim "$BIN/chargemitra-sim" site
    else
        log "the simulator has no 'site' command yet; this is what it offers:"
        "$BIN/chargemitra-sim" --help >&2
    fi
    # The cloud (broker, API, ingest) starts here once it exists: see the header.

    if ((${#PART_PIDS[@]} == 0)); then
        log "nothing to run yet; exiting"
        exit 0
    fi
    log "running; press Ctrl-C to stop"
    supervise
}

# Sourcing the file (to try one function) defines the functions without running them.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
