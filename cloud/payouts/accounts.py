"""A host's payout destination in the database (``payout_accounts``, one per host).

- :func:`set_account` — the host's ``PUT /host/payout-account``: a bank account or UPI VPA
  (RazorpayX) or a Stripe connected account replaces whatever was there. The provider's
  fund account made for the old one (``destination_ref``) is dropped, so the next payout
  registers the new one; RazorpayX's contact (``contact_ref``) is the host, not the account,
  and is kept. Audited (``payout_account.set``) with the account number masked.
- :func:`destination` — what a provider needs to register it
  (:class:`~cloud.payments.provider.PayoutDestination`).
- :func:`store_refs` — the provider's references, once made (cloud/payouts/service.py calls
  it between registering a destination and paying to it).
- :func:`mask` — an account number as answers and the audit log show it: the last four
  digits.

The account number is never stored in the clear: it is sealed with the KYC key
(:class:`cloud.kyc.storage.Sealer`, AES-256-GCM, the host id authenticated with it, so a
sealed number copied to another host's row does not open) and kept beside its masked form,
which is all that answers show. Only :func:`destination` (registering it with the provider)
and a replacement (is it the same account?) open it. Without ``KYC_KEY_FILE`` a bank
account cannot be set or registered (503).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from cloud.audit.service import Actor, record
from cloud.errors import DependencyUnavailable
from cloud.kyc.storage import Sealer
from cloud.payments.models import PayoutAccount, PayoutAccountKind
from cloud.payments.provider import DestinationRefs, PayoutDestination


@dataclass(frozen=True, slots=True)
class AccountDetails:
    """A destination as the host gives it: the fields of ``kind``, the others None."""

    kind: PayoutAccountKind
    holder_name: str
    ifsc: str | None = None
    account_number: str | None = None
    vpa: str | None = None
    stripe_account_id: str | None = None


def mask(account_number: str | None) -> str | None:
    if account_number is None:
        return None
    return "X" * (len(account_number) - 4) + account_number[-4:]


def _associated(host_id: str) -> bytes:
    return f"payout_account|{host_id}".encode()


def seal_number(sealer: Sealer, host_id: str, account_number: str) -> bytes:
    return sealer.seal(account_number.encode(), _associated(host_id))


def _sealer(sealer: Sealer | None) -> Sealer:
    if sealer is None:
        raise DependencyUnavailable(
            "payout account", "no KYC key is configured to seal bank account numbers"
        )
    return sealer


def _number(row: PayoutAccount, sealer: Sealer | None) -> str | None:
    if row.account_number_sealed is None:
        return None
    opened = _sealer(sealer).open(
        row.account_number_sealed, _associated(row.host_id), what=f"payout account {row.host_id}"
    )
    return opened.decode()


def _details(row: PayoutAccount, sealer: Sealer | None) -> AccountDetails:
    return AccountDetails(
        kind=row.kind,
        holder_name=row.holder_name,
        ifsc=row.ifsc,
        account_number=_number(row, sealer),
        vpa=row.vpa,
        stripe_account_id=row.stripe_account_id,
    )


def _audited(d: AccountDetails) -> dict[str, str | None]:
    return {
        "kind": d.kind.value,
        "holder_name": d.holder_name,
        "ifsc": d.ifsc,
        "account_number": mask(d.account_number),
        "vpa": d.vpa,
        "stripe_account_id": d.stripe_account_id,
    }


async def get_account(db: AsyncSession, host_id: str) -> PayoutAccount | None:
    return await db.get(PayoutAccount, host_id)


async def set_account(
    db: AsyncSession, host_id: str, details: AccountDetails, actor: Actor, sealer: Sealer | None
) -> PayoutAccount:
    """Store ``details`` as ``host_id``'s payout destination, in the caller's transaction,
    the account number sealed (503 without a key to seal it, or to open the one it
    replaces)."""
    if details.account_number is not None:
        _sealer(sealer)
    row = await db.get(PayoutAccount, host_id, with_for_update=True)
    before = None if row is None else _audited(_details(row, sealer))
    if row is None:
        row = PayoutAccount(host_id=host_id, kind=details.kind, holder_name=details.holder_name)
        db.add(row)
    elif _details(row, sealer) != details:
        row.destination_ref = None  # registered afresh by the next payout
    row.kind = details.kind
    row.holder_name = details.holder_name
    row.ifsc = details.ifsc
    number = details.account_number
    row.account_number_sealed = (
        None if number is None else seal_number(_sealer(sealer), host_id, number)
    )
    row.account_number_masked = mask(number)
    row.vpa = details.vpa
    row.stripe_account_id = details.stripe_account_id
    await db.flush()
    await record(
        db,
        actor,
        action="payout_account.set",
        entity="payout_account",
        entity_id=host_id,
        before=before,
        after=_audited(details),
    )
    return row


def destination(row: PayoutAccount, sealer: Sealer | None) -> PayoutDestination:
    """What the provider needs to register the account: the number opened (503 without the
    key)."""
    return PayoutDestination(
        host_id=row.host_id,
        kind=row.kind,
        holder_name=row.holder_name,
        ifsc=row.ifsc,
        account_number=_number(row, sealer),
        vpa=row.vpa,
        stripe_account_id=row.stripe_account_id,
        contact_ref=row.contact_ref,
    )


async def store_refs(
    db: AsyncSession, sent: PayoutDestination, refs: DestinationRefs, sealer: Sealer | None
) -> None:
    """Keep what the provider made for ``sent`` — unless the host replaced the account
    meanwhile (then the new one is registered by the next payout)."""
    row = await db.get(PayoutAccount, sent.host_id, with_for_update=True, populate_existing=True)
    if row is None:
        return
    row.contact_ref = refs.contact_ref or row.contact_ref
    same = AccountDetails(
        kind=sent.kind,
        holder_name=sent.holder_name,
        ifsc=sent.ifsc,
        account_number=sent.account_number,
        vpa=sent.vpa,
        stripe_account_id=sent.stripe_account_id,
    )
    if _details(row, sealer) == same:
        row.destination_ref = refs.destination_ref[:64]
