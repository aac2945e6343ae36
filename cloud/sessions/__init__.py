"""Charging sessions as reported by devices."""
