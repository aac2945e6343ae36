"""HTTP routes of cloud.chargers (being built)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
