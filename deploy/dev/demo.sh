#!/usr/bin/env bash
# Run the demo: every part of ChargeMitra that exists, on this machine, until Ctrl-C.
#
# `make demo` calls this after deploy/dev/bootstrap.sh. Each part is started with
# `start_part NAME COMMAND...`: its output is prefixed with [NAME], and Ctrl-C (SIGINT) or
# SIGTERM stops every part and exits 0. If a part exits by itself, the others are stopped
# and the demo exits with that part's code.
#
# Parts: the cloud broker (the project's config, TLS for the device), a simulated site (SDM630
# + coil relay + a 7.4 kW EV plugged in) on Modbus TCP, cloud ingest, the cloud API, and the
# edge agent syncing to the broker. deploy/dev/demo_site.py writes their configuration.
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

    # Broker config, TLS, credentials, agent config, cloud environment: all in $STATE_DIR.
    eval "$(PYTHONPATH="$ROOT" "$BIN/python" deploy/dev/demo_site.py "$STATE_DIR")"
    set -a
    # shellcheck source=/dev/null
    source "$CLOUD_ENV"
    set +a
    log "migrating the dev database"
    "$BIN/chargemitra-cloud" db upgrade >&2
    log "demo accounts (driver, host, admin, technician; a new password each run) and the"
    log "demo site's listing (the agent below is its device):"
    "$BIN/chargemitra-cloud" seed-demo --device "$DEVICE_ID" --pin-secret-file "$PIN_SECRET_FILE" >&2

    start_part broker /usr/sbin/mosquitto -c "$BROKER_CONF"
    start_part sim "$BIN/chargemitra-sim" site --tcp "127.0.0.1:$SIM_PORT" --no-serial \
        --control "$SIM_CONTROL" --state "$STATE_DIR/sim.json" --plugged 7.4kw
    start_part ingest "$BIN/chargemitra-cloud" ingest
    # The API sends commands as cloud-api (the ACL's command sender); assignments before a
    # function call reach only its children, and keep the password out of the log line.
    CHARGEMITRA_MQTT_USERNAME=cloud-api CHARGEMITRA_MQTT_PASSWORD="$API_MQTT_PASSWORD" \
        start_part api "$BIN/chargemitra-cloud" serve --port "$API_PORT"
    start_part agent "$BIN/chargemitra-agent" run --config "$AGENT_CONF"
    log "API:        http://127.0.0.1:$API_PORT/readyz"
    log "simulator:  $BIN/chargemitra-sim --control http://$SIM_CONTROL state"
    log "agent:      device $DEVICE_ID, config $AGENT_CONF, store $STATE_DIR/agent.db"
    log "live data:  redis-cli subscribe cm:live:device:$DEVICE_ID"
    log "marketplace: log in as driver@demo.chargemitra.in at http://127.0.0.1:$API_PORT/docs,"
    log "             search GET /chargers?lat=12.935&lon=77.624&radius_km=5, then book and unlock"

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
