"""The listing operations under one name, for the pages (cloud/web) that call them as
``chargers.<name>``. Each lives in the module named for what it holds: access.py (who may
touch which listing), editing.py (create and edit, availability), moderation.py, views.py
(public and host views); new code imports from those."""

from __future__ import annotations

from cloud.chargers.access import charger_by_code, editable_charger, public_charger
from cloud.chargers.editing import (
    add_blocked_period,
    create_charger,
    delete_blocked_period,
    host_chargers,
    set_availability,
    update_charger,
)
from cloud.chargers.moderation import moderate, moderation_queue
from cloud.chargers.views import connector_out, connectors_of, host_view, pricing_out, public_view

__all__ = [
    "add_blocked_period",
    "charger_by_code",
    "connector_out",
    "connectors_of",
    "create_charger",
    "delete_blocked_period",
    "editable_charger",
    "host_chargers",
    "host_view",
    "moderate",
    "moderation_queue",
    "pricing_out",
    "public_charger",
    "public_view",
    "set_availability",
    "update_charger",
]
