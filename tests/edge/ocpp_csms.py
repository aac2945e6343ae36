"""A CSMS nobody here wrote, for the OCPP uplink tests: the ``ocpp`` package's (PyPI,
mobilityhouse) ``ChargePoint`` for OCPP 1.6 on a ``websockets`` server, with TLS and HTTP
Basic auth (security profile 2), scripted by the test.

Every text frame the agent sends is kept (:attr:`Csms.received`), and
:func:`check_frames` validates each against the official OCPP 1.6 JSON schemas shipped in the
``ocpp`` package (``ocpp/v16/schemas``): CALLs by their action, CALLRESULTs by the action of
the CSMS call they answer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar, cast

import jsonschema
import ocpp.v16
from ocpp import routing
from ocpp.exceptions import GenericError
from ocpp.v16 import call_result
from ocpp.v16.enums import Action, RegistrationStatus
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from tests.support.certs import Certs
from tests.support.mosquitto import free_port

SCHEMAS = Path(ocpp.v16.__file__).parent / "schemas"
F = TypeVar("F", bound=Callable[..., Any])


def on(action: str) -> Callable[[F], F]:
    """The ocpp package's handler decorator, typed (the package ships no type hints)."""
    return cast("Callable[[F], F]", routing.on(action))


@dataclass
class Record:
    """What the CSMS saw, in order."""

    boots: int = 0
    connections: list[str] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    authorized: list[str] = field(default_factory=list)
    #: (action, payload) of every transaction message, in arrival order.
    transactions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    heartbeats: int = 0
    meter_values: list[dict[str, Any]] = field(default_factory=list)


class Station(ocpp.v16.ChargePoint):  # type: ignore[misc]  # an untyped base class
    """The CSMS's side of one charge point (the ocpp package's class, our handlers)."""

    def __init__(self, cp_id: str, connection: Any, csms: Csms) -> None:
        super().__init__(cp_id, connection)
        self.csms = csms

    @on(Action.boot_notification)
    def on_boot(self, **kwargs: Any) -> Any:
        self.csms.record.boots += 1
        return call_result.BootNotification(
            current_time=datetime.now(UTC).isoformat(),
            interval=300,
            status=RegistrationStatus.accepted,
        )

    @on(Action.heartbeat)
    def on_heartbeat(self, **kwargs: Any) -> Any:
        self.csms.record.heartbeats += 1
        return call_result.Heartbeat(current_time=datetime.now(UTC).isoformat())

    @on(Action.status_notification)
    def on_status(self, **kwargs: Any) -> Any:
        self.csms.record.statuses.append(kwargs)
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_tag: str, **kwargs: Any) -> Any:
        self.csms.record.authorized.append(id_tag)
        status = "Accepted" if id_tag in self.csms.accepted_tags else "Invalid"
        return call_result.Authorize(id_tag_info={"status": status})

    @on(Action.start_transaction)
    def on_start(self, **kwargs: Any) -> Any:
        self.csms.refuse_maybe("StartTransaction")
        self.csms.record.transactions.append(("StartTransaction", kwargs))
        self.csms.next_transaction_id += 1
        return call_result.StartTransaction(
            transaction_id=self.csms.next_transaction_id, id_tag_info={"status": "Accepted"}
        )

    @on(Action.meter_values)
    def on_meter_values(self, **kwargs: Any) -> Any:
        if kwargs.get("transaction_id") is not None:
            self.csms.refuse_maybe("MeterValues")
            self.csms.record.transactions.append(("MeterValues", kwargs))
        else:
            self.csms.record.meter_values.append(kwargs)
        return call_result.MeterValues()

    @on(Action.stop_transaction)
    def on_stop(self, **kwargs: Any) -> Any:
        self.csms.refuse_maybe("StopTransaction")
        self.csms.record.transactions.append(("StopTransaction", kwargs))
        return call_result.StopTransaction(id_tag_info={"status": "Accepted"})


class Recording:
    """The connection as the ocpp package sees it, keeping every frame both ways."""

    def __init__(self, ws: ServerConnection, csms: Csms) -> None:
        self._ws = ws
        self._csms = csms

    async def recv(self) -> str:
        text = await self._ws.recv()
        assert isinstance(text, str)
        self._csms.received.append(text)
        return text

    async def send(self, text: str) -> None:
        self._csms.sent.append(text)
        await self._ws.send(text)


