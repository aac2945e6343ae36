"""Billing: the one pricing rule (:mod:`cloud.billing.quote`, pure) and ``POST /quotes``."""
