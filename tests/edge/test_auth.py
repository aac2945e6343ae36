"""Offline authorization: local list, cache, tokens, PINs, lockout — one decision path."""

from __future__ import annotations

import sqlite3
import tempfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.auth.authorizer import Authorizer, Credential, IdTag, Moment, Pin, Token
from edge_agent.auth.decision import AuthVerdict, ListEntry, decide_id_tag
from edge_agent.auth.lockout import Lockout
from edge_agent.errors import StaleAuthListVersion, StoreError
from edge_agent.store import auth as auth_store
from edge_agent.store import outbox
from edge_agent.store.db import connect, transaction
from protocols.enums import AuthListUpdateType, AuthorizationStatus, CredentialKind, MessageKind
from protocols.ids import new_ulid
from protocols.idtags import hash_id_tag
from protocols.messages import AuthDecision as AuthDecisionMessage
from protocols.messages import AuthListEntry, AuthListUpdate, parse_message
from protocols.pins import issue_pin
from protocols.tokens import PrivateKey, TokenVerifier, UnlockClaims, sign_unlock_token

from .conftest import T0

S = AuthorizationStatus
CHARGER = "site-1"
SECRET = b"0123456789abcdef-secret"
KEY = PrivateKey.generate()
AT = Moment(now=T0, mono=100.0, clock_synced=True)


def _token(
    key: PrivateKey = KEY,
    *,
    charger: str = CHARGER,
    connector: int = 1,
    nbf: datetime = T0 - timedelta(minutes=5),
    exp: datetime = T0 + timedelta(minutes=30),
    jti: str | None = None,
) -> str:
    claims = UnlockClaims(
        charger_id=charger,
        connector=connector,
        user_ref="u1",
        jti=jti or new_ulid(),
        nbf=nbf,
        exp=exp,
        booking_id="b1",
        max_wh=20_000,
    )
    return sign_unlock_token(key, claims)


def _update(version: int, kind: AuthListUpdateType, entries: list[AuthListEntry]) -> AuthListUpdate:
    return AuthListUpdate(version=version, update_type=kind, entries=entries)


def _entry(tag: str, status: S | None, expires_at: datetime | None = None) -> AuthListEntry:
    return AuthListEntry(id_tag_hash=hash_id_tag(tag), status=status, expires_at=expires_at)


@pytest.fixture
def authorizer(conn: sqlite3.Connection) -> Authorizer:
    return Authorizer(
        conn,
        charger_id=CHARGER,
        verifier=TokenVerifier([KEY.public_key()]),
        pin_secret=SECRET,
        lockout=Lockout(max_failures=3, lockout_s=60.0),
    )


def _apply(conn: sqlite3.Connection, update: AuthListUpdate) -> int:
    with transaction(conn):
        return auth_store.apply_auth_list_update(conn, update)


# --- pure decision ---------------------------------------------------------------------------


def test_local_list_wins_over_cache_and_expiry_is_checked() -> None:
    blocked = ListEntry(S.BLOCKED)
    accepted = ListEntry(S.ACCEPTED)
    assert decide_id_tag("h", blocked, accepted, T0).status is S.BLOCKED
    assert decide_id_tag("h", None, accepted, T0).status is S.ACCEPTED
    assert decide_id_tag("h", None, None, T0).status is S.UNKNOWN
    old = ListEntry(S.ACCEPTED, T0 - timedelta(seconds=1))
    assert decide_id_tag("h", old, None, T0).status is S.EXPIRED


# --- local list ------------------------------------------------------------------------------


