#!/bin/sh
# Print the cloud broker's config with this machine's dynamic-security plugin path filled in.
#
#   sh deploy/mosquitto/cloud/render-conf.sh [CONF] > /etc/chargemitra-cloud/mosquitto.conf
#
# CONF is the template, deploy/mosquitto/cloud/mosquitto.conf (beside this script) by default:
# its `plugin DYNSEC_PLUGIN` line becomes `plugin /the/path/mosquitto_dynamic_security.so`,
# every other line is copied as it is.
#
# Why: where the plugin lives depends on the distribution and the architecture. Debian and
# Ubuntu put it in the multiarch directory (/usr/lib/x86_64-linux-gnu/ on a PC,
# /usr/lib/aarch64-linux-gnu/ on a Raspberry Pi or a Graviton server); the eclipse-mosquitto
# image and a source build put it in /usr/lib/; a hard-coded path breaks on some of them.
# Looked for, first found wins:
#   1. $MOSQUITTO_DYNSEC_PLUGIN, if set (it must exist);
#   2. the file the installed mosquitto package lists (dpkg), on Debian and its derivatives;
#   3. /usr/lib/, /usr/local/lib/, /usr/lib64/, then /usr/lib/*/ and /usr/local/lib/*/
#      (a multiarch directory; more than one match is an error: set the variable).
# ROOT=/some/root looks inside another root file system (an image or chroot being prepared);
# the path printed is the one seen from inside it.
# Nothing is printed and the exit status is 1 when no plugin is found.
set -eu

NAME=mosquitto_dynamic_security.so
ROOT=${ROOT:-}
CONF=${1:-$(dirname "$0")/mosquitto.conf}

fail() {
    echo "render-conf.sh: $*" >&2
    exit 1
}

find_plugin() {
    if [ -n "${MOSQUITTO_DYNSEC_PLUGIN:-}" ]; then
        [ -f "$ROOT$MOSQUITTO_DYNSEC_PLUGIN" ] ||
            fail "MOSQUITTO_DYNSEC_PLUGIN=$MOSQUITTO_DYNSEC_PLUGIN: no such file"
        echo "$MOSQUITTO_DYNSEC_PLUGIN"
        return
    fi
    if command -v dpkg-query >/dev/null 2>&1; then
        listed=$(dpkg-query --admindir="$ROOT/var/lib/dpkg" -L mosquitto 2>/dev/null |
            grep "/$NAME\$" | head -n 1) || listed=
        if [ -n "$listed" ] && [ -f "$ROOT$listed" ]; then
            echo "$listed"
            return
        fi
    fi
    for path in /usr/lib/$NAME /usr/local/lib/$NAME /usr/lib64/$NAME; do
        if [ -f "$ROOT$path" ]; then
            echo "$path"
            return
        fi
    done
    found=
    for path in "$ROOT"/usr/lib/*/$NAME "$ROOT"/usr/local/lib/*/$NAME; do
        [ -f "$path" ] || continue # an unmatched glob stays as it is
        [ -z "$found" ] ||
            fail "more than one $NAME ($found, ${path#"$ROOT"}): set MOSQUITTO_DYNSEC_PLUGIN"
        found=${path#"$ROOT"}
    done
    [ -n "$found" ] || fail "no $NAME found (is mosquitto installed?): set MOSQUITTO_DYNSEC_PLUGIN"
    echo "$found"
}

[ -f "$CONF" ] || fail "$CONF: no such file"
grep -q '^plugin DYNSEC_PLUGIN$' "$CONF" || fail "$CONF has no 'plugin DYNSEC_PLUGIN' line"
plugin=$(find_plugin)
# The path holds no '|' (a file name from the list above), the sed separator here.
sed "s|^plugin DYNSEC_PLUGIN\$|plugin $plugin|" "$CONF"
