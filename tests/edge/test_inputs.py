"""Credential inputs: RDM6300 frames, HID key events, device readers on a pty, LAN HTTP
(and its bounds)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import tty
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.auth.authorizer import Credential, IdTag, Pin, Token
from edge_agent.config import HttpInput, build
from edge_agent.control.messages import StartAnswer
from edge_agent.errors import ConfigError
from edge_agent.inputs.debounce import Debounce
from edge_agent.inputs.frames import BadFrame, KeyDecoder, Rdm6300Decoder, parse_rdm6300
from edge_agent.inputs.http import FD_RESERVE, HttpLimits, UnlockEndpoint, connection_cap
from edge_agent.inputs.readers import run_hid, run_rdm6300
from firmware_sim.keys import encode_events, key_events
from firmware_sim.rfid import rdm6300_frame
from tests.support.mosquitto import free_port


def test_good_rdm6300_frame_gives_the_tag() -> None:
    assert parse_rdm6300(rdm6300_frame("0a1b2c3d4e")) == "0A1B2C3D4E"


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\x020A1B2C3D4E00\x03", "checksum"),
        (b"\x020A1B2C3D4ZZ0\x03", "non-hex"),
        (b"\x010A1B2C3D4E3E\x03", "STX"),
        (b"\x02\xff" + b"A" * 11 + b"\x03", "non-ASCII"),
    ],
)
def test_bad_rdm6300_frames_are_refused(frame: bytes, reason: str) -> None:
    result = parse_rdm6300(frame)
    assert isinstance(result, BadFrame)
    assert reason in result.reason


def test_decoder_reassembles_split_frames_and_skips_garbage() -> None:
    decoder = Rdm6300Decoder()
    frame = rdm6300_frame("0A1B2C3D4E")
    assert decoder.feed(frame[:5]) == []
    assert decoder.feed(frame[5:]) == ["0A1B2C3D4E"]
    out = decoder.feed(b"noise" + frame[:6] + rdm6300_frame("1122334455"))
    assert [type(o) for o in out] == [BadFrame, BadFrame, str]
    assert out[-1] == "1122334455"


@given(st.binary(max_size=200), st.lists(st.integers(0, 2**40 - 1), max_size=5))
def test_any_byte_stream_yields_only_checked_tags(noise: bytes, tags: list[int]) -> None:
    """Whatever the line carries, the decoder never raises and every tag it returns was
    framed with a correct checksum."""
    decoder = Rdm6300Decoder()
    stream = noise + b"".join(rdm6300_frame(f"{t:010X}") for t in tags)
    results = []
    for i in range(0, len(stream), 7):
        results += decoder.feed(stream[i : i + 7])
    found = [r for r in results if isinstance(r, str)]
    assert all(isinstance(parse_rdm6300(rdm6300_frame(t)), str) for t in found)
    # The clean frames after the noise are all read (noise may hide at most one of them:
    # a stray STX in the noise can swallow the first frame's start).
    assert len(found) >= len(tags) - 1


def test_keypad_lines_end_with_hash_or_enter_and_star_clears() -> None:
    decoder = KeyDecoder("keypad")
    data = encode_events(key_events("12*3456#7890\n"))
    assert decoder.feed(data[:50]) == []
    assert decoder.feed(data[50:]) == ["3456", "7890"]


def test_qr_scanner_keeps_case_and_punctuation() -> None:
    token = "v4.public.eyJhIjoiYiJ9-_Zz.eyJraWQiOiJ4In0"
    decoder = KeyDecoder("qr")
    assert decoder.feed(encode_events(key_events(token + "\n"))) == [token]


async def _pty() -> tuple[int, int, str]:
    """A pty pair; the slave stays open (as the simulator keeps it) so nothing is lost."""
    master, slave = os.openpty()
    tty.setraw(slave)
    return master, slave, os.ttyname(slave)


async def _collect(run: object, expected: int) -> list[tuple[Credential, int]]:
    got: list[tuple[Credential, int]] = []
    done = asyncio.Event()

    async def present(credential: Credential, connector: int) -> object:
        got.append((credential, connector))
        if len(got) >= expected:
            done.set()
        return None

    async with asyncio.TaskGroup() as group:
        task = group.create_task(run(present), name="reader")  # type: ignore[operator]
        async with asyncio.timeout(10):
            await done.wait()
        task.cancel()
    return got


async def test_rdm6300_reader_on_a_serial_line_presents_tags() -> None:
    master, slave, path = await _pty()
    try:
        os.write(master, b"\x02garbage\x03" + rdm6300_frame("0A1B2C3D4E"))

        async def run(present: object) -> None:
            await run_rdm6300(path, 2, present)  # type: ignore[arg-type]

        got = await _collect(run, 1)
    finally:
        os.close(master)
        os.close(slave)
    assert got == [(IdTag("0A1B2C3D4E"), 2)]


async def test_hid_keypad_reader_presents_pins() -> None:
    master, slave, path = await _pty()
    try:
        os.write(master, encode_events(key_events("12345678#")))

        async def run(present: object) -> None:
            await run_hid(path, "keypad", 1, present)  # type: ignore[arg-type]

        got = await _collect(run, 1)
    finally:
        os.close(master)
        os.close(slave)
    assert got == [(Pin("12345678"), 1)]


async def test_missing_device_is_retried_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def present(credential: Credential, connector: int) -> object:
        raise AssertionError("nothing to read")

    async with asyncio.TaskGroup() as group:
        task = group.create_task(run_hid(str(tmp_path / "nope"), "rfid", 1, present))
        await asyncio.sleep(0.2)
        assert not task.done()
        task.cancel()
    assert "unavailable" in caplog.text


async def _http(port: int, raw: bytes) -> tuple[int, dict[str, object]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def test_lan_http_endpoint_presents_tokens_and_refuses_junk() -> None:
    seen: list[tuple[Credential, int]] = []

    async def present(credential: Credential, connector: int) -> StartAnswer:
        seen.append((credential, connector))
        return StartAnswer(ok=True, status="Accepted", reason=None)

    port = free_port()
    endpoint = UnlockEndpoint("127.0.0.1", port, present)
    started = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        task = group.create_task(endpoint.serve(lambda _: started.set()))
        await started.wait()
        body = json.dumps({"connector": 1, "token": "v4.public.x"}).encode()
        request = (
            b"POST /v1/unlock HTTP/1.1\r\nHost: x\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        accepted = {"ok": True, "status": "Accepted", "reason": None}
        assert await _http(port, request) == (200, accepted)
        status, _ = await _http(port, b"GET /v1/unlock HTTP/1.1\r\n\r\n")
        assert status == 405
        status, _ = await _http(port, b"POST /other HTTP/1.1\r\n\r\n")
        assert status == 404
        status, _ = await _http(port, b"POST /v1/unlock HTTP/1.1\r\nContent-Length: 5\r\n\r\n{bad}")
        assert status == 400
        status, _ = await _http(port, b"nonsense\r\n\r\n")
        assert status == 400
        task.cancel()
    assert seen == [(Token("v4.public.x"), 1)]


# --- the LAN endpoint's bounds (issue 13; the flood itself: test_http_input_bounds) ----------

UNLOCK_BODY = json.dumps({"connector": 1, "token": "v4.public.x"}).encode()
UNLOCK = (
    b"POST /v1/unlock HTTP/1.1\r\nContent-Length: "
    + str(len(UNLOCK_BODY)).encode()
    + b"\r\n\r\n"
    + UNLOCK_BODY
)


async def _accepted(credential: Credential, connector: int) -> StartAnswer:
    return StartAnswer(ok=True, status="Accepted", reason=None)


@contextlib.asynccontextmanager
async def _endpoint(limits: HttpLimits) -> AsyncIterator[int]:
    port = free_port()
    started = asyncio.Event()
    serving = UnlockEndpoint("127.0.0.1", port, _accepted, limits=limits)
    async with asyncio.TaskGroup() as group:
        task = group.create_task(serving.serve(lambda _: started.set()))
        await started.wait()
        try:
            yield port
        finally:
            task.cancel()


async def test_lan_http_connections_over_the_cap_are_answered_503_until_one_frees() -> None:
    async with _endpoint(HttpLimits(max_connections=2, header_timeout_s=30)) as port:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await asyncio.sleep(0.1)  # both accepted
        assert await _http(port, UNLOCK) == (503, {"ok": False, "error": "busy"})
        for _, writer in idle:
            writer.close()
            await writer.wait_closed()
        # The endpoint frees a slot once it has seen the close: nothing to await.
        async with asyncio.timeout(10):
            while (await _http(port, UNLOCK))[0] != 200:  # noqa: ASYNC110
                await asyncio.sleep(0.05)


async def test_lan_http_client_dribbling_its_headers_is_cut_at_the_header_deadline() -> None:
    async with _endpoint(HttpLimits(header_timeout_s=0.5)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(10):
            # One byte every 50 ms, for ever: each byte would reset an idle timer.
            reading = asyncio.ensure_future(reader.read(4096))
            for byte in b"POST /v1/unlock HTTP/1.1\r\n" + b"X-Slow: y\r\n" * 1000:
                done, _ = await asyncio.wait({reading}, timeout=0.05)
                if done:
                    break
                writer.write(bytes([byte]))
            answer = await reading
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"headers not received in time" in answer


async def test_lan_http_body_that_does_not_arrive_is_cut_at_the_body_deadline() -> None:
    async with _endpoint(HttpLimits(body_timeout_s=0.3)) as port:
        answer = await _http(port, b"POST /v1/unlock HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
    assert answer == (408, {"ok": False, "error": "body not received in time"})


def test_lan_http_cap_is_fitted_under_the_open_file_limit() -> None:
    assert connection_cap(64, resource.RLIM_INFINITY) == 64
    assert connection_cap(64, 1024) == 64
    assert connection_cap(64, 100) == 100 - FD_RESERVE
    assert connection_cap(64, 10) == 1


def test_lan_http_bounds_have_safe_defaults_and_are_validated() -> None:
    settings = build(HttpInput, {})
    limits = HttpLimits(
        settings.max_connections, settings.header_timeout_s, settings.body_timeout_s
    )
    assert limits == HttpLimits()
    with pytest.raises(ConfigError) as caught:
        build(HttpInput, {"max_connections": 0, "header_timeout_s": 0, "body_timeout_s": 3600})
    assert {p.field for p in caught.value.problems} == {
        "max_connections",
        "header_timeout_s",
        "body_timeout_s",
    }
    with pytest.raises(ConfigError):
        build(HttpInput, {"header_timeout_s": float("nan")})


# --- one decision per presentation -----------------------------------------------------------


def test_debounce_admits_a_value_once_while_it_keeps_being_seen() -> None:
    debounce = Debounce(3.0)
    # A card lying on the reader for 10 s, its frame every 0.1 s: one presentation.
    seen = [debounce.admit("0A1B2C3D4E", t / 10) for t in range(100)]
    assert seen == [True] + [False] * 99
    # Another card meanwhile is its own presentation.
    assert debounce.admit("FFFFFFFFFF", 10.0)
    # Taken away for the window, then presented again: a new presentation.
    assert debounce.admit("0A1B2C3D4E", 9.9 + 3.0)
    assert not debounce.admit("0A1B2C3D4E", 13.0)


@given(st.lists(st.floats(min_value=0, max_value=100), min_size=1, max_size=50))
def test_debounce_of_zero_admits_everything(times: list[float]) -> None:
    debounce = Debounce(0.0)
    assert all(debounce.admit("tag", t) for t in sorted(times))


async def test_rdm6300_reader_presents_a_held_card_once() -> None:
    master, slave, path = await _pty()
    try:
        # A card held on the reader (its frame repeated), then another card: the second
        # tag's arrival shows every repeat of the first was read and dropped.
        os.write(master, rdm6300_frame("0A1B2C3D4E") * 8 + rdm6300_frame("1122334455"))

        async def run(present: object) -> None:
            await run_rdm6300(path, 1, present, debounce_s=3.0)  # type: ignore[arg-type]

        got = await _collect(run, 2)
    finally:
        os.close(master)
        os.close(slave)
    assert got == [(IdTag("0A1B2C3D4E"), 1), (IdTag("1122334455"), 1)]


@pytest.mark.parametrize(
    ("kind", "line", "credential", "presented"),
    [
        ("qr", "v4.public.abc", Token("v4.public.abc"), 1),
        ("rfid", "0A1B2C3D4E", IdTag("0A1B2C3D4E"), 1),
        ("keypad", "12345678", Pin("12345678"), 3),
    ],
)
async def test_hid_rfid_and_qr_repeats_are_one_presentation_keypad_lines_never(
    kind: str, line: str, credential: Credential, presented: int
) -> None:
    master, slave, path = await _pty()
    end = "#" if kind == "keypad" else "\n"
    last = "87654321" if kind == "keypad" else "LAST"
    try:
        os.write(master, encode_events(key_events((line + end) * 3 + last + end)))

        async def run(present: object) -> None:
            await run_hid(path, kind, 1, present, debounce_s=3.0)  # type: ignore[arg-type]

        got = await _collect(run, presented + 1)
    finally:
        os.close(master)
        os.close(slave)
    assert [c for c, _ in got[:-1]] == [credential] * presented
