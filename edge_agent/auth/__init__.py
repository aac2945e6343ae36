"""Offline authorization: the pure decision rules, the keypad lockout, and the authorizer
that runs them against the store."""
