"""The cloud's one MQTT client (cloud/broker.py) against the project's Mosquitto: a publish
returns once the broker acknowledged it and raises BrokerError when it did not — no
connection, a refusal — and the link reconnects by itself after a broker restart; the
dynamic-security admin's round trip fails with BrokerError, not a socket error. The same
client byte by byte: tests/cloud/test_broker_wire.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr

from cloud.broker import BrokerLogin, open_broker_link
from cloud.devices.broker_auth import DynsecAdmin
from cloud.errors import BrokerError, BrokerUnacknowledged, ConfigError
from cloud.settings import MqttSettings
from edge_agent.testing import close_threaded
from protocols.enums import MessageKind
from protocols.topics import topic
from tests.support.cloud_env import add_device, make_settings
from tests.support.mosquitto import Broker, free_port
from tests.support.sim_device import wait_for

pytestmark = pytest.mark.integration

DEVICE = "cm-01brokerlinktestdevice000"


async def test_sent_means_acknowledged_and_the_link_comes_back_after_a_broker_restart(
    db_url: str, broker: Broker, service_passwords: dict[str, str]
) -> None:
    settings = make_settings(db_url, broker, service_passwords["cloud-api"], username="cloud-api")
    command_topic = topic(DEVICE, MessageKind.CMD)
    async with open_broker_link(settings.mqtt, "api-broker-link-test") as link:
        await wait_for(lambda: link.connected, timeout_s=10)
        # Acknowledged (no one subscribes: MQTT 5's "no matching subscribers" is no failure).
        await link.publish(command_topic, b"one", expiry_s=60)
        # The API's identity may not publish a device's acks: the broker's PUBACK says 0x87.
        with pytest.raises(BrokerError, match="refused") as refused:
            await link.publish(topic(DEVICE, MessageKind.ACK), b"forged")
        assert not isinstance(refused.value, BrokerUnacknowledged)
        # Handed over, but no PUBACK within the wait: "unknown", the broker may have it.
        with pytest.raises(BrokerUnacknowledged, match="no PUBACK"):
            await link.publish(command_topic, b"zero", expiry_s=60, timeout_s=0)

        # The admin's round trip with a wrong password: the broker's CONNACK refuses it.
        stranger = DynsecAdmin(BrokerLogin("127.0.0.1", broker.port, "cloud-api", "wrong"))
        with pytest.raises(BrokerError, match="refused"):
            stranger.usernames()

        broker.stop()
        await wait_for(lambda: not link.connected, timeout_s=10)
        with pytest.raises(BrokerError, match="not connected") as nothing_sent:
            await link.publish(command_topic, b"two", expiry_s=60)
        assert not isinstance(nothing_sent.value, BrokerUnacknowledged)
        with pytest.raises(BrokerError, match="not connected"):
            link.publish_nowait(command_topic, b"two", expiry_s=60)
        # Its administration fails the same way, translated at the same boundary.
        with pytest.raises(BrokerError, match="cannot reach the broker"):
            broker.admin().usernames()

        broker.start()
        await wait_for(lambda: link.connected, timeout_s=30)
        await link.publish(command_topic, b"three", expiry_s=60)


async def test_an_unreadable_ca_file_fails_at_startup_with_a_config_error(
    db_url: str, broker: Broker, service_passwords: dict[str, str], tmp_path: Path
) -> None:
    """Not an OSError out of the reconnect task (which would take the API's lifespan down
    with an unrelated traceback), and not re-read on every reconnect."""
    settings = make_settings(db_url, broker, service_passwords["cloud-api"], username="cloud-api")
    mqtt = settings.mqtt.model_copy(update={"tls": True, "ca_file": tmp_path / "missing.pem"})
    with pytest.raises(ConfigError, match="CA file") as caught:
        async with open_broker_link(mqtt, "api-broker-link-ca-test"):
            pass
    assert caught.value.variable == "CHARGEMITRA_MQTT_CA_FILE"


async def test_an_error_in_the_block_leaves_it_as_itself_not_an_exception_group(
    db_url: str, broker: Broker, service_passwords: dict[str, str]
) -> None:
    """The API's lifespan enters the link before Redis and the rest: a startup failure there
    must reach the caller's ``except CloudError`` with its own type."""
    settings = make_settings(db_url, broker, service_passwords["cloud-api"], username="cloud-api")
    with pytest.raises(BrokerError, match="later startup step") as caught:
        async with open_broker_link(settings.mqtt, "api-broker-link-body-test"):
            raise BrokerError("a later startup step failed") from OSError("refused")
    assert type(caught.value) is BrokerError
    assert isinstance(caught.value.__cause__, OSError)


