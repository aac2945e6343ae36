"""A bare HTTP/1.1 client connection for latency benchmarks: one keep-alive connection, one
request at a time, the request bytes written as they are and the answer read by its
``content-length``.

Why not httpx: on this two-core machine the load generator shares the CPU with the server
and PostgreSQL, and httpx spends about a millisecond of Python per request (its request
model, header normalisation, the h11 state machine). With 50 requests in flight that is
tens of milliseconds of the *client's* queueing added to the last answers' latency: measured
against the same server, 50 concurrent ``GET /healthz`` had a p99 of ~60 ms through httpx
and ~8 ms through this client (docs/decisions.md, issue 16). A provider's delivery is one
request on its own connection; this measures that, not our client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import TracebackType
from typing import Self


class Http1:
    """One keep-alive connection to ``host:port``; :meth:`request` returns (status, body)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Self:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        if self._reader is None or self._writer is None:
            raise RuntimeError("not connected: use the connection as an async context")
        lines = [f"{method} {path} HTTP/1.1", f"host: {self.host}:{self.port}"]
        lines.append(f"content-length: {len(body)}")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *fields = head[:-4].split(b"\r\n")
        length = None
        for field in fields:
            name, _, value = field.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"transfer-encoding":
                raise RuntimeError("chunked answers are not supported by this bench client")
        if length is None:
            raise RuntimeError(f"an answer without content-length: {head!r}")
        return int(status_line.split(b" ", 2)[1]), await self._reader.readexactly(length)
