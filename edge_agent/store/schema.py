"""The store's schema, as numbered migrations applied in order under ``PRAGMA user_version``.

Never edit a released migration: append a new one. Tables are STRICT so a bug that writes a
float into an energy column fails instead of silently storing it.
"""

from __future__ import annotations

#: MIGRATIONS[i] takes the schema from version i to version i + 1.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE kv (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;

    -- Counters that must never go backwards: the uplink seq, and what the size cap thinned
    -- (readings rows, and telemetry batches dropped from the outbox).
    CREATE TABLE counters (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) STRICT;
    INSERT INTO counters (name, value) VALUES
        ('uplink_seq', 0), ('thinned_readings', 0), ('thinned_batches', 0);

    CREATE TABLE readings (
        id           INTEGER PRIMARY KEY,
        meter_id     TEXT NOT NULL,
        ts           TEXT NOT NULL,
        clock_synced INTEGER NOT NULL,
        values_json  TEXT NOT NULL
    ) STRICT;
    CREATE INDEX readings_meter ON readings (meter_id, id);

    CREATE TABLE sessions (
        session_id           TEXT PRIMARY KEY,
        connector            INTEGER NOT NULL,
        credential_kind      TEXT NOT NULL,
        credential_ref       TEXT NOT NULL,
        booking_id           TEXT,
        started_at           TEXT NOT NULL,
        meter_start_wh       INTEGER NOT NULL,
        -- The last import register value seen while open, updated with every reading batch:
        -- crash recovery bills from it when the meter does not answer at start.
        last_meter_wh        INTEGER NOT NULL,
        last_meter_at        TEXT NOT NULL,
        -- The highest register value seen: what is billed if the register went backwards.
        max_meter_wh         INTEGER NOT NULL,
        meter_went_backwards INTEGER NOT NULL DEFAULT 0,
        auth_expires_at      TEXT,
        max_wh               INTEGER,
        max_s                INTEGER,
        event_seq            INTEGER NOT NULL,
        stopped_at           TEXT,
        meter_stop_wh        INTEGER,
        energy_wh            INTEGER,
        stop_reason          TEXT
    ) STRICT;
    -- A connector has at most one open session: a bug cannot start a second one.
    CREATE UNIQUE INDEX sessions_one_open_per_connector
        ON sessions (connector) WHERE stopped_at IS NULL;

    -- Every session event as sent; kept after the outbox row is acknowledged and deleted.
    CREATE TABLE session_events (
        session_id TEXT NOT NULL REFERENCES sessions (session_id),
        event_seq  INTEGER NOT NULL,
        event      TEXT NOT NULL,
        outbox_seq INTEGER NOT NULL UNIQUE,
        payload    BLOB NOT NULL,
        PRIMARY KEY (session_id, event_seq)
    ) STRICT;

    -- The transactional outbox: encoded protocols.messages payloads, seq = envelope seq.
    CREATE TABLE outbox (
        seq        INTEGER PRIMARY KEY,
        kind       TEXT NOT NULL,
        created_at TEXT NOT NULL,
        payload    BLOB NOT NULL
    ) STRICT;

    CREATE TABLE auth_list (
        id_tag_hash TEXT PRIMARY KEY,
        status      TEXT NOT NULL,
        expires_at  TEXT
    ) STRICT;

    CREATE TABLE auth_cache (
        id_tag_hash TEXT PRIMARY KEY,
        status      TEXT NOT NULL,
        expires_at  TEXT NOT NULL,
        last_used   INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX auth_cache_lru ON auth_cache (last_used);

    CREATE TABLE used_tokens (
        jti        TEXT PRIMARY KEY,
        used_at    TEXT NOT NULL,
        expires_at TEXT NOT NULL
    ) STRICT;

    CREATE TABLE decisions (
        id         INTEGER PRIMARY KEY,
        ts         TEXT NOT NULL,
        connector  INTEGER NOT NULL,
        kind       TEXT NOT NULL,
        ref        TEXT NOT NULL,
        status     TEXT NOT NULL,
        reason     TEXT NOT NULL,
        outbox_seq INTEGER
    ) STRICT;
    """,
    # 2: decisions are reported (``auth`` topic, outbox_seq filled from now on) and an
    # accepted one names the session it starts.
    """
    ALTER TABLE decisions ADD COLUMN session_id TEXT;
    """,
    # 3: booking PINs die with their booking. A PIN starts one session (its use is written
    # in the session start's transaction), and a PIN the cloud revoked (cancelled booking)
    # is refused; both by protocols.pins.pin_ref, kept until the PIN's window is over.
    """
    CREATE TABLE used_pins (
        ref        TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        used_at    TEXT NOT NULL,
        expires_at TEXT
    ) STRICT;

    CREATE TABLE revoked_pins (
        ref        TEXT PRIMARY KEY,
        until      TEXT NOT NULL,
        revoked_at TEXT NOT NULL
    ) STRICT;
    """,
    # 4: the OCPP 1.6-J uplink (edge_agent/ocpp/). Transaction messages wait here, in order,
    # until the CSMS answers them (OCPP 1.6 §4.7 "Transaction-related messages"); a
    # session's transactionId is kept once the CSMS gave it, so a StopTransaction never
    # carries an id the CSMS did not hand out. ``id_tag`` is the idTag a session started
    # with, in clear (StartTransaction must carry it), dropped once the stop is delivered.
    """
    CREATE TABLE ocpp_transactions (
        session_id     TEXT PRIMARY KEY,
        connector      INTEGER NOT NULL,
        id_tag         TEXT,
        transaction_id INTEGER,
        -- 1: StartTransaction was given up after its attempts; the session's later
        -- messages are not sent (there is no transaction id they could name).
        abandoned      INTEGER NOT NULL DEFAULT 0
    ) STRICT;

    CREATE TABLE ocpp_queue (
        id         INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES ocpp_transactions (session_id),
        action     TEXT NOT NULL,
        payload    TEXT NOT NULL,
        attempts   INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    ) STRICT;

    -- Id tags presented and accepted at this charger, in clear, for StartTransaction.
    CREATE TABLE ocpp_id_tags (
        id_tag_hash TEXT PRIMARY KEY,
        id_tag      TEXT NOT NULL
    ) STRICT;
    """,
    # 5: a StartTransaction the CSMS answered with an idTagInfo other than Accepted. The
    # refusal is stored in the commit that takes the message off the queue, so a kill -9
    # before the session is stopped cannot forget it: at the next start the uplink stops
    # any open session still carrying it (edge_agent/ocpp/transactions.py).
    # ``refusal_stopped`` is 1 once the stop was asked for (or the session was not open).
    """
    ALTER TABLE ocpp_transactions ADD COLUMN refused TEXT;
    ALTER TABLE ocpp_transactions ADD COLUMN refusal_stopped INTEGER NOT NULL DEFAULT 0;
    """,
    # 6: a session's elapsed seconds by the monotonic clock, kept current with its meter value
    # (edge_agent/store/sessions.py): a restart resumes counting from it, the stop reports
    # it (SessionEvent.elapsed_s) and the cloud bills time from it, not from the wall clock.
    """
    ALTER TABLE sessions ADD COLUMN elapsed_s REAL;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)
