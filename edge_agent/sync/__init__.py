"""Edge sync: the durable outbox over MQTT 5, the cloud's application acks, and commands.

* :mod:`~edge_agent.sync.link` — the MQTT link (the only module importing paho-mqtt)
* :mod:`~edge_agent.sync.window` — pure bookkeeping of what is in flight, rate limits
* :mod:`~edge_agent.sync.uplink` — what to publish next; applying acks
* :mod:`~edge_agent.sync.downlink` — commands: expiry, de-duplication, one answer each
* :mod:`~edge_agent.sync.from_config` — the service's settings from the agent's configuration
* :mod:`~edge_agent.sync.service` — the task the agent runs (reconnects wait by
  :mod:`edge_agent.backoff`)
"""