def test_local_list_full_then_differential_and_old_versions_refused(
    conn: sqlite3.Connection, authorizer: Authorizer
) -> None:
    assert auth_store.auth_list_version(conn) == 0
    full = [_entry("AA11", S.ACCEPTED), _entry("BB22", S.ACCEPTED), _entry("CC33", S.BLOCKED)]
    assert _apply(conn, _update(3, AuthListUpdateType.FULL, full)) == 3
    diff = [_entry("AA11", None), _entry("DD44", S.ACCEPTED), _entry("BB22", S.BLOCKED)]
    assert _apply(conn, _update(4, AuthListUpdateType.DIFFERENTIAL, diff)) == 3
    for version in (4, 2):
        with pytest.raises(StaleAuthListVersion) as info:
            _apply(conn, _update(version, AuthListUpdateType.DIFFERENTIAL, full))
        assert (info.value.offered, info.value.held) == (version, 4)
    assert auth_store.auth_list_version(conn) == 4

    def status(tag: str) -> S:
        return authorizer.authorize(IdTag(tag), connector=1, at=AT, connector_busy=False).status

    assert status("AA11") is S.UNKNOWN  # removed by the diff
    assert status("bb:22") is S.BLOCKED  # normalised before hashing
    assert status("CC33") is S.BLOCKED
    assert status("DD44") is S.ACCEPTED
    # A full update replaces everything.
    _apply(conn, _update(5, AuthListUpdateType.FULL, [_entry("EE55", S.ACCEPTED)]))
    assert status("DD44") is S.UNKNOWN
    assert status("EE55") is S.ACCEPTED


def test_the_store_holds_only_hashes(conn: sqlite3.Connection, authorizer: Authorizer) -> None:
    _apply(conn, _update(1, AuthListUpdateType.FULL, [_entry("04A21B", S.ACCEPTED)]))
    authorizer.authorize(IdTag("04A21B"), connector=1, at=AT, connector_busy=False)
    dump = "\n".join(conn.iterdump())
    assert "04A21B" not in dump
    assert hash_id_tag("04A21B") in dump


# --- cache -----------------------------------------------------------------------------------


def test_cache_answers_when_the_list_does_not_and_expires(
    conn: sqlite3.Connection, authorizer: Authorizer
) -> None:
    with transaction(conn):
        auth_store.cache_put(
            conn,
            hash_id_tag("CA5E"),
            S.ACCEPTED,
            expires_at=T0 + timedelta(hours=1),
            max_entries=10,
        )
    decision = authorizer.authorize(IdTag("CA5E"), connector=1, at=AT, connector_busy=False)
    assert decision.status is S.ACCEPTED
    assert "cache" in decision.reason
    later = Moment(T0 + timedelta(hours=2), 200.0, clock_synced=True)
    decision = authorizer.authorize(IdTag("CA5E"), connector=1, at=later, connector_busy=False)
    assert decision.status is S.UNKNOWN
    assert auth_store.cache_size(conn) == 0


def test_cache_evicts_least_recently_used(conn: sqlite3.Connection) -> None:
    expires = T0 + timedelta(days=1)
    with transaction(conn):
        for tag in ("A1", "A2", "A3"):
            auth_store.cache_put(
                conn, hash_id_tag(tag), S.ACCEPTED, expires_at=expires, max_entries=3
            )
        assert auth_store.cache_get(conn, hash_id_tag("A1"), now=T0) is not None  # A1 used
        evicted = auth_store.cache_put(
            conn, hash_id_tag("A4"), S.ACCEPTED, expires_at=expires, max_entries=3
        )
    assert evicted == 1
    assert auth_store.cache_get(conn, hash_id_tag("A2"), now=T0) is None  # the LRU one
    for tag in ("A1", "A3", "A4"):
        assert auth_store.cache_get(conn, hash_id_tag(tag), now=T0) is not None


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=120), st.integers(1, 10))
def test_cache_never_exceeds_its_bound(tags: list[int], bound: int) -> None:
    # A real file per example (an in-memory database cannot use WAL), so the real pragmas.
    with tempfile.TemporaryDirectory() as tmp:
        db = connect(Path(tmp) / "c.db")
        try:
            with transaction(db):
                for tag in tags:
                    auth_store.cache_put(
                        db,
                        hash_id_tag(f"T{tag}"),
                        S.ACCEPTED,
                        expires_at=T0 + timedelta(days=1),
                        max_entries=bound,
                    )
                    assert auth_store.cache_size(db) <= bound
            last = hash_id_tag(f"T{tags[-1]}")
            assert auth_store.cache_get(db, last, now=T0) is not None
        finally:
            db.close()


