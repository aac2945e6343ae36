"""A real HTTP server on loopback for the fake payment providers (fake_razorpay, fake_stripe):
a thread serving one handler function, and the record of every request it saw."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True, slots=True)
class Seen:
    """One request as the fake received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]
    #: Answer this late (seconds): the work is done, the client may have given up waiting.
    delay_s: float = 0.0


Handler = Callable[[Seen], Answer]


@dataclass
class FakeServer:
    handler: Handler
    seen: list[Seen] = field(default_factory=list)
    url: str = ""


@contextmanager
def serve(handler: Handler) -> Iterator[FakeServer]:
    """Serve ``handler`` on ``127.0.0.1`` (a free port) until the block ends."""
    fake = FakeServer(handler)
    lock = threading.Lock()

    class _Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            seen = Seen(
                self.command,
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                self.rfile.read(length),
            )
            with lock:
                fake.seen.append(seen)
                try:
                    answer = fake.handler(seen)
                except Exception as exc:  # noqa: BLE001 -- a fake's bug must show, not hang the SDK
                    answer = Answer(500, {"error": {"code": "SERVER_ERROR", "message": repr(exc)}})
            if answer.delay_s:
                time.sleep(answer.delay_s)  # outside the lock: other requests go on
            payload = json.dumps(answer.body).encode()
            # A client that timed out has hung up: its answer is lost, as intended.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._send(answer.status, payload)

        def _send(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        # http.server dispatches on these names.
        do_GET = do_POST = do_PATCH = do_DELETE = _any  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- the base's name
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fake-provider", daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
