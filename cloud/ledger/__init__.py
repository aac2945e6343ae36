"""The double-entry ledger: every rupee that moves, as balanced, append-only transactions.

* :mod:`cloud.ledger.accounts` — the accounts and entry sources (pure).
* :mod:`cloud.ledger.entries` — what a business event writes: the entries of capturing a
  payment, billing a session, refunding, paying a host out (pure).
* :mod:`cloud.ledger.service` — :func:`~cloud.ledger.service.post` writes one transaction;
  balances are queries over the entries, never stored.

Exceptions::

    LedgerError                 (cloud.ledger.accounts)
    ├── UnbalancedTransaction   entries of one transaction do not sum to zero
    └── InvalidEntry            a zero, non-integer or unknown-account entry
"""
