"""One supervisor for the cloud's background jobs (issue 14): the settle job, the notification
delivery job, the ingest worker's jobs, the principal listener.

:func:`supervise` runs a job's body for ever. When the body raises, the failure is logged
with the job's name, counted (``chargemitra_worker_job_failures_total{task}``), waited out
with exponential backoff and jitter (:class:`protocols.backoff.Backoff`), and the body runs
again. Only cancellation ends it: ``CancelledError`` is not an ``Exception`` and goes
through. Why it matters: these jobs run in task groups (the API's lifespan, the ingest
worker); an exception that left a job would cancel the group — in the API, its lifespan,
closing the engine and Redis while uvicorn kept serving on them (issue 14); in the worker,
the whole process, and every restarted worker after it (issue 13).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from cloud.metrics import WORKER_JOB_FAILURES
from protocols.backoff import Backoff

log = logging.getLogger(__name__)

#: A failed job resumes after about 0.5 s, doubling up to a minute (equal jitter).
JOB_BACKOFF = Backoff(initial_s=0.5, max_s=60.0)
#: A body that ran this long before failing starts its backoff afresh.
JOB_HEALTHY_S = 60.0


def every(
    interval_s: float, round_: Callable[[], Awaitable[object]]
) -> Callable[[], Awaitable[None]]:
    """A job body that runs ``round_`` then sleeps ``interval_s``, for ever."""

    async def body() -> None:
        while True:
            await round_()
            await asyncio.sleep(interval_s)

    return body


async def supervise(
    job: str,
    body: Callable[[], Awaitable[None]],
    *,
    expected: tuple[type[Exception], ...] = (),
    backoff: Backoff = JOB_BACKOFF,
    healthy_s: float = JOB_HEALTHY_S,
    on_failure: Callable[[str, Exception], None] | None = None,
) -> None:
    """Run ``body()`` for ever; when it raises, log, count, back off with jitter, rerun.

    ``expected`` failures (the database restarting, a dependency down) are logged as one
    warning line; anything else with its traceback, as the bug it is. ``on_failure`` is
    told each failure (the ingest worker's stats). A body that returns is restarted the
    same way: the jobs loop for ever, so returning is a bug, not a reason to stop.
    """
    loop = asyncio.get_running_loop()
    failures = 0
    while True:
        started = loop.time()
        try:
            await body()
        except Exception as exc:  # noqa: BLE001 -- the supervisor outlives any failure
            failure: Exception = exc
        else:
            failure = RuntimeError(f"the {job} job returned")
        if loop.time() - started >= healthy_s:
            failures = 0
        delay = backoff.delay_s(failures)
        failures += 1
        WORKER_JOB_FAILURES.labels(job).inc()
        if on_failure is not None:
            on_failure(job, failure)
        if isinstance(failure, expected):
            log.warning("%s job failed (%s); resuming in %.1f s", job, failure, delay)
        else:
            log.error("%s job failed; resuming in %.1f s", job, delay, exc_info=failure)
        await asyncio.sleep(delay)