# --- tokens ----------------------------------------------------------------------------------


def test_valid_token_is_accepted_once_then_replayed(authorizer: Authorizer) -> None:
    token = _token()
    first = authorizer.authorize(Token(token), connector=1, at=AT, connector_busy=False)
    assert first.status is S.ACCEPTED
    assert first.kind is CredentialKind.TOKEN
    assert first.booking_id == "b1"
    assert first.max_wh == 20_000
    second = authorizer.authorize(Token(token), connector=1, at=AT, connector_busy=False)
    assert second.status is S.REPLAYED


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: _token(PrivateKey.generate()), S.INVALID),  # wrong key
        (lambda: _token(charger="site-2"), S.NOT_AT_THIS_CHARGER),
        (lambda: _token(connector=2), S.NOT_AT_THIS_CHARGER),
        (lambda: _token(nbf=T0 - timedelta(hours=2), exp=T0 - timedelta(hours=1)), S.EXPIRED),
        (
            lambda: _token(nbf=T0 + timedelta(hours=1), exp=T0 + timedelta(hours=2)),
            S.NOT_AT_THIS_TIME,
        ),
        (lambda: "v4.public.garbage", S.INVALID),
        (lambda: "x" * 10_000, S.INVALID),
    ],
)
def test_bad_tokens_are_rejected_with_the_right_status(
    authorizer: Authorizer, make: object, expected: S
) -> None:
    token = make()  # type: ignore[operator]
    decision = authorizer.authorize(Token(token), connector=1, at=AT, connector_busy=False)
    assert decision.status is expected


def test_tampered_payload_fails_the_signature(authorizer: Authorizer) -> None:
    token = _token()
    body = token.split(".")[2]
    flipped = body[:10] + ("A" if body[10] != "A" else "B") + body[11:]
    tampered = token.replace(body, flipped)
    decision = authorizer.authorize(Token(tampered), connector=1, at=AT, connector_busy=False)
    assert decision.status is S.INVALID


def test_rejected_token_does_not_burn_its_jti(authorizer: Authorizer) -> None:
    jti = new_ulid()
    early = _token(jti=jti, nbf=T0 + timedelta(minutes=10), exp=T0 + timedelta(hours=1))
    assert (
        authorizer.authorize(Token(early), connector=1, at=AT, connector_busy=False).status
        is S.NOT_AT_THIS_TIME
    )
    busy = authorizer.authorize(Token(_token(jti=jti)), connector=1, at=AT, connector_busy=True)
    assert busy.status is S.CONCURRENT_TX
    ok = authorizer.authorize(Token(_token(jti=jti)), connector=1, at=AT, connector_busy=False)
    assert ok.status is S.ACCEPTED


def test_time_bound_credentials_wait_for_clock_sync(authorizer: Authorizer) -> None:
    unsynced = Moment(datetime(1970, 1, 1, tzinfo=UTC), 1.0, clock_synced=False)
    for credential in (Token(_token()), Pin("12345678")):
        decision = authorizer.authorize(credential, connector=1, at=unsynced, connector_busy=False)
        assert decision.status is S.CLOCK_UNSYNCED


def test_no_verifier_means_tokens_are_invalid(conn: sqlite3.Connection) -> None:
    bare = Authorizer(conn, charger_id=CHARGER, verifier=None, pin_secret=None)
    assert (
        bare.authorize(Token(_token()), connector=1, at=AT, connector_busy=False).status
        is S.INVALID
    )
    assert (
        bare.authorize(Pin("12345678"), connector=1, at=AT, connector_busy=False).status
        is S.INVALID
    )


