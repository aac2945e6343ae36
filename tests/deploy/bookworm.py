"""A Debian bookworm root to run the Pi installer in, made by debootstrap once and cached.

The root is built under ``.cache/deploy/`` (ignored by git) the first time (about a minute:
debootstrap downloads ~100 MiB of packages from the Debian mirror), then each test mounts
an overlay over it, so every run starts from the same pristine root and leaves the cache
untouched. The wheels the installer installs offline are cached beside it, keyed on
``requirements/edge.lock``; the project's own wheel is built fresh for each run.

Needs root (mount, chroot), which the development and CI machines are.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = REPO_ROOT / ".cache" / "deploy"
MIRROR = "http://deb.debian.org/debian"
#: What a Raspberry Pi OS Lite image has that the installer relies on, on a minimal base.
#: mosquitto: the site broker's unit (chargemitra-bridge.service) names its binary.
PACKAGES = ("python3", "python3-venv", "systemd", "udev", "mosquitto", "adduser", "ca-certificates")
#: A clean environment for commands in the root, as a root login on the Pi has.
ROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}
#: Not part of a root's state: kernel file systems and scratch space.
VOLATILE = frozenset({"proc", "sys", "dev", "run", "tmp"})


def _run(args: list[str], *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


@contextmanager
def _locked(name: str) -> Iterator[None]:
    """One builder at a time per cache entry (two test runs in one checkout)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def bookworm_root() -> Path:
    """The cached debootstrap root (built now if missing); never modified once built."""
    key = hashlib.sha256(" ".join(PACKAGES).encode()).hexdigest()[:12]
    root = CACHE / f"bookworm-{key}"
    with _locked(root.name):
        if not (root / "etc" / "debian_version").is_file():
            partial = CACHE / f"{root.name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            _run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(PACKAGES)}",
                    "bookworm",
                    str(partial),
                    MIRROR,
                ],
                timeout=900,
            )
            partial.rename(root)
    return root


def edge_wheelhouse() -> Path:
    """Wheels of every package in requirements/edge.lock (evdev built from its sdist)."""
    lock = REPO_ROOT / "requirements" / "edge.lock"
    key = hashlib.sha256(lock.read_bytes()).hexdigest()[:12]
    house = CACHE / f"wheelhouse-{key}"
    with _locked(house.name):
        if not (house / ".complete").is_file():
            shutil.rmtree(house, ignore_errors=True)
            pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check"]
            _run([*pip, "--no-deps", "-r", str(lock), "-w", str(house)], timeout=600)
            (house / ".complete").write_text("")
    return house


def project_wheel(out: Path) -> Path:
    """The project built now, as the release a Pi would be given."""
    uv = Path(sys.executable).with_name("uv")
    _run(
        [str(uv), "build", "--wheel", "--quiet", "--out-dir", str(out), str(REPO_ROOT)], timeout=300
    )
    (wheel,) = out.glob("chargemitra-*.whl")
    return wheel


@contextmanager
def overlay_root(lower: Path, scratch: Path) -> Iterator[Path]:
    """A writable copy of ``lower`` (an overlay: the cache stays pristine) with /proc."""
    upper, work, merged = scratch / "upper", scratch / "work", scratch / "root"
    for d in (upper, work, merged):
        d.mkdir(parents=True)
    _run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={lower},upperdir={upper},workdir={work}",
            str(merged),
        ]
    )
    try:
        _run(["mount", "-t", "proc", "proc", str(merged / "proc")])
        try:
            yield merged
        finally:
            _unmount(merged / "proc")
    finally:
        _unmount(merged)


def _unmount(path: Path) -> None:
    """Unmount ``path``; lazily if something still holds it, so no mount outlives the test."""
    if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
        _run(["umount", "--lazy", str(path)])


def in_root(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``args`` chrooted into ``root`` with a clean root environment."""
    result = subprocess.run(
        ["chroot", str(root), *args],
        env=ROOT_ENV,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def manifest(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path in ``root`` with its type and mode, owner, mtime and content hash (or link
    target): two equal manifests mean nothing was written, chmod-ed or chown-ed."""
    entries: dict[str, tuple[object, ...]] = {}
    for dirpath, dirs, files in os.walk(root):
        here = Path(dirpath)
        if here == root:
            dirs[:] = [d for d in dirs if d not in VOLATILE]
        for name in (*dirs, *files):
            path = here / name
            st = path.lstat()
            detail: object = None
            if stat.S_ISREG(st.st_mode):
                detail = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                detail = str(path.readlink())
            key = str(path.relative_to(root))
            entries[key] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, detail)
    return entries
