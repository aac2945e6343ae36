"""Payments, refunds, the ledger and payouts."""
