"""Alembic migrations of the cloud database."""
