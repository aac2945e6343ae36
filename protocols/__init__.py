"""ChargeMitra wire contracts: everything that crosses a wire between edge, cloud and apps.

Pure: no I/O, no network, imports nothing of ours. Modules:

* :mod:`protocols.topics` — MQTT topic names (``cm/v1/d/{device_id}/{kind}``)
* :mod:`protocols.messages` — versioned message models and their parser
* :mod:`protocols.enums` — wire enumerations (authorization status, stop reasons, …)
* :mod:`protocols.meters` — meter register maps (data), decoding, block planning
* :mod:`protocols.tokens` — signed unlock tokens (PASETO v4.public, Ed25519)
* :mod:`protocols.pins` — offline booking PINs
* :mod:`protocols.idtags` — id-tag normalisation and hashing
* :mod:`protocols.errors` — the exception tree
* :mod:`protocols.backoff` — retry delays with jitter (agent reconnects, cloud retries)
"""

__version__ = "0.1.0"
