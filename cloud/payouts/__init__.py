"""Host payouts: earnings views, payout requests, admin decisions, execution, weekly runs.

* :mod:`cloud.payouts.rules` — the payout states and the weekly schedule (pure).
* :mod:`cloud.payouts.service` — requests (against the payable balance, under a lock on the
  host's row), approval and rejection, execution through the
  :class:`~cloud.payments.provider.PaymentProvider` with the ledger debit posted once, the
  weekly run (``chargemitra-cloud payouts run``).
* :mod:`cloud.payouts.router` — ``/host/earnings``, ``/host/payouts``,
  ``/host/payout-settings``, ``/admin/payouts``, ``/admin/payments``.

Balances are the ledger's (:func:`cloud.ledger.service.host_balance`), never stored. Errors
are :mod:`cloud.errors`' (``NotFound``, ``Conflict``, ``PaymentProviderError``).
"""
