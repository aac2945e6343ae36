"""Alembic revisions (a package so a wheel install ships them)."""
