"""Bookings of a connector for a time range."""
