"""Meters: Modbus buses (the only place pymodbus is imported) and the per-meter poller."""
