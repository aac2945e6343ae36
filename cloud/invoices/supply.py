"""Who supplies a session, to whom, and where (pure).

**Supplier of record** (the split of cloud.ledger.entries): a host with a GSTIN supplies the
charging and invoices it under their own GSTIN, name and address, in their own series; a
host without one cannot charge GST, so the platform is the supplier of record and invoices
under its GSTIN (``CHARGEMITRA_BILLING_SUPPLIER_*``), in the platform's series. A series
belongs to a GSTIN (Rule 46: per registration): a host who registers anew starts one.
:attr:`cloud.accounts.models.Host.host_gst_registered` is the flag the ledger's bill takes.

**Place of supply.** The charging is done at the charger, to a vehicle there, for a driver
who is (nearly always) unregistered and whose address we do not hold: the place of supply is
the charger's state (IGST Act s. 12(2)(b) and 12(3)(a): the location where the service is
performed). The recipient's state printed is the same. The supply is inter-state (IGST)
when the supplier's state, the first two digits of its GSTIN, differs.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloud.accounts.models import Host
from cloud.chargers.models import Charger
from cloud.invoices.gstin import UnknownState, state_code, validate_gstin
from cloud.settings import BillingSettings


@dataclass(frozen=True, slots=True)
class Supplier:
    name: str
    address: str
    gstin: str

    @property
    def key(self) -> str:
        """Whose series: the GSTIN's."""
        return self.gstin

    @property
    def state_code(self) -> str:
        return self.gstin[:2]


def platform_supplier(billing: BillingSettings) -> Supplier:
    return Supplier(
        billing.supplier_name,
        billing.supplier_address,
        validate_gstin(billing.supplier_gstin),
    )


def supplier_for(host: Host, billing: BillingSettings) -> Supplier:
    """The supplier of record of a session at ``host``'s charger (module docstring)."""
    if host.gstin is None:
        return platform_supplier(billing)
    address = host.address or ""
    if host.pincode:
        address = f"{address} {host.pincode}"
    return Supplier(host.legal_name or host.display_name, address, host.gstin)


def place_of_supply(charger: Charger, supplier: Supplier) -> str:
    """The GST state code of the charger's state; the supplier's when a listing's free-text
    state names none GST knows (s. 12(2)(b): the location of the supplier, where the
    recipient's is not on record) — an invoice is never refused for a typo in a listing."""
    try:
        return state_code(charger.state)
    except UnknownState:
        return supplier.state_code


def is_interstate(supplier: Supplier, place_code: str) -> bool:
    return supplier.state_code != place_code
