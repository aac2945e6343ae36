"""The one exception tree of :mod:`firmware_sim`.

Whatever goes wrong in the simulator reaches the user (or a test) as one of these; the CLI
prints its text as one line and exits non-zero::

    SimError
    ├── ConfigError       a setting the simulator cannot honour (unknown meter model, bad baud,
    │                     parity, unit id, EV profile, RFID tag, fault name or duration)
    ├── EndpointError     a port or device that cannot be opened (TCP port in use, no pty)
    ├── ControlError      the control interface refused a command or cannot be reached
    └── FleetError        the fleet simulator's processes ended without their reports, or
                          sent none in time (firmware_sim/fleet.py ``run_fleet``)

Each error carries the field that identifies what failed (``field``, ``endpoint``,
``status``) as an attribute, not only in its text.
"""

from __future__ import annotations


class SimError(Exception):
    """Base of every error raised by :mod:`firmware_sim`."""


class ConfigError(SimError):
    """A setting the simulator cannot honour; ``field`` names it (``"model"``, ``"baud"`` …)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class EndpointError(SimError):
    """A listening port or a pseudo-terminal that cannot be opened."""

    def __init__(self, message: str, *, endpoint: str) -> None:
        super().__init__(message)
        self.endpoint = endpoint


class ControlError(SimError):
    """The control interface answered with an error (``status``) or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class FleetError(SimError):
    """A fleet run (:func:`firmware_sim.fleet.run_fleet`) that produced no complete report."""
