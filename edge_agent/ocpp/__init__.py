"""The OCPP 1.6-J uplink: the agent as a charge point of an operator's CSMS (issue 22).

* :mod:`~edge_agent.ocpp.frames` — OCPP-J framing (CALL, CALLRESULT, CALLERROR), pure
* :mod:`~edge_agent.ocpp.link` — the connection (subprotocol ocpp1.6, Basic auth, TLS)
* :mod:`~edge_agent.ocpp.websocket` — a minimal RFC 6455 client (the RSS budget)
* :mod:`~edge_agent.ocpp.uplink` — the supervisor: connect, boot, heartbeat, status,
  reconnect with backoff, one call in flight
* :mod:`~edge_agent.ocpp.transactions` — the durable transaction-message queue, in order
* :mod:`~edge_agent.ocpp.messages` — the payloads sent, from the store's session events
* :mod:`~edge_agent.ocpp.requests` / :mod:`~edge_agent.ocpp.calls` — the CSMS's calls,
  typed, and what the agent does for each (through the control layer)
* :mod:`~edge_agent.ocpp.present` — the decision path with Authorize.req for unknown tags
* :mod:`~edge_agent.ocpp.keys` — the configuration keys (GetConfiguration/ChangeConfiguration)
* :mod:`~edge_agent.ocpp.wiring` — building it all for the composition root

Errors: :class:`~edge_agent.errors.OcppLinkError` and its subclasses (edge_agent/errors.py).
The store's tables: :mod:`edge_agent.store.ocpp` (schema migration 4).
"""
