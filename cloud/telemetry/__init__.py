"""Meter telemetry: storage (Timescale or plain) and the one query interface."""
