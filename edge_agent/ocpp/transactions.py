"""Transaction messages: from the store's session events into the durable queue, and from the
queue to the CSMS, one at a time and in order (OCPP 1.6 §4.7, §4.10 and §3.1.6 of OCPP-J's
"one call in flight").

* The queue (:mod:`edge_agent.store.ocpp`) is filled from ``session_events`` by a cursor; a
  session's later messages follow its StartTransaction in the one queue, so they wait until
  the CSMS has given the transaction id they must carry. A StopTransaction is never sent
  with an id the CSMS did not hand out.
* A CALLERROR counts an attempt; the message is tried again after
  TransactionMessageRetryInterval times the attempts so far, and given up after
  TransactionMessageAttempts (a StartTransaction given up takes its session's later
  messages with it). No answer at all is not an attempt: the link is considered broken and
  the message goes again after reconnecting.
* A StartTransaction answered with an idTagInfo other than Accepted stops the session
  (StopTransactionOnInvalidId: DeAuthorized), through the control layer's stop. The refusal
  is stored in the same commit that takes the message off the queue, and marked acted on
  only after the stop was asked for: killed in between, the agent stops the session at its
  next start (:meth:`TransactionQueue.stop_refused`).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from edge_agent.errors import OcppCallFailed
from edge_agent.ocpp import messages as build
from edge_agent.ocpp.keys import KeyStore
from edge_agent.store import ocpp as queue
from edge_agent.store.db import translated
from protocols.enums import CredentialKind, MessageKind, SessionEventType
from protocols.errors import MessageError
from protocols.messages import SessionEvent, parse_message

log = logging.getLogger(__name__)

Call = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class TransactionQueue:
    """Fills and drains the queue; :meth:`fill` is safe to call at any time (one thread)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        keys: KeyStore,
        *,
        foreign_id_tag: str,
        deauthorize: Callable[[str], Awaitable[None]],
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self._conn = conn
        self._keys = keys
        self._foreign = foreign_id_tag
        self._deauthorize = deauthorize
        self._mono = mono
        #: The last MeterValues sample queued per session (sampling; lost on restart, which
        #: costs at most one extra sample).
        self._sampled: dict[str, datetime] = {}
        #: The head's id and when it may be tried again (after a CALLERROR).
        self._retry: tuple[int, float] | None = None
        self.given_up = 0

    def depth(self) -> int:
        with translated("OCPP queue not read"):
            return queue.depth(self._conn)

    def fill(self) -> int:
        """Queue the transaction messages of the session events recorded since the cursor;
        return how many events were read."""
        with translated("OCPP queue not filled"):
            after = queue.cursor(self._conn)
            events = queue.events_after(self._conn, after)
            if not events:
                return 0
            messages: list[queue.NewMessage] = []
            starts: list[tuple[str, int, str | None]] = []
            #: Sessions started in this batch, and their tags (not in the store yet).
            started: dict[str, str] = {}
            for _, payload in events:
                try:
                    event = parse_message(MessageKind.SESSION, payload)
                except MessageError as exc:
                    log.error("OCPP: a stored session event does not parse: %s", exc)
                    continue
                if not isinstance(event, SessionEvent):
                    continue
                sid = event.session_id
                known = sid in started or queue.known_session(self._conn, sid)
                if event.event is SessionEventType.STARTED:
                    tag = self._id_tag(event)
                    starts.append((sid, event.connector, tag))
                    started[sid] = tag
                    start = build.start_transaction(event, tag)
                    messages.append(queue.NewMessage(sid, queue.START, start))
                elif not known:
                    continue  # started before the uplink was enabled, or its start given up
                elif event.event is SessionEventType.UPDATED:
                    sample = self._sample(event)
                    if sample is not None:
                        messages.append(queue.NewMessage(sid, queue.METER_VALUES, sample))
                else:
                    self._sampled.pop(sid, None)
                    held = started.get(sid) or queue.session_id_tag(self._conn, sid)
                    stop = build.stop_transaction(event, held)
                    messages.append(queue.NewMessage(sid, queue.STOP, stop))
            queue.enqueue(
                self._conn, messages, starts=starts, cursor_to=events[-1][0], now=datetime.now(UTC)
            )
        return len(events)

    async def fill_all(self) -> int:
        """``fill`` page after page until the cursor reaches the newest event, yielding to the
        event loop between pages; return how many events were read.

        The uplink wakes on new session events only, so a backlog longer than a page (the
        uplink switched off for a while and on again) must be read to its end here, or an idle
        site would move one page per new event."""
        read = 0
        while (page := self.fill()) > 0:
            read += page
            if page < queue.EVENTS_PAGE:
                break
            await asyncio.sleep(0)
        return read

    def _id_tag(self, event: SessionEvent) -> str:
        if event.credential.kind is CredentialKind.ID_TAG:
            tag = queue.id_tag_of(self._conn, event.credential.ref)
            if tag is not None:
                return tag
        return self._foreign

    def _sample(self, event: SessionEvent) -> dict[str, Any] | None:
        interval_s = self._keys.int_value("MeterValueSampleInterval")
        if interval_s == 0:
            return None
        last = self._sampled.get(event.session_id)
        # 0.9: progress events come about every interval, a little early or late; a strict
        # comparison would drop every other one when the two intervals are equal.
        if last is not None and event.ts < last + timedelta(seconds=0.9 * interval_s):
            return None
        wanted = self._keys.value("MeterValuesSampledData") or ""
        measurands = [m for m in wanted.split(",") if m]
        payload = build.meter_values(event, measurands)
        if payload is not None:
            self._sampled[event.session_id] = event.ts
        return payload

    def wait_s(self) -> float | None:
        """Seconds until the head may be tried again (None: it may go now)."""
        if self._retry is None:
            return None
        return max(0.0, self._retry[1] - self._mono())

    async def send_head(self, call: Call) -> bool:
        """Send the oldest message and act on the answer; False when the queue is empty or
        the head waits for its retry time. A broken link raises (the message stays)."""
        with translated("OCPP queue not read"):
            head = queue.head(self._conn)
        if head is None:
            self._retry = None  # nothing left to wait for: the sender sleeps until woken
            return False
        if self._retry is not None:
            if self._retry[0] == head.id and self._retry[1] > self._mono():
                return False
            self._retry = None
        payload = dict(head.payload)
        if head.action != queue.START:
            if head.transaction_id is None:
                # Cannot happen while the queue keeps its order (the start is ahead of it);
                # never guess an id.
                log.error(
                    "OCPP: %s of session %s has no transaction id: dropped",
                    head.action,
                    head.session_id,
                )
                with translated("OCPP queue not updated"):
                    queue.give_up(self._conn, head)
                return True
            payload["transactionId"] = head.transaction_id
        try:
            answer = await call(head.action, payload)
        except OcppCallFailed as exc:
            if exc.code is None:
                raise
            self._failed(head, exc)
            return True
        transaction_id = answer.get("transactionId") if head.action == queue.START else None
        info = answer.get("idTagInfo")
        refused: str | None = None
        if (
            head.action == queue.START
            and isinstance(info, dict)
            and info.get("status") != "Accepted"
        ):
            refused = str(info.get("status"))
        with translated("OCPP queue not updated"):
            queue.delivered(self._conn, head, transaction_id=transaction_id, refused=refused)
        if refused is not None:
            log.warning(
                "OCPP: the CSMS refused session %s's id tag (%s): stopping it",
                head.session_id,
                refused,
            )
            await self._act_on_refusal(head.session_id)
        return True

    async def stop_refused(self) -> int:
        """Stop every session the CSMS refused whose stop was not asked for yet (the agent
        was killed between storing the refusal and stopping): at the uplink's start. Returns
        how many refusals were acted on."""
        with translated("OCPP queue not read"):
            pending = queue.refusals_to_act_on(self._conn)
        for session_id in pending:
            log.warning(
                "OCPP: session %s was refused by the CSMS before a restart: stopping "
                "it if it is still open",
                session_id,
            )
            await self._act_on_refusal(session_id)
        return len(pending)

    async def _act_on_refusal(self, session_id: str) -> None:
        # Marked only after the stop was asked for: a crash in between repeats the stop
        # (a no-op for a session no longer open), never skips it.
        await self._deauthorize(session_id)
        with translated("OCPP queue not updated"):
            queue.refusal_acted_on(self._conn, session_id)

    def _failed(self, head: queue.Queued, exc: OcppCallFailed) -> None:
        with translated("OCPP queue not updated"):
            attempts = queue.attempt_failed(self._conn, head)
            limit = self._keys.int_value("TransactionMessageAttempts")
            if attempts >= limit:
                dropped = queue.give_up(self._conn, head)
                self.given_up += dropped
                log.error(
                    "OCPP: %s of session %s given up after %d attempts (%s); %d message(s) dropped",
                    head.action,
                    head.session_id,
                    attempts,
                    exc,
                    dropped,
                )
                return
        interval_s = self._keys.int_value("TransactionMessageRetryInterval")
        self._retry = (head.id, self._mono() + interval_s * attempts)
        log.warning(
            "OCPP: %s refused (%s), attempt %d of %d; again in %d s",
            head.action,
            exc,
            attempts,
            limit,
            interval_s * attempts,
        )
