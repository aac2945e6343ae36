"""Helpers to run the agent (in-process or as a process) against a Modbus peer."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

from edge_agent.control import request
from edge_agent.store import auth as auth_store
from edge_agent.store.db import connect, transaction
from protocols.enums import AuthListUpdateType, AuthorizationStatus
from protocols.idtags import hash_id_tag
from protocols.messages import AuthListEntry, AuthListUpdate

TAG = "04A2B3C4D5"


def write_config(
    tmp: Path,
    *,
    port: int,
    on_restart: str = "close",
    on_shutdown: str = "end",
    poll_interval_s: float = 0.25,
    extra: str = "",
    relay_unit: int = 9,
) -> Path:
    path = tmp / "agent.toml"
    path.write_text(
        f"""
device_id = "site-test"

[[meters]]
id = "m1"
model = "sdm630"
unit_id = 1
poll_interval_s = {poll_interval_s}
link = {{ transport = "tcp", host = "127.0.0.1", port = {port} }}

[[connectors]]
id = 1
meter = "m1"
max_current_a = 32

[connectors.relay]
driver = "modbus-coil"
unit_id = {relay_unit}
coil = 0
link = {{ transport = "tcp", host = "127.0.0.1", port = {port} }}

[bus]
frame_gap_s = 0.0
timeout_s = 0.3
retries = 0

[store]
path = "{tmp / "agent.db"}"

[recovery]
on_restart = "{on_restart}"
on_shutdown = "{on_shutdown}"

[clock]
trust = "always"

[control]
socket_path = "{tmp / "agent.sock"}"
{extra}
"""
    )
    return path


def seed_local_list(db: Path, tags: tuple[str, ...] = (TAG,)) -> None:
    conn = connect(db)
    try:
        with transaction(conn):
            auth_store.apply_auth_list_update(
                conn,
                AuthListUpdate(
                    version=1,
                    update_type=AuthListUpdateType.FULL,
                    entries=[
                        AuthListEntry(
                            id_tag_hash=hash_id_tag(t), status=AuthorizationStatus.ACCEPTED
                        )
                        for t in tags
                    ],
                ),
            )
    finally:
        conn.close()


async def control(sock: Path, **message: Any) -> Any:
    return await request(sock, message)


async def wait_for_socket(sock: Path, *, timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                answer = await request(sock, {"cmd": "status"}, timeout_s=2.0)
            except (OSError, json.JSONDecodeError, TimeoutError):
                await asyncio.sleep(0.05)
                continue
            if answer.get("ok"):
                return


async def wait_until(predicate: Any, *, timeout_s: float = 15.0, every_s: float = 0.1) -> None:
    """Poll ``predicate`` (state held by another process or the agent: nothing to await)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if await predicate():
                return
            await asyncio.sleep(every_s)


def rows(db: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return [tuple(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()
