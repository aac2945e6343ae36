#!/usr/bin/env bash
# One idempotent setup for a development or CI machine (Debian/Ubuntu, run as root).
#
# What it does, one line of output per step:
#   1. packages  installs the Debian packages the project needs, if any are missing
#   2. postgres  creates a cluster if there is none, starts it if it is not running
#   3. database  role `chargemitra` (password `chargemitra`, LOGIN CREATEDB), databases
#                `chargemitra`, `chargemitra_test` and `chargemitra_test_2` (make test's second
#                worker), extensions btree_gist, cube, earthdistance
#   4. redis     starts redis-server on 127.0.0.1:6379 if nothing answers there
#   5. python    finds a python3 >= 3.11
#   6. venv      creates .venv (recreates it if it is broken)
#   7. uv        installs the pinned uv into .venv
#   8. deps      installs requirements/dev.lock (byte-compiled) and the project (editable),
#                skipped when the stamp in .venv records the same inputs
#   9. bytecode  compiles the project's own modules (only what changed since the last run)
#  10. web       axe-core (the accessibility checker the browser tests inject), Leaflet (the
#                search page's map, served by the app) and ocpp-rpc (the strict CSMS of the OCPP
#                uplink tests) from the npm registry into .cache/npm, the Compose
#                specification's JSON schema (from the dclint package) into .cache/compose-spec,
#                and the pages' gettext catalogues compiled (.mo)
#
# Mosquitto is installed but not started: tests start their own broker on a free port.
# Re-running is cheap: every step checks before it acts. docs/development.md has the details.
#
# Environment:
#   CHARGEMITRA_PYTHON  interpreter for .venv (default: python3 on PATH)
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

# uv itself is not in a lock file (it installs the lock files): pin it here. The stamp
# includes it, so changing this pin reinstalls the dependencies with the new uv.
UV_VERSION="0.13.9"
PYTHON="${CHARGEMITRA_PYTHON:-python3}"
VENV="$ROOT/.venv"
STAMP="$VENV/.chargemitra-bootstrap"
# fonts-dejavu-core: the invoice PDF's font (it has the rupee sign); poppler-utils: the PDF tests.
# chromium, chromium-driver: Debian's browser, which the page tests drive through Playwright
# (never `playwright install`: the browser comes from Debian); fonts-lohit-deva: Devanagari for
# the hi-IN pages. systemd (systemd-analyze verify), debootstrap: the deploy tests check the unit
# files and run the Pi installer in a bookworm root; iproute2, iptables: the end-to-end chaos
# tests partition agent and broker with a network namespace they make and remove themselves.
APT_PACKAGES=(postgresql postgresql-contrib mosquitto mosquitto-clients redis-server socat tmux
    fonts-dejavu-core poppler-utils chromium chromium-driver fonts-lohit-deva
    systemd debootstrap iproute2 iptables)
# axe-core for the page tests, pinned; installed under .cache/npm (ignored by git).
AXE_CORE_VERSION="4.10.3"
# Leaflet for the search page's map, pinned; served by the app from .cache/npm (never a CDN).
LEAFLET_VERSION="1.9.4"
# ocpp-rpc, the strict OCPP 1.6 CSMS the agent's OCPP uplink is tested against
# (tests/edge/ocpp_rpc_csms.js), pinned.
OCPP_RPC_VERSION="2.2.1"
# The Compose specification's JSON schema, as dclint (a compose linter) ships it: the deploy
# tests validate deploy/cloud/compose.yaml against it. Only the schema is unpacked.
DCLINT_VERSION="3.1.0"
COMPOSE_SCHEMA="$ROOT/.cache/compose-spec/dclint-$DCLINT_VERSION/compose.schema.json"
NPM_CACHE_DIR="$ROOT/.cache/npm"
PG_ROLE="chargemitra"
PG_PASSWORD="chargemitra"
# One test database per make test worker (Makefile TEST_WORKERS, tests/support/cloud_env.py).
PG_DATABASES=(chargemitra chargemitra_test chargemitra_test_2)
PG_EXTENSIONS=(btree_gist cube earthdistance)
PG_SOCKET_DIR="/var/run/postgresql"
REDIS_PORT=6379
export DEBIAN_FRONTEND=noninteractive
# Quiet "extension already exists, skipping" notices: a second run should print one line a step.
export PGOPTIONS="-c client_min_messages=warning"

