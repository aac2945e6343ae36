"""FastAPI dependencies: the app state and a database session per request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.state import AppState


def get_state(request: Request) -> AppState:
    state = request.app.state.cloud
    assert isinstance(state, AppState)
    return state


State = Annotated[AppState, Depends(get_state)]


async def get_db(state: State) -> AsyncIterator[AsyncSession]:
    """A session whose transaction commits when the handler returns, rolls back on error."""
    async with state.sessions() as session, session.begin():
        yield session


Db = Annotated[AsyncSession, Depends(get_db)]
