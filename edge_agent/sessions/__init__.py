"""Charging sessions: the pure connector state machine and the controller that runs it."""
