"""``python -m tests.sync.agent_proc STORE TLS_PORT CA``: the sync service alone, in its own
process, so a test can kill -9 it mid-drain and start it again."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from edge_agent.store.db import connect
from edge_agent.sync.service import SyncService
from edge_agent.testing import RecordingHandler
from tests.sync.rig import sync_settings, wall_clock


async def main(store: Path, tls_port: int, ca: Path) -> None:
    conn = connect(store)
    settings = sync_settings(tls_port, ca, backlog_msgs_per_s=300, backlog_burst=30)
    service = SyncService(conn, settings, handler=RecordingHandler(), clock=wall_clock())
    print("ready", flush=True)
    await service.run()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])))
