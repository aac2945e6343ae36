"""Broker credentials and rights: Mosquitto's dynamic-security plugin, administered over MQTT.

Choice (issue 13, docs/decisions.md): every broker identity lives in the dynamic-security
plugin with default deny. Mosquitto 2.0's ``password_file`` + ``acl_file`` cannot be used:
its ACL-file check grants every SUBSCRIBE (a device's ``$share/ingest/cm/v1/d/+/telemetry``
was granted, so the broker routed a share of every device's uplink to it and then dropped
it on the read ACL), and configured beside a plugin it answers before the plugin does.

Each device gets one client and one role (2.0's plugin has no ``%u`` patterns):

- the client: username = client id = device id. The plugin refuses a CONNECT whose client
  id differs from the one bound to its username, so no device can take another's client id
  (and with it that device's session and queued commands);
- the role: publish only its own uplink topics, subscribe to and receive only its own
  ``cmd`` and ``ack`` topics, by literal name (no wildcard, no ``$share``, no ``$SYS``).

The cloud sends the plugin's commands on ``$CONTROL/dynamic-security/v1`` as the API's broker
identity (``cloud-api``, whose role allows exactly that topic and its response) on a short
connection of its own. The change is live when the plugin answers; deleting a client
disconnects it at once. The plugin saves its file after every change.

Passwords in the plugin's file are PBKDF2-HMAC-SHA512 with a 12-byte salt, both base64
(:func:`hash_password`) — used only to write the starting file with the service identities
(:func:`initial_config`); devices' passwords travel in ``createClient`` and the broker
hashes them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Protocol

from cloud.broker import BrokerLogin, request
from cloud.errors import BrokerError
from protocols.topics import DOWNLINK_KINDS, UPLINK_KINDS, topic

PBKDF2_ITERATIONS = 101
SALT_BYTES = 12
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
#: The starting file of the plugin: default deny, the service roles and clients.
TEMPLATE = Path(__file__).resolve().parents[2] / "deploy/mosquitto/cloud/dynamic-security.json"
#: Answers the plugin gives to a delete of something that is not there.
_NOT_FOUND = ("Client not found", "Role not found")


def hash_password(password: str, *, salt: bytes | None = None) -> tuple[str, str]:
    """``(hash, salt)`` as the dynamic-security plugin stores them (both base64)."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return base64.b64encode(digest).decode(), base64.b64encode(salt).decode()


