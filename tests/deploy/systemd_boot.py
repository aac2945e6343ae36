"""A real systemd, booted as PID 1 of its own PID, mount and cgroup namespaces in a root.

This container's PID 1 is not systemd, but a systemd can run beside it: ``unshare`` gives it
PID 1 of a new PID namespace, a private mount namespace (its /run, /sys and API mounts stay
there), and a cgroup namespace rooted at a sub-cgroup of the test's own cgroups (named by a
tag, in every hierarchy), so each cgroup it makes lives under the test's, inside the
session's memory limit, and is removed afterwards. Units that would reach the host's
devices or consoles (udev, gettys, logind) are masked in the root.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

#: Units masked in the root before boot: no udev (it would act on the host's /dev), no
#: logins, no Debian broker on 1883.
MASKED = (
    "systemd-udevd.service",
    "systemd-udev-trigger.service",
    "systemd-udevd-control.socket",
    "systemd-udevd-kernel.socket",
    "getty@tty1.service",
    "console-getty.service",
    "systemd-logind.service",
    "mosquitto.service",
    "e2scrub_reap.service",
    "systemd-remount-fs.service",
)

# $1 root, $2 tag, $3 log file. Moves itself into a new sub-cgroup of each of its cgroups,
# then execs unshare; inside, makes a /dev of its own, mounts sysfs and the cgroup
# hierarchies afresh (they show the namespace's root: systemd sees only its sub-tree) and
# execs systemd chrooted into the root.
BOOT = r"""
set -eu
root=$1 tag=$2 log=$3
cgroups=$(cat /proc/self/cgroup)
while IFS=: read -r _ ctrl path; do
    if [[ -z $ctrl ]]; then h=unified; else h=${ctrl#name=}; fi
    d=/sys/fs/cgroup/$h${path%/}/$tag
    mkdir -p "$d"
    if [[ $h == cpuset ]]; then
        cat "$(dirname "$d")/cpuset.cpus" >"$d/cpuset.cpus"
        cat "$(dirname "$d")/cpuset.mems" >"$d/cpuset.mems"
    fi
    echo $$ >"$d/cgroup.procs"
done <<<"$cgroups"
exec unshare --pid --fork --mount --cgroup --propagation private --mount-proc="$root/proc" \
    bash -c '
set -eu
root=$1 log=$2
# A /dev of its own, as a container manager gives one: the few host nodes a system needs,
# and a console that is the log file (systemd never writes to the real console).
mount -t tmpfs -o mode=755,nosuid tmpfs "$root/dev"
for node in null zero full random urandom tty; do
    touch "$root/dev/$node"
    mount --bind "/dev/$node" "$root/dev/$node"
done
touch "$root/dev/console"
mount --bind "$log" "$root/dev/console"
mkdir -p "$root/dev/pts" "$root/dev/shm"
ln -s /proc/self/fd "$root/dev/fd"
mount -t sysfs sysfs "$root/sys"
mount -t tmpfs -o mode=755 tmpfs "$root/sys/fs/cgroup"
while IFS=: read -r _ ctrl _; do
    case $ctrl in
    "") mkdir -p "$root/sys/fs/cgroup/unified"
        mount -t cgroup2 -o nsdelegate cgroup2 "$root/sys/fs/cgroup/unified" ;;
    name=*) mkdir -p "$root/sys/fs/cgroup/${ctrl#name=}"
        mount -t cgroup -o "none,$ctrl" cgroup "$root/sys/fs/cgroup/${ctrl#name=}" ;;
    *) mkdir -p "$root/sys/fs/cgroup/$ctrl"
        mount -t cgroup -o "$ctrl" cgroup "$root/sys/fs/cgroup/$ctrl" ;;
    esac
done </proc/self/cgroup
# container=: systemd runs as in a container (no udev, no hardware, no kernel log). Its own
# messages go to its journal (before journald is up: to the console, the log file).
exec env container=chargemitra-test chroot "$root" /lib/systemd/systemd --system \
    --log-target=journal
' boot "$root" "$log"
"""


@dataclass
class Booted:
    """A running systemd: ``systemctl``/``journalctl`` run in its namespaces."""

    pid1: int
    #: What systemd printed before its journal was up (its console, never the machine's).
    log: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-m", "-p", "-C", "-r", "-w", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, "-p", ",".join(props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _systemd_child(pid: int) -> int:
    """The child of ``pid`` that is systemd by now (0 if none yet): before its exec the
    script's children are mkdir, cat, the inner bash."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0
    for child in children:
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0] == b"/lib/systemd/systemd":
            return int(child)
    return 0


def _cgroup_dirs(tag: str) -> list[Path]:
    """The sub-cgroups BOOT makes: ``tag`` under this process's cgroup in each hierarchy."""
    dirs = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrl, path = line.split(":", 2)
        hierarchy = "unified" if not ctrl else ctrl.removeprefix("name=")
        dirs.append(Path("/sys/fs/cgroup", hierarchy, path.strip("/"), tag))
    return dirs


def _remove_cgroups(tag: str) -> None:
    """The ``tag`` cgroups and every one systemd made under them, leaves first."""
    for top in _cgroup_dirs(tag):
        if not top.is_dir():
            continue
        subdirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for d in [*subdirs, top]:
            d.rmdir()


@contextmanager
def booted(root: Path, log_path: Path) -> Iterator[Booted]:
    """systemd running in ``root`` until the block ends; then killed, its cgroups removed.
    Its own messages go to ``log_path`` (outside the root: systemd-tmpfiles empties /tmp)."""
    for unit in MASKED:
        (root / "etc/systemd/system" / unit).unlink(missing_ok=True)
        (root / "etc/systemd/system" / unit).symlink_to("/dev/null")
    tag = f"cm-deploy-test-{uuid.uuid4().hex[:8]}"
    log = log_path.open("w")
    wrapper = subprocess.Popen(
        ["bash", "-c", BOOT, "boot", str(root), tag, str(log_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    pid1 = 0
    try:
        deadline = time.monotonic() + 30
        while not pid1:
            # wrapper (exec'd into unshare) → bash → systemd, which keeps bash's pid.
            pid1 = _systemd_child(wrapper.pid)
            if not pid1 and (wrapper.poll() is not None or time.monotonic() > deadline):
                raise AssertionError(f"systemd did not start: {log_path.read_text()}")
            time.sleep(0.05)
        booted = Booted(pid1, log_path)
        while booted.run("systemctl", "is-system-running").stdout.strip() in {
            "",
            "initializing",
            "starting",
        }:
            if time.monotonic() > deadline:
                raise AssertionError("systemd did not finish booting in 30 s")
            time.sleep(0.1)
        yield booted
    finally:
        # PID 1 of the namespace gone, the kernel kills every process in it. Found again
        # here: a failure above may have come before it was known.
        pid1 = pid1 or _systemd_child(wrapper.pid)
        if pid1:
            os.kill(pid1, signal.SIGKILL)
        elif wrapper.poll() is None:
            wrapper.kill()
        wrapper.wait(timeout=30)
        log.close()
        _remove_cgroups(tag)