STEP="start"
STEP_STARTED="$EPOCHREALTIME"
BOOTSTRAP_STARTED="$EPOCHREALTIME"

log() { printf '[bootstrap] %s\n' "$*" >&2; }

on_error() {
    local rc=$1 line=$2
    printf '[bootstrap] FAILED at step "%s" (line %s, exit code %s)\n' "$STEP" "$line" "$rc" >&2
}
trap 'on_error $? $LINENO' ERR

die() {
    printf '[bootstrap] FAILED at step "%s": %s\n' "$STEP" "$*" >&2
    trap - ERR
    exit 1
}

step() {
    STEP="$1"
    STEP_STARTED="$EPOCHREALTIME"
}

# Print the step's one line with how long it took.
done_step() {
    local ms
    ms=$(elapsed_ms "$STEP_STARTED")
    log "$STEP: $* (${ms} ms)"
}

elapsed_ms() {
    local start=$1 now=$EPOCHREALTIME
    # EPOCHREALTIME is "seconds.microseconds"; integer arithmetic on microseconds.
    echo $(((${now/./} - ${start/./}) / 1000))
}

is_root() { [[ $EUID -eq 0 ]]; }

# Two bootstraps at once (make -j, two shells) would race on .venv: take a per-checkout lock.
lock_bootstrap() {
    local key lock_file
    key=$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)
    lock_file="${TMPDIR:-/tmp}/chargemitra-bootstrap-$key.lock"
    exec 9>"$lock_file"
    if ! flock -n 9; then
        log "lock: another bootstrap of $ROOT is running; waiting for it"
        flock -w 900 9 || die "gave up waiting for $lock_file"
    fi
}

# --- 1. Debian packages ------------------------------------------------------------------

is_installed() {
    [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null || true) == "ii"* ]]
}

python_needs_packages() {
    # A Debian/Ubuntu system python needs python3-venv for `python3 -m venv`; a pyenv or
    # other python brings its own venv and ensurepip.
    local py_path
    py_path=$(command -v "$PYTHON" || true)
    if [[ -z $py_path ]]; then
        [[ $PYTHON == python3 ]] && echo "python3 python3-venv"
        return 0
    fi
    case "$(readlink -f "$py_path")" in
    /usr/bin/python3*) echo "python3-venv" ;;
    esac
}