# --- PINs and lockout ------------------------------------------------------------------------


def test_booking_pin_is_accepted_in_its_window(authorizer: Authorizer) -> None:
    booking = issue_pin(SECRET, CHARGER, 1, T0, T0 + timedelta(hours=1), nonce=0)
    decision = authorizer.authorize(Pin(booking.pin), connector=1, at=AT, connector_busy=False)
    assert decision.status is S.ACCEPTED
    assert decision.expires_at == booking.valid_until
    assert booking.pin not in decision.ref
    other = authorizer.authorize(Pin(booking.pin), connector=2, at=AT, connector_busy=False)
    assert other.status is S.INVALID


def test_keypad_locks_after_repeated_wrong_pins(authorizer: Authorizer) -> None:
    booking = issue_pin(SECRET, CHARGER, 1, T0, T0 + timedelta(hours=1), nonce=0)
    wrong = "0" + ("1234567" if booking.pin[1:] != "1234567" else "7654321")
    for i in range(3):
        at = Moment(T0, 100.0 + i, clock_synced=True)
        assert (
            authorizer.authorize(Pin(wrong), connector=1, at=at, connector_busy=False).status
            is S.INVALID
        )
    locked = Moment(T0, 110.0, clock_synced=True)
    decision = authorizer.authorize(Pin(booking.pin), connector=1, at=locked, connector_busy=False)
    assert decision.status is S.BLOCKED
    later = Moment(T0 + timedelta(minutes=2), 170.0, clock_synced=True)
    decision = authorizer.authorize(Pin(booking.pin), connector=1, at=later, connector_busy=False)
    assert decision.status is S.ACCEPTED


def test_lockout_counts_consecutive_failures_only() -> None:
    lock = Lockout(max_failures=3, lockout_s=10.0)
    lock = lock.record(accepted=False, mono=0).record(accepted=False, mono=1)
    lock = lock.record(accepted=True, mono=2).record(accepted=False, mono=3)
    assert not lock.locked(3.5)
    lock = lock.record(accepted=False, mono=4).record(accepted=False, mono=5)
    assert lock.locked(5.0)
    assert lock.locked(14.9)
    assert not lock.locked(15.0)


# --- every decision is recorded --------------------------------------------------------------


def test_every_decision_is_logged_without_secrets(
    conn: sqlite3.Connection, authorizer: Authorizer
) -> None:
    authorizer.authorize(IdTag("NOPE"), connector=1, at=AT, connector_busy=False)
    authorizer.authorize(IdTag("bad tag!"), connector=1, at=AT, connector_busy=False)
    authorizer.authorize(Pin("99999999"), connector=1, at=AT, connector_busy=False)
    rows = conn.execute("SELECT kind, status, ref FROM decisions ORDER BY id").fetchall()
    assert [(k, s) for k, s, _ in rows] == [
        ("IdTag", "Unknown"),
        ("IdTag", "Invalid"),
        ("Pin", "Invalid"),
    ]
    assert all("99999999" not in ref and "NOPE" not in ref for _, _, ref in rows)


def test_busy_connector_answers_concurrent_tx(
    conn: sqlite3.Connection, authorizer: Authorizer
) -> None:
    _apply(conn, _update(1, AuthListUpdateType.FULL, [_entry("AA11", S.ACCEPTED)]))
    decision = authorizer.authorize(IdTag("AA11"), connector=1, at=AT, connector_busy=True)
    assert decision.status is S.CONCURRENT_TX


def test_decide_refuses_to_run_outside_a_transaction(authorizer: Authorizer) -> None:
    with pytest.raises(StoreError, match="transaction"):
        authorizer.decide(IdTag("AA11"), connector=1, at=AT, connector_busy=False)


