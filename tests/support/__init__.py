"""Helpers shared by the test packages (tests/edge, tests/cloud, ...): rigs and checkers."""
