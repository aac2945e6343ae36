"""Helpers shared by the test packages (tests/edge, tests/cloud, tests/e2e, ...) and bench/:
rigs (a real Mosquitto, certificates, the cloud's test settings and fixtures, the marketplace
on loopback, fake payment and SMTP servers) and checkers (error boundaries)."""
