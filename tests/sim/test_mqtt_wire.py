"""The fleet simulator's MQTT framing (firmware_sim/mqtt_wire.py): packets are cut out of the
byte stream whatever the TCP segments look like, and a malformed length closes the link."""

from __future__ import annotations

import random
import struct

import pytest

from firmware_sim.mqtt_wire import MqttLink, _Wire
from protocols.mqtt5 import PINGRESP, PUBACK, PUBLISH, frame, packet, utf8, vbi


def _publish(topic: str, payload: bytes, packet_id: int | None) -> bytes:
    qos = 0x02 if packet_id is not None else 0
    body = utf8(topic) + (struct.pack("!H", packet_id) if packet_id else b"") + vbi(0) + payload
    return packet(PUBLISH, qos, body)


class _Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.pubacks: list[tuple[int, int]] = []
        self.closed = 0

    def link(self) -> MqttLink:
        link = MqttLink(
            lambda t, p: self.messages.append((t, p)),
            lambda pid, reason: self.pubacks.append((pid, reason)),
            self._on_close,
        )
        link.closed = False  # as after a CONNACK
        return link

    def _on_close(self) -> None:
        self.closed += 1


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_383, 16_384, 300_000])
def test_a_body_is_found_only_once_all_of_it_is_there(size: int) -> None:
    whole = packet(PUBLISH, 0, b"x" * size)
    header = len(whole) - size
    buffer = bytearray(whole)
    assert frame(buffer, 0) == (header, len(whole))
    for cut in (1, header - 1, header, len(whole) - 1):
        if 0 < cut < len(whole):
            assert frame(bytearray(whole[:cut]), 0) is None


def test_packets_are_cut_out_of_any_segmentation() -> None:
    """Whatever the segment boundaries, every packet arrives once, whole, in order: PUBLISHes
    of every QoS and size, PUBACKs with and without a reason code, a PINGRESP."""
    rng = random.Random(21)
    stream = b""
    expected_messages = []
    for i in range(200):
        payload = bytes(rng.randrange(256) for _ in range(rng.choice([0, 5, 200, 3000])))
        stream += _publish(f"cm/v1/d/dev-{i}/ack", payload, None if i % 3 else i + 1)
        expected_messages.append((f"cm/v1/d/dev-{i}/ack", payload))
        stream += packet(PUBACK, 0, struct.pack("!H", i + 1) + (b"\x10" if i % 2 else b""))
        stream += packet(PINGRESP, 0, b"")
    for _ in range(5):
        recorder = _Recorder()
        wire = _Wire(recorder.link())
        at = 0
        while at < len(stream):
            step = rng.choice([1, 2, 3, 7, 100, 1500, 65536])
            wire.data_received(stream[at : at + step])
            at += step
        assert recorder.messages == expected_messages
        assert recorder.pubacks == [(i + 1, 0x10 if i % 2 else 0) for i in range(200)]
        assert recorder.closed == 0


def test_a_malformed_length_closes_the_link() -> None:
    recorder = _Recorder()
    wire = _Wire(recorder.link())
    wire.data_received(bytes([PUBLISH << 4, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]))
    assert recorder.closed == 1
    assert recorder.messages == []
