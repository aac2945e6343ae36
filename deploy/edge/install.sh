#!/usr/bin/env bash
# Install (or update) the ChargeMitra edge agent on Raspberry Pi OS / Debian bookworm, as root.
#
#   install.sh [--wheel FILE] [--lock FILE] [--find-links DIR]
#              [--code CODE --cloud URL [--ca-file FILE]]
#
# One line of output per step; every step checks before it acts, so a second run with the
# same inputs changes nothing on disk (tests/deploy/test_edge_install.py compares a manifest
# of the whole root before and after it). What it does:
#   1. packages   python3, python3-venv (and a compiler and headers when wheels come from
#                 the package index: evdev ships only a source archive)
#   2. user       system user `chargemitra` in dialout (RS-485) and gpio (relay board)
#   3. dirs       /etc/chargemitra (root:chargemitra 0750: the agent cannot replace
#                 agent.toml), /etc/chargemitra/cloud (chargemitra 0700: what provisioning
#                 writes), /var/lib/chargemitra (the store, chargemitra 0750), /opt/chargemitra
#   4. venv       /opt/chargemitra/venv (the wheel, when not given, built by its own pip:
#                 Debian's python3 has no pip) with `pip install '<wheel>[edge]'` constrained by
#                 requirements/edge.lock; skipped when the stamp records the same wheel
#                 contents, lock and interpreter
#   5. config     /etc/chargemitra/agent.toml from agent.toml.example, only if absent
#   6. udev       70-chargemitra-rs485.rules: stable /dev/rs485/... names for USB adapters
#   7. units      chargemitra-agent.service installed and enabled (chargemitra-bridge.service
#                 too, not enabled: a site that bridges through a local broker sets it up
#                 as deploy/edge/README.md says)
#   8. provision  the pairing code (--code, or asked on a terminal) through
#                 `chargemitra-agent provision`, run as the agent's user into
#                 /etc/chargemitra/cloud; root then installs its cloud.toml as
#                 /etc/chargemitra/cloud.toml (root:chargemitra 0640); skipped once that
#                 exists (a pairing code is single use)
#   9. service    (re)started when systemd runs and something changed
#
# --wheel: the project's wheel (default: built from the checkout this script is in).
# --lock: the lock file (default: requirements/edge.lock of that checkout, else beside the
# wheel). --find-links DIR: install offline from the wheels in DIR (no package index).
# Uninstall: deploy/edge/uninstall.sh. deploy/edge/README.md has the walk-through.
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CHECKOUT="$(cd "$HERE/../.." && pwd)"

AGENT_USER="chargemitra"
PREFIX="/opt/chargemitra"
VENV="$PREFIX/venv"
STAMP="$VENV/.chargemitra-install"
CONFIG_DIR="/etc/chargemitra"
# Provisioning (run as the agent's user) writes here; the secrets stay here, the overlay is
# copied up by root so the agent's user can change neither agent.toml nor cloud.toml.
CLAIM_DIR="$CONFIG_DIR/cloud"
STATE_DIR="/var/lib/chargemitra"
UNIT_DIR="/etc/systemd/system"
UDEV_RULE="/etc/udev/rules.d/70-chargemitra-rs485.rules"
export DEBIAN_FRONTEND=noninteractive

WHEEL=""
LOCK=""
FIND_LINKS=""
CODE=""
CLOUD=""
CA_FILE=""
CHANGED=0
STEP="start"
WORK_DIR=""

log() { printf '[install] %s\n' "$*" >&2; }
die() {
    printf '[install] FAILED at step "%s": %s\n' "$STEP" "$*" >&2
    exit 1
}
trap 'printf "[install] FAILED at step \"%s\" (line %s, exit code %s)\n" "$STEP" "$LINENO" "$?" >&2' ERR
# The wheel built from the checkout goes to a temporary directory: removed however we exit.
trap '[[ -z $WORK_DIR ]] || rm -rf -- "$WORK_DIR"' EXIT

usage() { sed -n '2,35p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

parse_args() {
    while (($#)); do
        case "$1" in
        --wheel) WHEEL="${2:?--wheel needs a file}"; shift 2 ;;
        --lock) LOCK="${2:?--lock needs a file}"; shift 2 ;;
        --find-links) FIND_LINKS="${2:?--find-links needs a directory}"; shift 2 ;;
        --code) CODE="${2:?--code needs the pairing code}"; shift 2 ;;
        --cloud) CLOUD="${2:?--cloud needs a URL}"; shift 2 ;;
        --ca-file) CA_FILE="${2:?--ca-file needs a file}"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
        esac
    done
}