class Csms:
    def __init__(self, certs: Certs, *, password: str) -> None:
        self.port = free_port()
        self.certs = certs
        self.password = password
        self.record = Record()
        self.received: list[str] = []
        self.sent: list[str] = []
        self.accepted_tags: set[str] = set()
        self.next_transaction_id = 1000
        self.station: Station | None = None
        self.connected = asyncio.Event()
        #: action -> CALLERRORs still to answer to it (the retry tests).
        self.refusals: dict[str, int] = {}
        self.refused: list[str] = []
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"wss://127.0.0.1:{self.port}/ocpp"

    def refuse_maybe(self, action: str) -> None:
        if self.refusals.get(action, 0) > 0:
            self.refusals[action] -= 1
            self.refused.append(action)
            raise GenericError(description="refused by the test")

    def _auth(self, connection: ServerConnection, request: Request) -> Response | None:
        expected = (
            "Basic "
            + base64.b64encode(
                f"{request.path.rsplit('/', 1)[-1]}:{self.password}".encode()
            ).decode()
        )
        if request.headers.get("Authorization") != expected:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "bad credentials\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        cp_id = ws.request.path.rsplit("/", 1)[-1]
        self.record.connections.append(cp_id)
        station = Station(cp_id, Recording(ws, self), self)
        self.station = station
        self.connected.set()
        with suppress(Exception):
            await station.start()

    async def start(self) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certs.cert, self.certs.key)
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            self.port,
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            process_request=self._auth,
            ssl=context,
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.connected.clear()
        self.station = None

    async def call(self, payload: Any) -> Any:
        assert self.station is not None, "no charge point connected"
        return await self.station.call(payload)


@asynccontextmanager
async def running_csms(certs: Certs, *, password: str) -> AsyncIterator[Csms]:
    csms = Csms(certs, password=password)
    await csms.start()
    try:
        yield csms
    finally:
        await csms.stop()


def ocpp_config(tmp: Path, url: str, ca: Path, *, key: str, **keys: object) -> str:
    """The agent's ``[sessions]`` (a progress event every 5 s) and ``[ocpp]`` tables for a
    test CSMS: profile 2, fast reconnects, a sample with every progress event."""
    key_file = tmp / "ocpp.key"
    key_file.write_text(key + "\n")
    extra = "".join(f"{k} = {v}\n" for k, v in keys.items())
    return f"""
[sessions]
progress_interval_s = 5

[ocpp]
url = "{url}"
charge_point_id = "CM-TEST-1"
security_profile = 2
authorization_key_file = "{key_file}"
ca_file = "{ca}"
meter_value_sample_interval_s = 1
reconnect_min_s = 0.1
reconnect_max_s = 0.5
{extra}"""


#: RFC 3339 date-time, as the schemas' ``"format": "date-time"`` means it (jsonschema checks
#: it only with an optional package; ocpp-rpc's ajv-formats does, in the strict-CSMS test).
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})\Z")
FORMATS = jsonschema.FormatChecker()


def _date_time(value: object) -> bool:
    if not isinstance(value, str) or not RFC3339.match(value):
        return False
    datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


FORMATS.checks("date-time")(_date_time)


def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / f"{name}.json").read_text("utf-8"))
    return schema


def check_frames(received: list[str], sent: list[str]) -> int:
    """Validate every frame the agent sent against the official schemas; return how many.

    ``sent`` (the CSMS's frames) names the action each CALLRESULT answers."""
    actions = {}
    for text in sent:
        frame = json.loads(text)
        if frame[0] == 2:
            actions[frame[1]] = frame[2]
    checked = 0
    for text in received:
        frame = json.loads(text)
        if frame[0] == 2:
            name = frame[2]
            payload = frame[3]
        elif frame[0] == 3:
            name = actions[frame[1]] + "Response"
            payload = frame[2]
        else:
            assert frame[0] == 4, frame
            assert len(frame) == 5, frame
            assert isinstance(frame[2], str), frame
            checked += 1
            continue
        validator = jsonschema.Draft4Validator(_schema(name), format_checker=FORMATS)
        errors = [e.message for e in validator.iter_errors(payload)]
        assert not errors, (name, payload, errors)
        checked += 1
    return checked


async def eventually(predicate: Callable[[], bool], *, timeout_s: float = 20.0) -> None:
    """Wait until ``predicate`` holds (state another task changes: nothing to await)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 -- any of several tasks may make it true
            await asyncio.sleep(0.05)