def new_password() -> str:
    """A broker password: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def device_role(device_id: str) -> str:
    return f"device-{device_id}"


def device_acls(device_id: str) -> list[dict[str, Any]]:
    """The only rights a device has: its own uplink out, its own cmd/ack in (literal)."""
    acls = [
        {"acltype": "publishClientSend", "topic": topic(device_id, kind), "allow": True}
        for kind in sorted(UPLINK_KINDS)
    ]
    for kind in sorted(DOWNLINK_KINDS):
        name = topic(device_id, kind)
        acls.append({"acltype": "subscribeLiteral", "topic": name, "allow": True})
        acls.append({"acltype": "publishClientReceive", "topic": name, "allow": True})
    return acls


def create_device_commands(device_id: str, password: str) -> list[dict[str, Any]]:
    """Plugin commands giving ``device_id`` its client (bound to its client id) and role."""
    role = device_role(device_id)
    return [
        {"command": "createRole", "rolename": role, "acls": device_acls(device_id)},
        {
            "command": "createClient",
            "username": device_id,
            "password": password,
            "clientid": device_id,
            "roles": [{"rolename": role}],
        },
    ]


def delete_device_commands(device_id: str) -> list[dict[str, Any]]:
    # deleteClient first: the plugin disconnects the client the moment it is gone.
    return [
        {"command": "deleteClient", "username": device_id},
        {"command": "deleteRole", "rolename": device_role(device_id)},
    ]


def initial_config(
    service_passwords: dict[str, str],
    devices: dict[str, str] | None = None,
    *,
    template: Path = TEMPLATE,
) -> dict[str, Any]:
    """The plugin's starting file: the shipped template with the service clients' passwords
    filled in (a service with no password given is left out) and, for tests and demos,
    ``devices`` (id -> password) already provisioned."""
    config: dict[str, Any] = json.loads(template.read_text())
    clients = []
    for client in config["clients"]:
        password = service_passwords.get(client["username"])
        if password is None:
            continue
        client["password"], client["salt"] = hash_password(password)
        client["iterations"] = PBKDF2_ITERATIONS
        clients.append(client)
    for device_id, password in (devices or {}).items():
        role = device_role(device_id)
        config["roles"].append({"rolename": role, "acls": device_acls(device_id)})
        pw_hash, salt = hash_password(password)
        clients.append(
            {
                "username": device_id,
                "clientid": device_id,
                "password": pw_hash,
                "salt": salt,
                "iterations": PBKDF2_ITERATIONS,
                "roles": [{"rolename": role}],
            }
        )
    config["clients"] = clients
    return config


class DynsecAdmin:
    """Sends plugin commands and waits for their answers (blocking; one short connection
    per call, :func:`cloud.broker.request`, so there is no admin session to keep alive or to
    lose). ``login`` is the API's broker identity (``cloud-api``)."""

    def __init__(self, login: BrokerLogin, *, timeout_s: float = 10.0) -> None:
        self.login = login
        self.timeout_s = timeout_s

    def run(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send ``commands`` in one message; return the plugin's responses, in order."""
        correlation = secrets.token_hex(8)
        payload = {"commands": [dict(c, correlationData=correlation) for c in commands]}

        def answer(body: bytes) -> list[dict[str, Any]] | None:
            try:
                parsed = json.loads(body)
            except ValueError:
                return None
            responses = parsed.get("responses") if isinstance(parsed, dict) else None
            if not isinstance(responses, list) or not responses:
                return None
            first = responses[0]
            if not isinstance(first, dict) or first.get("correlationData") != correlation:
                return None  # another admin's answer
            return responses

        return request(
            self.login,
            f"{self.login.username}-dynsec-{correlation}",
            topic=CONTROL_TOPIC,
            payload=json.dumps(payload).encode(),
            response_topic=RESPONSE_TOPIC,
            answer=answer,
            timeout_s=self.timeout_s,
        )

    def _checked(
        self, commands: list[dict[str, Any]], *, tolerate: dict[int, tuple[str, ...]]
    ) -> int:
        """Run ``commands``; raise on any error except, for the command at index ``i``, those
        in ``tolerate[i]``; return how many were tolerated."""
        tolerated = 0
        for index, response in enumerate(self.run(commands)):
            error = response.get("error")
            if error is None:
                continue
            if error in tolerate.get(index, ()):
                tolerated += 1
                continue
            raise BrokerError(f"dynamic-security {response.get('command')}: {error}")
        return tolerated

    def set_device(self, device_id: str, password: str) -> None:
        """Give ``device_id`` (fresh) credentials and its role, in one message; an earlier
        client of that name is deleted first, which disconnects it."""
        deletes = delete_device_commands(device_id)
        self._checked(
            [*deletes, *create_device_commands(device_id, password)],
            tolerate=dict.fromkeys(range(len(deletes)), _NOT_FOUND),
        )

    def set_devices(self, devices: dict[str, str]) -> None:
        """:meth:`set_device` for many devices (id -> password) in one plugin message: the
        same commands, one round trip (firmware_sim/fleet.py provisions thousands of sites)."""
        commands: list[dict[str, Any]] = []
        tolerate: dict[int, tuple[str, ...]] = {}
        for device_id, password in devices.items():
            for delete in delete_device_commands(device_id):
                tolerate[len(commands)] = _NOT_FOUND
                commands.append(delete)
            commands.extend(create_device_commands(device_id, password))
        if commands:
            self._checked(commands, tolerate=tolerate)

    def remove_device(self, device_id: str) -> bool:
        """Delete the device's client (disconnecting it at once) and role; False if it had
        neither."""
        deletes = delete_device_commands(device_id)
        tolerated = self._checked(deletes, tolerate=dict.fromkeys(range(len(deletes)), _NOT_FOUND))
        return tolerated < len(deletes)

    def usernames(self) -> set[str]:
        (response,) = self.run([{"command": "listClients"}])
        if "error" in response:
            raise BrokerError(f"dynamic-security listClients: {response['error']}")
        return set(response.get("data", {}).get("clients", []))


class BrokerCredentials(Protocol):
    """Where device credentials live (:class:`DynsecCredentials`; tests may fake it)."""

    async def set_user(self, username: str, password: str) -> None: ...

    async def remove_user(self, username: str) -> bool: ...


class DynsecCredentials:
    """:class:`BrokerCredentials` on the dynamic-security plugin; the blocking round trip
    runs in a thread so the event loop never waits on the broker."""

    def __init__(self, login: BrokerLogin) -> None:
        self.admin = DynsecAdmin(login)

    async def set_user(self, username: str, password: str) -> None:
        await asyncio.to_thread(self.admin.set_device, username, password)

    async def remove_user(self, username: str) -> bool:
        return await asyncio.to_thread(self.admin.remove_device, username)
