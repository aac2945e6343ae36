"""``chargemitra-agent logs``: the agent's log file, or its systemd journal."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import click

from edge_agent.errors import InputError
from edge_agent.tech import LOG_ENV
from edge_agent.tech.output import EXIT_FAIL, EXIT_OK, dumps

UNIT = "chargemitra-agent"


def _tail(path: Path, lines: int) -> list[str]:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as exc:
        raise InputError(f"cannot read log file {path}: {exc.strerror}", field="file") from exc
    return text.splitlines()[-lines:]


def _follow(path: Path, as_json: bool) -> None:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        while True:
            line = f.readline()
            if not line:
                time.sleep(0.2)
                continue
            text = line.decode("utf-8", "replace").rstrip("\n")
            click.echo(dumps({"line": text}) if as_json else text)


def show_logs(file: Path | None, lines: int, follow: bool, as_json: bool) -> None:
    path = file or (Path(os.environ[LOG_ENV]) if os.environ.get(LOG_ENV) else None)
    if path is not None:
        tail = _tail(path, lines)
        if as_json:
            for line in tail:
                click.echo(dumps({"line": line}))
        else:
            for line in tail:
                click.echo(line)
        if follow:
            try:
                _follow(path, as_json)
            except KeyboardInterrupt:
                return
        return
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        raise InputError(
            f"no systemd journal here: give the agent's log file with --file or ${LOG_ENV}",
            field="file",
        )
    argv = [journalctl, "-u", UNIT, "-n", str(lines), "--no-pager"]
    if follow:
        argv.append("-f")
    if as_json:
        argv += ["-o", "json"]
    try:
        code = subprocess.call(argv)  # noqa: S603 -- fixed argv, no shell
    except KeyboardInterrupt:
        return
    raise SystemExit(EXIT_OK if code == 0 else EXIT_FAIL)
