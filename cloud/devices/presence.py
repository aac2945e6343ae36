"""Whether a device counts as online (pure): the one rule behind the listing's live status,
the unlock's online/offline choice, stop, and the charger stream's snapshot.

Online means the device's last applied ``status`` said online **and** it was heard from
within ``offline_after_s``. The Last Will says "offline" when the broker notices a dead link,
but a will can be late (one and a half keepalives) or lost with a broker restart, so silence
counts as offline too. A revoked device is offline whatever it last said: the broker refuses
it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cloud.devices.models import Device, DeviceStatus


def device_online(device: Device | None, now: datetime, offline_after_s: int) -> bool:
    """True when ``device`` is active, said online last, and was heard within
    ``offline_after_s`` of ``now``; a missing device (a charger without one) is offline."""
    if device is None or device.status is not DeviceStatus.ACTIVE or not device.online:
        return False
    seen = device.last_seen_at
    return seen is not None and now - seen <= timedelta(seconds=offline_after_s)