def test_remembered_cloud_answers_are_bounded_and_expire(conn: sqlite3.Connection) -> None:
    authorizer = Authorizer(
        conn,
        charger_id=CHARGER,
        verifier=None,
        pin_secret=None,
        cache_max_entries=2,
        cache_ttl=timedelta(hours=1),
    )
    for tag in ("C1", "C2", "C3"):
        authorizer.remember(tag, S.ACCEPTED, now=T0)
    assert auth_store.cache_size(conn) == 2

    def status(tag: str, at: Moment = AT) -> S:
        return authorizer.authorize(IdTag(tag), connector=1, at=at, connector_busy=False).status

    assert status("C1") is S.UNKNOWN  # evicted, least recently used
    assert status("C3") is S.ACCEPTED
    later = Moment(T0 + timedelta(hours=2), 500.0, clock_synced=True)
    assert status("C3", later) is S.UNKNOWN


# --- every decision is reported through the outbox -------------------------------------------


def _present_for(status: S, conn: sqlite3.Connection, authorizer: Authorizer) -> AuthVerdict:
    """Set up, then present, a credential that earns ``status``; returns that decision."""

    def tag(value: str, *, busy: bool = False) -> AuthVerdict:
        return authorizer.authorize(IdTag(value), connector=1, at=AT, connector_busy=busy)

    def token(value: str, at: Moment = AT) -> AuthVerdict:
        return authorizer.authorize(Token(value), connector=1, at=at, connector_busy=False)

    entries = [
        _entry("AC01", S.ACCEPTED),
        _entry("B10C", S.BLOCKED),
        _entry("E0E0", S.ACCEPTED, expires_at=T0 - timedelta(days=1)),
    ]
    _apply(conn, _update(1, AuthListUpdateType.FULL, entries))
    if status is S.REPLAYED:
        used = _token()
        assert token(used).status is S.ACCEPTED
        return token(used)
    unsynced = Moment(datetime(1970, 1, 1, tzinfo=UTC), 1.0, clock_synced=False)
    present = {
        S.ACCEPTED: lambda: tag("AC01"),
        S.BLOCKED: lambda: tag("B10C"),
        S.EXPIRED: lambda: tag("E0E0"),
        S.INVALID: lambda: tag("bad tag!"),
        S.CONCURRENT_TX: lambda: tag("AC01", busy=True),
        S.NOT_AT_THIS_CHARGER: lambda: token(_token(charger="site-2")),
        S.NOT_AT_THIS_TIME: lambda: token(
            _token(nbf=T0 + timedelta(hours=1), exp=T0 + timedelta(hours=2))
        ),
        S.UNKNOWN: lambda: tag("FFFF"),
        S.CLOCK_UNSYNCED: lambda: token(_token(), unsynced),
    }
    return present[status]()


@pytest.mark.parametrize("status", list(S))
def test_a_decision_of_every_status_queues_exactly_one_report_with_the_next_seq(
    conn: sqlite3.Connection, authorizer: Authorizer, status: S
) -> None:
    assert outbox.depth(conn) == 0
    decision = _present_for(status, conn, authorizer)
    assert decision.status is status
    rows = outbox.pending(conn, limit=1000)
    # One report per decision (the setup of Replayed decides once before), nothing else,
    # and the seqs run 1..n: the one under test took the next seq.
    decided = conn.execute("SELECT count(*) FROM decisions").fetchone()[0]
    assert [r.kind for r in rows] == [MessageKind.AUTH] * decided
    assert [r.seq for r in rows] == list(range(1, decided + 1))
    stored = conn.execute(
        "SELECT outbox_seq, status, kind, ref, session_id FROM decisions ORDER BY id DESC LIMIT 1"
    ).fetchone()
    message = parse_message(MessageKind.AUTH, rows[-1].payload)
    assert isinstance(message, AuthDecisionMessage)
    assert stored == (
        decided,
        status.value,
        message.credential.kind.value,
        message.credential.ref,
        message.session_id,
    )
    assert (message.device_id, message.connector, message.status) == (CHARGER, 1, status)
    synced = status is not S.CLOCK_UNSYNCED
    assert message.clock_synced is synced
    assert message.decided_at == (T0 if synced else datetime(1970, 1, 1, tzinfo=UTC))
    assert message.reason == decision.reason
    # Only an acceptance names a session, and it is the id the session will be started with.
    assert message.session_id == decision.session_id
    assert (message.session_id is not None) is (status is S.ACCEPTED)


