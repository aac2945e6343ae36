#!/usr/bin/env bash
# Remove the ChargeMitra edge agent installed by deploy/edge/install.sh, as root.
#
#   uninstall.sh            stops and removes the service, the udev rule and the venv; KEEPS
#                           the store (/var/lib/chargemitra: sessions and readings not yet
#                           sent), the configuration and credentials (/etc/chargemitra) and
#                           the user, so a reinstall carries on where this one stopped
#   uninstall.sh --purge    also deletes the store, the configuration and the user: unsent
#                           sessions and readings are lost, the device must be re-paired
set -Eeuo pipefail

AGENT_USER="chargemitra"
PREFIX="/opt/chargemitra"
CONFIG_DIR="/etc/chargemitra"
STATE_DIR="/var/lib/chargemitra"
UNIT_DIR="/etc/systemd/system"
UNITS=(chargemitra-agent.service chargemitra-bridge.service)
UDEV_RULE="/etc/udev/rules.d/70-chargemitra-rs485.rules"
PURGE=0

log() { printf '[uninstall] %s\n' "$*" >&2; }

case "${1:-}" in
"") ;;
--purge) PURGE=1 ;;
-h | --help) sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
*) log "unknown argument: $1 (uninstall.sh [--purge])"; exit 2 ;;
esac
[[ $EUID -eq 0 ]] || { log "run as root"; exit 1; }

for unit in "${UNITS[@]}"; do
    [[ -f $UNIT_DIR/$unit ]] || continue
    if [[ -d /run/systemd/system ]]; then
        # SIGTERM: the agent ends open sessions and opens every relay before it exits.
        systemctl disable --now --quiet "$unit" || true
    else
        systemctl disable --quiet "$unit" || true
    fi
    rm -f "$UNIT_DIR/$unit"
    log "removed $unit"
done
[[ -d /run/systemd/system ]] && systemctl daemon-reload
if [[ -f $UDEV_RULE ]]; then
    rm -f "$UDEV_RULE"
    [[ -S /run/udev/control ]] && udevadm control --reload
    log "removed $UDEV_RULE"
fi
if [[ -d $PREFIX ]]; then
    rm -rf "$PREFIX"
    log "removed $PREFIX"
fi
if ((PURGE)); then
    rm -rf "$STATE_DIR" "$CONFIG_DIR"
    if id -u "$AGENT_USER" >/dev/null 2>&1; then
        userdel "$AGENT_USER"
    fi
    if getent group "$AGENT_USER" >/dev/null; then
        groupdel "$AGENT_USER"
    fi
    log "purged $STATE_DIR, $CONFIG_DIR and the user $AGENT_USER"
else
    log "kept $STATE_DIR (the store), $CONFIG_DIR and the user $AGENT_USER" \
        "(uninstall.sh --purge deletes them)"
fi
