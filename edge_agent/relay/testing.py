"""An in-memory relay for tests, demos and the simulator: records every command, can be
made to fail, and can be welded (stuck closed) to exercise the stuck-relay rule."""

from __future__ import annotations

from edge_agent.errors import RelayError


class FakeRelay:
    """A relay held in memory. ``welded``: commands succeed but the contacts stay closed."""

    name = "fake"

    def __init__(self, connector: int = 1) -> None:
        self.connector = connector
        self.commanded: bool = False
        self.welded = False
        self.fail = False
        self.history: list[bool] = []

    @property
    def contacts_closed(self) -> bool:
        """Whether power can physically flow (what a meter would see)."""
        return self.commanded or self.welded

    async def set_closed(self, closed: bool) -> None:
        if self.fail:
            raise RelayError("fake relay set to fail", connector=self.connector)
        self.commanded = closed
        self.history.append(closed)

    async def is_closed(self) -> bool | None:
        if self.fail:
            raise RelayError("fake relay set to fail", connector=self.connector)
        return self.commanded
