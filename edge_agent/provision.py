"""Provisioning: trade a host's one-time pairing code for this device's cloud identity.

``chargemitra-agent provision --code CODE --cloud URL`` posts the code to the cloud's
``POST /devices/claim`` and writes what comes back beside the agent's configuration:

* ``cloud.toml`` — ``device_id``, the ``[mqtt]`` table and ``[auth] public_key_files``; the
  agent merges it over ``agent.toml`` at start (:func:`edge_agent.config.load_config`), so a
  technician never hand-edits credentials into the site's file;
* ``mqtt.password`` (mode 0600) — the broker password;
* ``cloud-token.pub.pem`` — the key that signs unlock tokens;
* ``pin.secret`` (mode 0600) — the per-device secret booking PINs are checked with
  (``[auth] pin_secret_file``), when the cloud sends one.

Files are written to a temporary name and renamed, so a half-written file never replaces a
good one. Only the standard library is used: this runs on the Pi.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge_agent import __version__
from edge_agent.errors import AgentError
from edge_agent.hosts import is_loopback

CLOUD_OVERLAY = "cloud.toml"
PASSWORD_FILE = "mqtt.password"  # noqa: S105 -- a file name
TOKEN_KEY_FILE = "cloud-token.pub.pem"  # noqa: S105 -- a file name
PIN_SECRET_FILE = "pin.secret"  # noqa: S105 -- a file name


class ProvisionError(AgentError):
    """The claim failed: unreachable cloud, refused code, or an answer we cannot use."""


@dataclass(frozen=True, slots=True)
class Claim:
    device_id: str
    broker_host: str
    broker_port: int
    broker_tls: bool
    password: str
    token_public_key_pem: str
    #: The booking-PIN secret; None from a cloud that sends none (PINs then stay off).
    pin_secret: bytes | None = None


def parse_claim(body: dict[str, Any]) -> Claim:
    """Read the cloud's ClaimResponse; raise ProvisionError naming what is missing."""
    try:
        broker = body["broker"]
        url = urlsplit(broker["url"])
        if url.scheme not in {"mqtt", "mqtts"} or not url.hostname:
            raise ValueError(f"broker url {broker['url']!r} is not mqtt(s)://host:port")
        tls = url.scheme == "mqtts"
        return Claim(
            device_id=str(body["device_id"]),
            broker_host=url.hostname,
            broker_port=url.port or (8883 if tls else 1883),
            broker_tls=tls,
            password=str(broker["password"]),
            token_public_key_pem=str(body["token_public_key_pem"]),
            pin_secret=_pin_secret(body.get("pin_secret_b64")),
        )
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise ProvisionError(f"the cloud's answer is not a claim: {exc!r}") from exc


def _pin_secret(value: object) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("pin_secret_b64 is not a string")
    secret = base64.b64decode(value, validate=True)
    if len(secret) < 16:
        raise ValueError("pin_secret_b64 holds fewer than 16 bytes")
    return secret


def claim(cloud_url: str, code: str, *, timeout_s: float = 15.0) -> Claim:
    """POST the pairing code to ``{cloud_url}/devices/claim``."""
    parts = urlsplit(cloud_url)
    if parts.scheme != "https" and not (
        parts.scheme == "http" and is_loopback(parts.hostname or "")
    ):
        raise ProvisionError(
            f"refusing {cloud_url}: the pairing code and credentials travel only over https "
            "(plain http only to this machine)"
        )
    request = urllib.request.Request(  # noqa: S310 -- scheme checked above
        cloud_url.rstrip("/") + "/devices/claim",
        data=json.dumps({"code": code, "agent_version": __version__}).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        raise ProvisionError(f"the cloud refused the code (HTTP {exc.code}): {detail}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ProvisionError(f"cannot reach {cloud_url}: {exc}") from exc
    if not isinstance(body, dict):
        raise ProvisionError("the cloud's answer is not a JSON object")
    return parse_claim(body)


def _write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _write_bytes(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def write_claim(result: Claim, directory: Path, *, ca_file: Path | None = None) -> Path:
    """Write the overlay, password and key into ``directory``; return the overlay's path."""
    directory.mkdir(parents=True, exist_ok=True)
    password = directory / PASSWORD_FILE
    key = directory / TOKEN_KEY_FILE
    _write(password, result.password + "\n", 0o600)
    _write(key, result.token_public_key_pem, 0o644)
    lines = [
        "# Written by `chargemitra-agent provision`; merged over agent.toml at start.",
        f"device_id = {_toml_string(result.device_id)}",
        "",
        "[mqtt]",
        f"host = {_toml_string(result.broker_host)}",
        f"port = {result.broker_port}",
        f"tls = {'true' if result.broker_tls else 'false'}",
        f"username = {_toml_string(result.device_id)}",
        f"password_file = {_toml_string(str(password))}",
    ]
    if ca_file is not None:
        lines.append(f"ca_file = {_toml_string(str(ca_file))}")
    lines += ["", "[auth]", f"public_key_files = [{_toml_string(str(key))}]"]
    if result.pin_secret is not None:
        pin_secret = directory / PIN_SECRET_FILE
        _write_bytes(pin_secret, result.pin_secret, 0o600)
        lines.append(f"pin_secret_file = {_toml_string(str(pin_secret))}")
    lines.append("")
    overlay = directory / CLOUD_OVERLAY
    _write(overlay, "\n".join(lines), 0o644)
    return overlay