async def test_a_delivery_is_acknowledged_on_its_connection_even_when_none_is_current(
    db_url: str, broker: Broker, service_passwords: dict[str, str]
) -> None:
    """A manual-ack link PUBACKs through the connection that delivered the message while it
    lasts — also when the link has no current connection (a persistent session's messages
    arrive before the run loop makes the new connection current)."""
    settings = make_settings(db_url, broker, service_passwords["cloud-api"], username="cloud-api")
    status_topic = topic(DEVICE, MessageKind.STATUS)
    async with open_broker_link(
        settings.mqtt, "api-broker-link-ack-test", subscriptions=[status_topic], manual_ack=True
    ) as link:
        await wait_for(lambda: link.connected, timeout_s=10)
        device = paho.Client(CallbackAPIVersion.VERSION2, client_id=DEVICE, protocol=paho.MQTTv5)
        device.username_pw_set(DEVICE, add_device(broker, DEVICE))
        device.connect("127.0.0.1", broker.port)
        device.loop_start()
        try:
            device.publish(status_topic, b"{}", qos=1).wait_for_publish(10)
            delivery = await asyncio.wait_for(link.messages.get(), 10)
        finally:
            close_threaded(device)
        connection = link._current
        assert connection is not None
        assert connection.number == delivery.connection
        acked: list[int] = []
        real_puback = connection.puback

        def spy(mid: int) -> None:
            acked.append(mid)
            real_puback(mid)

        connection.puback = spy  # type: ignore[method-assign,assignment]
        link._current = None  # the window between a connection's CONNACK and the run loop
        try:
            link.ack(delivery)
        finally:
            link._current = connection
        assert acked == [delivery.mid]


async def test_the_link_keeps_as_many_messages_in_flight_as_the_broker_receives(
    db_url: str, broker: Broker, service_passwords: dict[str, str]
) -> None:
    """The link takes the broker's Receive Maximum from its CONNACK (the cloud broker's
    max_inflight_messages), so ingest's acks do not queue behind a smaller window (paho's
    default of 20 once did) — and all of a burst larger than it arrive."""
    settings = make_settings(db_url, broker, service_passwords["cloud-api"], username="cloud-api")
    conf = broker.conf.read_text()
    (limit,) = [
        int(line.split()[1])
        for line in conf.splitlines()
        if line.startswith("max_inflight_messages ")
    ]
    assert limit > 20
    async with open_broker_link(settings.mqtt, "api-broker-link-inflight-test") as link:
        await wait_for(lambda: link.connected, timeout_s=10)
        connection = link._current
        assert connection is not None
        assert connection.receive_maximum == limit
        command_topic = topic(DEVICE, MessageKind.CMD)
        await asyncio.gather(*(link.publish(command_topic, b"%d" % i) for i in range(3 * limit)))


async def test_a_burst_larger_than_a_small_receive_maximum_goes_through_on_one_connection(
    db_url: str, tmp_path: Path
) -> None:
    """Sending more unacknowledged messages than the broker's Receive Maximum is a protocol
    error the broker disconnects for: the link holds the rest back until PUBACKs free room,
    so a burst ten times the limit goes through without the connection ending."""
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_inflight_messages 20\n"
    )
    small = Broker(directory=tmp_path, conf=conf, port=port)
    small.start()
    try:
        settings = MqttSettings(
            host="127.0.0.1", port=port, username="anyone", password=SecretStr("anything")
        )
        async with open_broker_link(settings, "api-broker-link-small-window-test") as link:
            await wait_for(lambda: link.connected, timeout_s=20)
            connection = link._current
            assert connection is not None
            assert connection.receive_maximum == 20
            await asyncio.gather(*(link.publish("t", b"%d" % i) for i in range(200)))
            assert link._current is connection
            assert link._number == 1
    finally:
        small.stop()
