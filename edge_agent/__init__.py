"""ChargeMitra edge agent: the daemon beside a charger (meter, relay, offline auth, sessions)."""

__version__ = "0.1.0"
