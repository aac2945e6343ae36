"""The booking race (issue 7): 200 drivers, 50 contested slots, the real API over real HTTP.

The API runs as its own ``chargemitra-cloud serve`` process (uvicorn, its own connection
pool of the configured size), and every driver posts on its own connection at the same
moment. The database's exclusion constraint is the only thing deciding who wins.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from cloud.pg import PgConnection
from tests.support.bookings_fixtures import race_requests, race_round, race_setup, serve_api
from tests.support.cloud_env import make_settings
from tests.support.mosquitto import Broker

pytestmark = [pytest.mark.slow, pytest.mark.integration]


async def test_200_drivers_racing_for_50_slots_get_exactly_50_bookings(
    db_url: str,
    broker: Broker,
    service_passwords: dict[str, str],
    pg: PgConnection,
    tmp_path: Path,
) -> None:
    settings = make_settings(db_url, broker, service_passwords["cloud-api"], username="cloud-api")
    plan = await race_setup(pg, settings, drivers=200)
    requests = race_requests(plan)
    assert len(requests) == 200
    assert len({r.driver.id for r in requests}) == 200
    assert len({r.slot for r in requests}) == 50

    async with serve_api(settings, tmp_path / "api.log") as base_url:
        result = await race_round(base_url, pg, plan, requests)

    outcomes, statuses = result.outcomes, result.statuses
    assert not [o for o in outcomes if o.status >= 500], (tmp_path / "api.log").read_text()
    assert statuses == {201: 50, 409: 150}
    # Every refusal is the overlap problem, and every slot has exactly one winner.
    assert {o.problem_type for o in outcomes if o.status == 409} == {
        "https://chargemitra.in/problems/booking-overlap"
    }
    winners = Counter(o.request.slot for o in outcomes if o.status == 201)
    assert sorted(winners) == list(range(50))
    assert set(winners.values()) == {1}

    assert result.overlaps == 0
    charger_ids = [c.id for c in plan.chargers]
    rows = await pg.fetch(
        "SELECT status, count(*) AS n FROM bookings WHERE charger_id = ANY($1::text[]) "
        "GROUP BY status",
        charger_ids,
    )
    assert {r["status"]: r["n"] for r in rows} == {"confirmed": 50}
