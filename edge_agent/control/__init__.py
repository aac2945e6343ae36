"""The agent's local control socket: typed requests, one handler table, narrow ports.

* :mod:`~edge_agent.control.socket` — the Unix socket server and the client helper
* :mod:`~edge_agent.control.messages` — every request and answer, a msgspec struct
* :mod:`~edge_agent.control.ports` — what a handler may touch (connectors, meters, sync)
* :mod:`~edge_agent.control.handlers` — one function per ``cmd``
* :mod:`~edge_agent.control.table` — the one table, decoding and encoding
* :mod:`~edge_agent.control.status` — the ``status`` answer, from the live parts
"""

from edge_agent.control.socket import ControlServer, request

__all__ = ["ControlServer", "request"]
