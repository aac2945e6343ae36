"""Reconnect backoff: the one exponential-with-equal-jitter rule, shared with the cloud's
retrying jobs, lives in :mod:`protocols.backoff` (pure, importable by both sides)."""

from __future__ import annotations

from protocols.backoff import Backoff

__all__ = ["Backoff"]
