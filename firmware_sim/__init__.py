"""ChargeMitra hardware simulator: Modbus meters, relay, EV load, credential devices, faults."""

__version__ = "0.1.0"
