"""A site's uplink, played by a TCP relay that can be dropped and restored.

The demo's agents reach the broker through a :class:`LinkRelay` each (agent → relay port →
broker TLS port). :meth:`LinkRelay.drop` closes every connection and stops listening, so a
reconnect is refused at TCP level — like a site whose uplink is down — without touching the
broker or the cloud: the broker sees an unclean disconnect and publishes the agent's Last
Will, as in the field. :meth:`LinkRelay.restore` listens again on the same port.

The story (:mod:`cloud.demo.story`) takes any :class:`Link`; the end-to-end tests may hand it
a network namespace instead of this relay.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, Self


class Link(Protocol):
    """Something that can take a site off the network and bring it back."""

    async def drop(self) -> None: ...

    async def restore(self) -> None: ...


class LinkRelay:
    """A TCP relay from ``host:port`` (port 0: a free one, kept across restores) to
    ``target_host:target_port``. An async context manager: listening inside, closed after."""

    def __init__(
        self,
        target_port: int,
        *,
        target_host: str = "127.0.0.1",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self.port = port
        self.dropped = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        await self.restore()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.drop()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def drop(self) -> None:
        """Close every connection now and refuse new ones until :meth:`restore`."""
        self.dropped = True
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def restore(self) -> None:
        """Listen again (on the same port once one was chosen)."""
        self.dropped = False
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, self.host, self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.dropped:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            # Owned by the relay: cancelled and awaited in __aexit__.
            task = asyncio.create_task(self._pipe(src, dst), name="link-pipe")
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, ConnectionError):
            pass  # one side went away: the finally closes the other, as a cut cable would
        finally:
            dst.close()
            self._writers.discard(dst)
