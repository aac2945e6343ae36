"""One decision per presentation: a credential seen again within a few seconds is the same.

An RDM6300 repeats its frame for as long as a card lies on it, and a QR scanner rescans the
code in front of it; without this each repeat would be an authorization decision and an
outbox row. :class:`Debounce` is pure (the caller passes the monotonic time).
"""

from __future__ import annotations

#: Long enough to cover a card held for a moment, short enough to let a driver tap again.
DEFAULT_DEBOUNCE_S = 3.0


class Debounce:
    """Admits a value unless the same value was seen less than ``window_s`` ago.

    Every sighting renews the window, so a card left on the reader is one presentation however
    long it stays; it counts again once it has been away for ``window_s``. ``window_s`` 0
    admits everything.
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._last_seen: dict[str, float] = {}

    def admit(self, value: str, mono: float) -> bool:
        """Whether ``value``, seen at ``mono``, is a new presentation."""
        # Forget values not seen for a window: the map holds only what is on a reader now.
        self._last_seen = {v: t for v, t in self._last_seen.items() if mono - t < self.window_s}
        fresh = value not in self._last_seen
        if self.window_s > 0:
            self._last_seen[value] = mono
        return fresh
