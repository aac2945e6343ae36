"""Tests of the cloud platform (real PostgreSQL, Redis and Mosquitto)."""
