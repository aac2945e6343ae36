"""The field technician's CLI behind ``chargemitra-agent`` (docs/cli.md).

Pure cores, thin shells:

* :mod:`~edge_agent.tech.checks` — doctor's checks as pure functions of gathered facts
* :mod:`~edge_agent.plausible` (outside tech/: the fail-safe shares it) — is a meter reading
  physically plausible (pure)
* :mod:`~edge_agent.relay.check` — close, confirm power, open, confirm it stops
* :mod:`~edge_agent.tech.scan` — find meters on a serial line and name their model
* :mod:`~edge_agent.tech.probes` — doctor's I/O: store, disk, port, bus, clock, broker
* :mod:`~edge_agent.tech.direct` — the bus used directly when the agent is not running
* :mod:`~edge_agent.tech.daemon` — the running agent, through its control socket
  (:mod:`edge_agent.control`; its heartbeat is :mod:`edge_agent.heartbeat`)
* :mod:`~edge_agent.tech.storeview` — read-only queries of the agent's SQLite store
* :mod:`~edge_agent.tech.output` — JSON or tables, exit codes, the error boundary
* ``cmd_*`` — the Click commands, registered on :func:`edge_agent.cli.main`

Nothing heavy is imported at module level: pymodbus, paho and rich load inside the commands
that need them, so ``config validate`` starts fast and works without the edge extras.
"""

#: Where ``chargemitra-agent logs`` finds the agent's log file when --file is not given.
LOG_ENV = "CHARGEMITRA_AGENT_LOG"
