"""Relays: the driver interface, the drivers, and the pure fail-safe rules."""
