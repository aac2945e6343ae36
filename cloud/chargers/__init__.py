"""Charger listings, connectors and availability."""
