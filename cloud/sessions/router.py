"""HTTP routes of cloud.sessions (being built)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
