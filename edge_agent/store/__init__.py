"""The agent's SQLite store: one file, WAL, ``synchronous=FULL`` on every connection.

* :mod:`~edge_agent.store.db` — connect, migrate (``PRAGMA user_version``), transactions, size
* :mod:`~edge_agent.store.schema` — the migrations
* :mod:`~edge_agent.store.outbox` — the transactional outbox and the uplink ``seq``
* :mod:`~edge_agent.store.sessions` — sessions and their events (never thinned)
* :mod:`~edge_agent.store.readings` — reading batches and the size cap's thinning
* :mod:`~edge_agent.store.writer` — the thread that group-commits readings as they are taken
* :mod:`~edge_agent.store.auth` — local list, cache, used token ids, decision log

Functions take a :class:`sqlite3.Connection`; those that change state open their own
transaction or join the caller's (:func:`~edge_agent.store.db.transaction`), so a state change
and its outbox row always commit together.
"""