def test_a_decision_and_its_report_commit_together_or_not_at_all(
    conn: sqlite3.Connection, authorizer: Authorizer
) -> None:
    jti = new_ulid()
    signed = _token(jti=jti)
    # The outbox refuses the row (as a full disk would): the decision, its jti claim and the
    # seq all roll back with it, and the caller hears a StoreError, not a silent decision.
    conn.execute(
        "CREATE TEMP TRIGGER outbox_full BEFORE INSERT ON outbox "
        "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    with pytest.raises(StoreError, match="disk is full"):
        authorizer.authorize(Token(signed), connector=1, at=AT, connector_busy=False)
    assert conn.execute("SELECT count(*) FROM decisions").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM used_tokens").fetchone()[0] == 0
    assert conn.execute("SELECT value FROM counters WHERE name = 'uplink_seq'").fetchone() == (0,)
    conn.execute("DROP TRIGGER outbox_full")
    # Decided inside a caller's transaction that then fails: neither the log nor the report.

    def crash_before_commit() -> None:
        with transaction(conn):
            authorizer.decide(Token(signed), connector=1, at=AT, connector_busy=False)
            raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        crash_before_commit()
    assert outbox.depth(conn) == 0
    # Nothing was used up: the same token is accepted once the store can write, as seq 1.
    decision = authorizer.authorize(Token(signed), connector=1, at=AT, connector_busy=False)
    assert decision.status is S.ACCEPTED
    assert conn.execute("SELECT outbox_seq FROM decisions").fetchall() == [(1,)]
    assert [r.seq for r in outbox.pending(conn)] == [1]


def test_reports_never_carry_the_credential(
    conn: sqlite3.Connection, authorizer: Authorizer
) -> None:
    booking = issue_pin(SECRET, CHARGER, 1, T0, T0 + timedelta(hours=1), nonce=0)
    signed = _token()
    for credential in (
        IdTag("04A21B"),
        IdTag("bad tag! 04A21B"),
        Pin(booking.pin),
        Pin("99999999"),
        Token(signed),
        Token("v4.public." + "A" * 300),
    ):
        authorizer.authorize(credential, connector=1, at=AT, connector_busy=False)
    payloads = b"".join(r.payload for r in outbox.pending(conn))
    dump = "\n".join(conn.iterdump())
    for secret in ("04A21B", booking.pin, "99999999", signed, "A" * 300):
        assert secret.encode() not in payloads
        assert secret not in dump


def test_a_token_id_too_long_for_the_wire_travels_hashed(
    conn: sqlite3.Connection, authorizer: Authorizer
) -> None:
    long_jti = "j" * 300  # signed by the cloud, but nothing bounds it
    decision = authorizer.authorize(
        Token(_token(jti=long_jti)), connector=1, at=AT, connector_busy=False
    )
    assert decision.status is S.ACCEPTED
    message = parse_message(MessageKind.AUTH, outbox.pending(conn)[0].payload)
    assert isinstance(message, AuthDecisionMessage)
    assert message.credential.ref.startswith("jti-")
    assert len(message.credential.ref) == 36


# --- evaluate: the decision without acting on it (the field CLI's `auth check`) -------------


def _read_only(db_path: Path) -> sqlite3.Connection:
    """The store as the field CLI opens it beside the running agent."""
    conn = sqlite3.connect(f"file:{quote(str(db_path))}?mode=ro", uri=True)
    conn.execute("PRAGMA query_only = ON")
    return conn


class _EvaluatesFirst(Authorizer):
    """Evaluates every credential before authorizing it, and checks that the evaluation
    wrote nothing and foresaw the decision exactly (bar the session id it reserves)."""

    def authorize(
        self, credential: Credential, *, connector: int, at: Moment, connector_busy: bool
    ) -> AuthVerdict:
        before = list(self._conn.iterdump())
        lockout = self.lockout
        foreseen = self.evaluate(
            credential, connector=connector, at=at, connector_busy=connector_busy
        )
        assert list(self._conn.iterdump()) == before
        assert self.lockout == lockout
        assert foreseen.session_id is None
        decided = super().authorize(
            credential, connector=connector, at=at, connector_busy=connector_busy
        )
        assert replace(decided, session_id=None) == foreseen
        return decided


@pytest.mark.parametrize("status", list(S))
def test_evaluate_foresees_a_decision_of_every_status_and_writes_nothing(
    conn: sqlite3.Connection, status: S
) -> None:
    authorizer = _EvaluatesFirst(
        conn,
        charger_id=CHARGER,
        verifier=TokenVerifier([KEY.public_key()]),
        pin_secret=SECRET,
    )
    assert _present_for(status, conn, authorizer).status is status


def test_evaluating_a_token_read_only_leaves_it_unused_for_the_real_presentation(
    conn: sqlite3.Connection, db_path: Path, authorizer: Authorizer
) -> None:
    verifier = TokenVerifier([KEY.public_key()])
    reader = _read_only(db_path)
    try:
        checker = Authorizer(reader, charger_id=CHARGER, verifier=verifier, pin_secret=SECRET)
        signed = Token(_token())
        for _ in range(2):
            foreseen = checker.evaluate(signed, connector=1, at=AT, connector_busy=False)
            assert (foreseen.status, foreseen.session_id) == (S.ACCEPTED, None)
        assert conn.execute("SELECT count(*) FROM used_tokens").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM decisions").fetchone()[0] == 0
        assert outbox.depth(conn) == 0
        # The real presentation still finds the token unused; afterwards it is a replay.
        decided = authorizer.authorize(signed, connector=1, at=AT, connector_busy=False)
        assert decided.status is S.ACCEPTED
        replay = checker.evaluate(signed, connector=1, at=AT, connector_busy=False)
        assert replay.status is S.REPLAYED
        assert (
            replay.reason
            == authorizer.authorize(signed, connector=1, at=AT, connector_busy=False).reason
        )
    finally:
        reader.close()


def test_evaluating_leaves_the_cache_and_the_keypad_lockout_alone(
    conn: sqlite3.Connection, db_path: Path, authorizer: Authorizer
) -> None:
    with transaction(conn):
        for tag in ("C1", "C2"):
            auth_store.cache_put(
                conn,
                hash_id_tag(tag),
                S.ACCEPTED,
                expires_at=T0 + timedelta(hours=1),
                max_entries=10,
            )
    later = Moment(T0 + timedelta(hours=2), 200.0, clock_synced=True)
    reader = _read_only(db_path)
    try:
        checker = Authorizer(reader, charger_id=CHARGER, verifier=None, pin_secret=SECRET)
        before = list(conn.iterdump())
        assert (
            checker.evaluate(IdTag("C1"), connector=1, at=AT, connector_busy=False).status
            is S.ACCEPTED
        )
        # An expired entry answers Unknown, as at the agent, but is not dropped.
        assert (
            checker.evaluate(IdTag("C2"), connector=1, at=later, connector_busy=False).status
            is S.UNKNOWN
        )
        assert list(conn.iterdump()) == before
    finally:
        reader.close()
    # Wrong PINs evaluated any number of times are not guesses: the keypad stays open.
    for i in range(5):
        at = Moment(T0, 100.0 + i, clock_synced=True)
        wrong = authorizer.evaluate(Pin("99999999"), connector=1, at=at, connector_busy=False)
        assert wrong.status is S.INVALID
    assert not authorizer.lockout.locked(110.0)
    assert conn.execute("SELECT count(*) FROM decisions").fetchone()[0] == 0