ensure_packages() {
    step "packages"
    command -v dpkg-query >/dev/null || die "dpkg-query not found: this script supports Debian/Ubuntu only"
    local wanted=("${APT_PACKAGES[@]}") missing=() pkg extra
    extra=$(python_needs_packages)
    # shellcheck disable=SC2206  # word splitting of a space-separated package list is intended
    [[ -n $extra ]] && wanted+=($extra)
    for pkg in "${wanted[@]}"; do
        is_installed "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        done_step "all ${#wanted[@]} present"
        return
    fi
    is_root || die "missing packages (${missing[*]}) and not root: run as root or install them"
    log "packages: installing ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    done_step "installed ${missing[*]}"
}

# --- 2. PostgreSQL -----------------------------------------------------------------------

PG_VERSION=""
PG_PORT=""

pg_status() { pg_lsclusters -h "$PG_VERSION" main 2>/dev/null | awk '{print $4}'; }

ensure_postgres() {
    step "postgres"
    local actions=()
    PG_VERSION=$(find /etc/postgresql -mindepth 2 -maxdepth 2 -name main -printf '%P\n' 2>/dev/null |
        cut -d/ -f1 | sort -V | tail -n1)
    if [[ -z $PG_VERSION ]]; then
        PG_VERSION=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null |
            sort -V | tail -n1)
        [[ -n $PG_VERSION ]] || die "no PostgreSQL server under /usr/lib/postgresql"
        is_root || die "no PostgreSQL cluster and not root: cannot create one"
        pg_createcluster "$PG_VERSION" main >/dev/null
        actions+=("created cluster")
    fi
    if [[ $(pg_status) != online ]]; then
        is_root || die "PostgreSQL $PG_VERSION/main is not running and not root: cannot start it"
        pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main start
        actions+=("started")
    fi
    PG_PORT=$(pg_lsclusters -h "$PG_VERSION" main | awk '{print $3}')
    local tries=0
    until pg_isready -q -h "$PG_SOCKET_DIR" -p "$PG_PORT"; do
        ((++tries <= 60)) || die "PostgreSQL $PG_VERSION/main did not accept connections in 30 s"
        sleep 0.5
    done
    if [[ $PG_PORT != 5432 ]]; then
        log "postgres: note: cluster listens on port $PG_PORT, tests default to 5432;" \
            "set CHARGEMITRA_TEST_DATABASE_URL"
    fi
    local summary="already running"
    ((${#actions[@]} == 0)) || summary=$(IFS=,; echo "${actions[*]}")
    done_step "$PG_VERSION/main on port $PG_PORT, ${summary//,/, }"
}

# --- 3. role, databases, extensions ------------------------------------------------------

PG_SUPER_MODE=""

# psql as the postgres superuser: directly where local auth is trust (this image), through
# runuser where it is peer (a fresh Debian install). -w: never prompt for a password.
psql_super() {
    local args=(-X -w -q -A -t -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" -p "$PG_PORT")
    case "$PG_SUPER_MODE" in
    direct) psql "${args[@]}" -U postgres "$@" ;;
    # cd /: the postgres user may not be able to read the current directory.
    runuser) (cd / && runuser -u postgres -- psql "${args[@]}" "$@") ;;
    *) die "internal: superuser access not detected" ;;
    esac
}

detect_pg_super() {
    PG_SUPER_MODE=direct
    if psql_super -d postgres -c 'select 1' >/dev/null 2>&1; then return; fi
    PG_SUPER_MODE=runuser
    if is_root && psql_super -d postgres -c 'select 1' >/dev/null 2>&1; then return; fi
    PG_SUPER_MODE=""
    die "cannot connect to PostgreSQL as superuser 'postgres' (tried psql -U postgres and" \
        "runuser -u postgres): fix local auth in pg_hba.conf or run as root"
}

ensure_database() {
    step "database"
    detect_pg_super
    local did=() db ext owner
    if [[ -z $(psql_super -d postgres -c "select 1 from pg_roles where rolname = '$PG_ROLE'") ]]; then
        psql_super -d postgres -c \
            "create role $PG_ROLE login createdb password '$PG_PASSWORD'"
        did+=("created role $PG_ROLE")
    else
        # Cheap, and repairs a role someone altered by hand.
        psql_super -d postgres -c "alter role $PG_ROLE login createdb password '$PG_PASSWORD'"
    fi
    for db in "${PG_DATABASES[@]}"; do
        owner=$(psql_super -d postgres -c \
            "select pg_get_userbyid(datdba) from pg_database where datname = '$db'")
        if [[ -z $owner ]]; then
            psql_super -d postgres -c "create database $db owner $PG_ROLE"
            did+=("created database $db")
        elif [[ $owner != "$PG_ROLE" ]]; then
            psql_super -d postgres -c "alter database $db owner to $PG_ROLE"
            did+=("gave $db to $PG_ROLE")
        fi
        for ext in "${PG_EXTENSIONS[@]}"; do
            psql_super -d "$db" -c "create extension if not exists $ext cascade"
        done
    done
    # Prove what the tests will do: password login over TCP as the project's role.
    PGPASSWORD="$PG_PASSWORD" psql -X -w -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" \
        -U "$PG_ROLE" -d chargemitra_test -c 'select 1' >/dev/null ||
        die "role $PG_ROLE cannot log in to chargemitra_test over TCP at 127.0.0.1:$PG_PORT" \
            "(check pg_hba.conf)"
    local summary="role $PG_ROLE, databases ${PG_DATABASES[*]}, extensions ${PG_EXTENSIONS[*]}"
    if ((${#did[@]} > 0)); then
        local joined
        joined=$(printf '%s, ' "${did[@]}")
        done_step "${joined%, }; $summary"
    else
        done_step "present: $summary"
    fi
}

# --- 4. Redis ----------------------------------------------------------------------------

redis_answers() {
    [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null || true) == PONG ]]
}

ensure_redis() {
    step "redis"
    if redis_answers; then
        done_step "already answering on 127.0.0.1:$REDIS_PORT"
        return
    fi
    mkdir -p /var/lib/redis /var/log/redis
    # Nothing on disk: dev and test data is disposable.
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
        --save "" --appendonly no --dir /var/lib/redis \
        --logfile /var/log/redis/chargemitra-dev.log
    local tries=0
    until redis_answers; do
        ((++tries <= 40)) || die "redis-server did not answer on 127.0.0.1:$REDIS_PORT in 10 s"
        sleep 0.25
    done
    done_step "started on 127.0.0.1:$REDIS_PORT"
}

# --- 5-8. Python, .venv, uv, dependencies ------------------------------------------------

python_ok() {
    "$1" -c 'import sys; raise SystemExit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null
}

ensure_python() {
    step "python"
    command -v "$PYTHON" >/dev/null || die "'$PYTHON' not found; install Python >= 3.11" \
        "or set CHARGEMITRA_PYTHON"
    if ! python_ok "$PYTHON"; then
        die "Python >= 3.11 is required, but $PYTHON is" \
            "$("$PYTHON" -c 'import sys; print(sys.version.split()[0])' 2>&1);" \
            "set CHARGEMITRA_PYTHON=/path/to/python3.11 (or newer)"
    fi
    done_step "$("$PYTHON" -c 'import sys; print(sys.version.split()[0], sys.executable)')"
}

ensure_venv() {
    step "venv"
    if [[ -x $VENV/bin/python ]] && python_ok "$VENV/bin/python"; then
        done_step "present ($VENV)"
        return
    fi
    local action="created"
    if [[ -e $VENV ]]; then
        log "venv: $VENV is broken or too old; recreating it"
        rm -rf "$VENV"
        action="recreated"
    fi
    "$PYTHON" -m venv "$VENV"
    done_step "$action $VENV"
}

ensure_uv() {
    step "uv"
    if [[ $("$VENV/bin/uv" --version 2>/dev/null || true) == "uv $UV_VERSION"* ]]; then
        done_step "uv $UV_VERSION present"
        return
    fi
    "$VENV/bin/python" -m pip install -qq --disable-pip-version-check "uv==$UV_VERSION"
    done_step "installed uv $UV_VERSION"
}

deps_hash() {
    {
        echo "uv $UV_VERSION, compile-bytecode"
        "$VENV/bin/python" -c 'import sys; print(sys.version)'
        cat pyproject.toml requirements/*.lock
    } | sha256sum | cut -d' ' -f1
}

ensure_deps() {
    step "deps"
    local want script scripts_ok=1
    want=$(deps_hash)
    for script in chargemitra-agent chargemitra-cloud chargemitra-sim; do
        [[ -x $VENV/bin/$script ]] || scripts_ok=0
    done
    if [[ -f $STAMP && $(<"$STAMP") == "$want" && $scripts_ok == 1 ]]; then
        done_step "up to date (stamp matches pyproject.toml + requirements/*.lock)"
        return
    fi
    local uv=("$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python")
    # Byte-compiled, as pip installs them on a Pi: with PYTHONDONTWRITEBYTECODE set (this
    # machine sets it) every process would otherwise compile each module from source at
    # import, which costs start-up time and leaves MiBs of compiler garbage in the agent's
    # heap -- the agent's memory figure would measure the install, not the agent.
    "${uv[@]}" --compile-bytecode -r requirements/dev.lock
    "${uv[@]}" --no-deps -e .
    echo "$want" >"$STAMP"
    done_step "installed requirements/dev.lock and the project (editable)"
}

ensure_bytecode() {
    step "bytecode"
    # Editable install: the project's modules are imported from the checkout. compileall
    # rewrites only the .pyc files whose source changed; a stale one is never used (Python
    # checks the source's mtime and size).
    "$VENV/bin/python" -m compileall -q -j 0 protocols edge_agent cloud firmware_sim >/dev/null
    done_step "protocols, edge_agent, cloud, firmware_sim compiled"
}

# --- 10. the pages' assets ---------------------------------------------------------------

ensure_web() {
    step "web"
    local did=() axe="$NPM_CACHE_DIR/node_modules/axe-core"
    if ! command -v npm >/dev/null; then
        # Debian's npm brings nodejs; a machine with another node (NodeSource) has npm already.
        is_root || die "npm is missing and not root: install npm"
        apt-get install -y -qq --no-install-recommends npm >/dev/null
        did+=("installed npm")
    fi
    local leaflet="$NPM_CACHE_DIR/node_modules/leaflet" rpc="$NPM_CACHE_DIR/node_modules/ocpp-rpc"
    if [[ $(node -p "require('$axe/package.json').version" 2>/dev/null || true) != "$AXE_CORE_VERSION" ||
          $(node -p "require('$leaflet/package.json').version" 2>/dev/null || true) != "$LEAFLET_VERSION" ||
          $(node -p "require('$rpc/package.json').version" 2>/dev/null || true) != "$OCPP_RPC_VERSION" ]]; then
        mkdir -p "$NPM_CACHE_DIR"
        # All in one command: npm prunes what a later --no-save install does not name.
        npm install --silent --no-audit --no-fund --no-save --prefix "$NPM_CACHE_DIR" \
            "axe-core@$AXE_CORE_VERSION" "leaflet@$LEAFLET_VERSION" \
            "ocpp-rpc@$OCPP_RPC_VERSION" >/dev/null
        did+=("installed axe-core $AXE_CORE_VERSION, leaflet $LEAFLET_VERSION, ocpp-rpc $OCPP_RPC_VERSION")
    fi
    if [[ ! -f $COMPOSE_SCHEMA ]]; then
        local tmp
        tmp=$(mktemp -d)
        (cd "$tmp" && npm pack --silent "dclint@$DCLINT_VERSION" >/dev/null)
        tar -xzf "$tmp/dclint-$DCLINT_VERSION.tgz" -C "$tmp" package/schemas/compose.schema.json
        mkdir -p "$(dirname "$COMPOSE_SCHEMA")"
        mv "$tmp/package/schemas/compose.schema.json" "$COMPOSE_SCHEMA"
        rm -rf "$tmp"
        did+=("compose schema (dclint $DCLINT_VERSION)")
    fi
    # The .mo files are committed; compiling again keeps them in step with an edited .po.
    local out
    out=$("$VENV/bin/pybabel" compile -d cloud/web/translations -D messages 2>&1) ||
        die "pybabel compile failed: $out"
    ((${#did[@]} > 0)) ||
        did=("axe-core $AXE_CORE_VERSION, leaflet $LEAFLET_VERSION, ocpp-rpc $OCPP_RPC_VERSION present")
    done_step "$(IFS=,; echo "${did[*]}"), catalogues compiled"
}

main() {
    lock_bootstrap
    ensure_packages
    ensure_postgres
    ensure_database
    ensure_redis
    ensure_python
    ensure_venv
    ensure_uv
    ensure_deps
    ensure_bytecode
    ensure_web
    STEP="done"
    log "done in $(elapsed_ms "$BOOTSTRAP_STARTED") ms"
}

# Sourcing the file (for a test of one step) defines the functions without running them.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
