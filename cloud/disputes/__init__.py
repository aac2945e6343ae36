"""Disputes about sessions: opened by drivers, answered by hosts, resolved by admins."""