is_installed() { [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null || true) == "ii"* ]]; }
systemd_running() { [[ -d /run/systemd/system ]]; }

# Copy $1 to $2 with owner/group/mode, only when the content or metadata differ (install -C
# leaves an identical destination untouched, mtime included). Sets CHANGED, returns 0 if
# it wrote.
put_file() {
    local src=$1 dest=$2 owner=$3 group=$4 mode=$5
    if [[ -f $dest ]] && cmp -s "$src" "$dest" &&
        [[ $(stat -c '%U:%G %a' "$dest") == "$owner:$group ${mode#0}" ]]; then
        return 1
    fi
    install -D -o "$owner" -g "$group" -m "$mode" "$src" "$dest"
    CHANGED=1
    return 0
}

# A directory with exactly this owner and mode (created if missing, left alone if right).
put_dir() {
    local dir=$1 owner=$2 group=$3 mode=$4
    if [[ -d $dir && $(stat -c '%U:%G %a' "$dir") == "$owner:$group ${mode#0}" ]]; then
        return 1
    fi
    install -d -o "$owner" -g "$group" -m "$mode" "$dir"
    return 0
}

# --- 1. packages ---------------------------------------------------------------------------

ensure_packages() {
    STEP="packages"
    local wanted=(python3 python3-venv) missing=() pkg
    # evdev (HID readers) is published as a source archive only: building it needs these.
    [[ -z $FIND_LINKS ]] && wanted+=(python3-dev gcc)
    for pkg in "${wanted[@]}"; do
        is_installed "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        log "packages: all ${#wanted[@]} present (${wanted[*]})"
        return
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    log "packages: installed ${missing[*]}"
}

# --- 2. user ------------------------------------------------------------------------------

ensure_user() {
    STEP="user"
    local did=() group
    # Raspberry Pi OS has gpio (the GPIO character devices' group); plain Debian does not.
    for group in dialout gpio; do
        if ! getent group "$group" >/dev/null; then
            groupadd --system "$group"
            did+=("created group $group")
        fi
    done
    if ! getent group "$AGENT_USER" >/dev/null; then
        groupadd --system "$AGENT_USER"
        did+=("created group $AGENT_USER")
    fi
    if ! id -u "$AGENT_USER" >/dev/null 2>&1; then
        useradd --system --gid "$AGENT_USER" --groups dialout,gpio --home-dir "$STATE_DIR" \
            --no-create-home --shell /usr/sbin/nologin --comment "ChargeMitra edge agent" \
            "$AGENT_USER"
        did+=("created user $AGENT_USER")
    fi
    for group in dialout gpio; do
        if ! id -nG "$AGENT_USER" | tr ' ' '\n' | grep -qx "$group"; then
            usermod -a -G "$group" "$AGENT_USER"
            did+=("added $AGENT_USER to $group")
        fi
    done
    if ((${#did[@]})); then
        log "user: $(IFS=,; echo "${did[*]}" | sed 's/,/, /g')"
    else
        log "user: $AGENT_USER present, in dialout and gpio"
    fi
}

# --- 3. directories -----------------------------------------------------------------------

ensure_dirs() {
    STEP="dirs"
    local did=()
    # 0750: the agent's user reads agent.toml but cannot rename or delete it (a group-writable
    # directory would let it). It writes only through `provision`, into $CLAIM_DIR; at run
    # time systemd's ProtectSystem=strict makes /etc read-only to the daemon anyway.
    put_dir "$CONFIG_DIR" root "$AGENT_USER" 0750 && did+=("$CONFIG_DIR")
    put_dir "$CLAIM_DIR" "$AGENT_USER" "$AGENT_USER" 0700 && did+=("$CLAIM_DIR")
    put_dir "$STATE_DIR" "$AGENT_USER" "$AGENT_USER" 0750 && did+=("$STATE_DIR")
    put_dir "$PREFIX" root root 0755 && did+=("$PREFIX")
    if ((${#did[@]})); then
        log "dirs: set up ${did[*]}"
    else
        log "dirs: $CONFIG_DIR, $CLAIM_DIR, $STATE_DIR, $PREFIX present with their owners"
    fi
}

# --- 4. the virtualenv --------------------------------------------------------------------

build_wheel() {
    # From the checkout this script lives in, by the venv's own pip (python3-venv brings it
    # through ensurepip; Debian's and Pi OS's python3 has no pip of its own). It builds with
    # setuptools fetched from the package index.
    [[ -f $CHECKOUT/pyproject.toml ]] || die "no --wheel given and $CHECKOUT is not a checkout"
    WORK_DIR=$(mktemp -d)
    "$VENV/bin/python" -m pip wheel --quiet --disable-pip-version-check --no-deps \
        --wheel-dir "$WORK_DIR" "$CHECKOUT" >/dev/null ||
        die "could not build a wheel from $CHECKOUT (pass --wheel FILE)"
    WHEEL=$(find "$WORK_DIR" -name 'chargemitra-*.whl' | head -n1)
    [[ -n $WHEEL ]] || die "pip built no chargemitra wheel from $CHECKOUT"
}

# What the install depends on: the files inside the wheel (its RECORD hashes every one, so
# a rebuilt wheel of the same source gives the same stamp), the lock, the interpreter.
install_stamp() {
    {
        python3 - "$WHEEL" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    record = next(n for n in wheel.namelist() if n.endswith(".dist-info/RECORD"))
    sys.stdout.write(wheel.read(record).decode())
PY
        cat "$LOCK"
        python3 -c 'import sys; print(sys.version)'
    } | sha256sum | cut -d' ' -f1
}

ensure_venv() {
    STEP="venv"
    [[ -z $WHEEL || -f $WHEEL ]] || die "wheel $WHEEL not found"
    if [[ -z $LOCK ]]; then
        if [[ -f $CHECKOUT/requirements/edge.lock ]]; then
            LOCK="$CHECKOUT/requirements/edge.lock"
        else
            LOCK="$(dirname "$WHEEL")/edge.lock"
        fi
    fi
    [[ -f $LOCK ]] || die "lock file $LOCK not found (pass --lock requirements/edge.lock)"
    local action="" want
    if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c '' 2>/dev/null; then
        rm -rf "$VENV"
        # System site packages stay visible: Raspberry Pi OS ships gpiozero and lgpio (the
        # GPIO relay driver) as Debian packages; the venv's own pins still come first.
        python3 -m venv --system-site-packages "$VENV"
        action="created $VENV, "
    fi
    if [[ -z $WHEEL ]]; then
        build_wheel
    fi
    want=$(install_stamp)
    if [[ -f $STAMP && $(<"$STAMP") == "$want" ]]; then
        log "venv: ${action}up to date ($(basename "$WHEEL"), $(basename "$LOCK"))"
        return
    fi
    local pip=("$VENV/bin/pip" install --quiet --disable-pip-version-check --constraint "$LOCK")
    [[ -n $FIND_LINKS ]] && pip+=(--no-index --find-links "$FIND_LINKS")
    "${pip[@]}" "$WHEEL[edge]"
    if [[ -z $action ]]; then
        # An update: the wheel of a newer commit may carry the same version number, which
        # pip would call "already installed".
        "${pip[@]}" --no-deps --force-reinstall "$WHEEL"
    fi
    printf '%s\n' "$want" >"$STAMP"
    CHANGED=1
    log "venv: ${action}installed $(basename "$WHEEL")[edge] with $(basename "$LOCK")"
}

# --- 5. configuration ---------------------------------------------------------------------

ensure_config() {
    STEP="config"
    local conf="$CONFIG_DIR/agent.toml"
    if [[ -e $conf ]]; then
        log "config: $conf present (never overwritten)"
        return
    fi
    install -o root -g "$AGENT_USER" -m 0640 "$HERE/agent.toml.example" "$conf"
    CHANGED=1
    log "config: wrote $conf from agent.toml.example: edit it for the site"
}

# --- 6. udev ------------------------------------------------------------------------------

ensure_udev() {
    STEP="udev"
    if put_file "$HERE/70-chargemitra-rs485.rules" "$UDEV_RULE" root root 0644; then
        if [[ -S /run/udev/control ]]; then
            udevadm control --reload
            udevadm trigger --subsystem-match=tty --action=add
        fi
        log "udev: installed $UDEV_RULE (USB RS-485 adapters appear under /dev/rs485/)"
    else
        log "udev: $UDEV_RULE up to date"
    fi
}

# --- 7. units -----------------------------------------------------------------------------

enable_unit() {
    local unit=$1
    if [[ $(systemctl is-enabled "$unit" 2>/dev/null || true) == enabled ]]; then
        return 1
    fi
    systemctl enable --quiet "$unit"
    return 0
}

ensure_units() {
    STEP="units"
    local did=() unit
    for unit in chargemitra-agent.service chargemitra-bridge.service; do
        put_file "$HERE/$unit" "$UNIT_DIR/$unit" root root 0644 && did+=("installed $unit")
    done
    if ((${#did[@]})) && systemd_running; then
        systemctl daemon-reload
    fi
    enable_unit chargemitra-agent.service && did+=("enabled chargemitra-agent.service")
    if ((${#did[@]})); then
        log "units: $(IFS=,; echo "${did[*]}" | sed 's/,/, /g')"
    else
        log "units: chargemitra-agent.service installed and enabled"
    fi
}

# --- 8. provisioning ----------------------------------------------------------------------

ensure_provisioned() {
    STEP="provision"
    local overlay="$CONFIG_DIR/cloud.toml" claimed="$CLAIM_DIR/cloud.toml" device
    if [[ -f $overlay ]]; then
        device=$(sed -n 's/^device_id = "\(.*\)"$/\1/p' "$overlay")
        log "provision: already provisioned as ${device:-?} ($overlay); a new code is not used"
        return
    fi
    if [[ -z $CODE && -t 0 ]]; then
        read -r -p "Pairing code from the host's dashboard (empty: later): " CODE
        if [[ -n $CODE && -z $CLOUD ]]; then
            read -r -p "Cloud URL (https://...): " CLOUD
        fi
    fi
    if [[ -z $CODE ]]; then
        log "provision: no pairing code: the agent runs standalone until you run" \
            "install.sh --code CODE --cloud URL"
        return
    fi
    [[ -n $CLOUD ]] || die "--code needs --cloud URL"
    local args=(provision --code "$CODE" --cloud "$CLOUD" --dir "$CLAIM_DIR")
    if [[ -n $CA_FILE ]]; then
        # Readable by the agent's user, which runs the claim and later the daemon.
        put_file "$CA_FILE" "$CONFIG_DIR/ca.pem" root "$AGENT_USER" 0640 || true
        args+=(--ca-file "$CONFIG_DIR/ca.pem")
    fi
    # As the agent's user: the password and PIN secret it writes (0600) are then its own.
    runuser -u "$AGENT_USER" -- "$VENV/bin/chargemitra-agent" "${args[@]}" >&2 ||
        die "provisioning failed (the message above says why); the code is still unused" \
            "unless the cloud said otherwise"
    # The overlay (identity, broker, key paths: absolute, into $CLAIM_DIR) is merged over
    # agent.toml from beside it; root's copy, so the agent's user cannot rewrite it.
    install -o root -g "$AGENT_USER" -m 0640 "$claimed" "$overlay"
    CHANGED=1
    device=$(sed -n 's/^device_id = "\(.*\)"$/\1/p' "$overlay")
    log "provision: claimed as $device; wrote $overlay"
}

# --- 9. service --------------------------------------------------------------------------

ensure_running() {
    STEP="service"
    if ! systemd_running; then
        log "service: systemd is not running here (a chroot?): the units start at boot"
        return
    fi
    if ((CHANGED)); then
        systemctl restart chargemitra-agent.service
        log "service: restarted chargemitra-agent.service"
    else
        systemctl start chargemitra-agent.service
        log "service: chargemitra-agent.service running"
    fi
}

main() {
    parse_args "$@"
    [[ $EUID -eq 0 ]] || die "run as root (sudo $0)"
    command -v dpkg-query >/dev/null || die "this installer supports Debian and Raspberry Pi OS"
    ensure_packages
    ensure_user
    ensure_dirs
    ensure_venv
    ensure_config
    ensure_udev
    ensure_units
    ensure_provisioned
    ensure_running
    STEP="done"
    log "done: $("$VENV/bin/chargemitra-agent" --version)"
}

main "$@"
