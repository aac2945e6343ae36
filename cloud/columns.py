"""Column shapes shared by the feature models: ULID keys, money, enums as checked text."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, Enum, String

from protocols.ids import new_ulid

ULID_LEN = 26


def ulid_pk() -> str:
    """Default for public ids: ULIDs sort by creation time and reveal no row count."""
    return new_ulid()


def text_enum(enum_cls: type[StrEnum], name: str) -> Enum:
    """A StrEnum stored as its wire value in ``varchar`` with a CHECK constraint.

    Not a native PostgreSQL enum: adding a member then needs no ``ALTER TYPE`` (which cannot
    run inside a transaction on older servers) and downgrades drop nothing shared.
    """
    return Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=max(len(m.value) for m in enum_cls),
        values_callable=lambda cls: [m.value for m in cls],
        validate_strings=True,
    )


#: Money is integer paise (1/100 rupee) in BIGINT, never a float.
Paise = BigInteger


def non_negative(column: str) -> CheckConstraint:
    return CheckConstraint(f"{column} >= 0", name=f"{column}_non_negative")


ShortCode = String(12)
