"""ChargeMitra hardware simulator: Modbus meters, relay, EV load, credential devices, faults.

In-process use (tests)::

    from firmware_sim.clock import ManualClock
    from firmware_sim.simsite import SimConfig, SimSite

    async with SimSite(SimConfig(serial=True), clock=ManualClock()) as sim:
        sim.endpoints()["serial"]   # the pty a Modbus RTU client opens

Subprocess use: ``chargemitra-sim site`` (see ``docs/sim.md``). Errors: :mod:`firmware_sim.errors`.
Layers: pure cores (``line``, ``ev``, ``electrical``, ``faults``, ``site``, ``rfid``, ``keys``),
pymodbus glue (``devices``, ``bus``), I/O shells (``rtu``, ``tcp``, ``serial_line``,
``control``, ``state``), one composition root (``simsite``) and the CLI (``cli``).
"""

__version__ = "0.1.0"
