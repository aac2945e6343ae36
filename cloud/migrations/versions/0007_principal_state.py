"""Access ends when the account or its roles change: ``users.token_version`` and triggers.

An access token carries the version of its user at issue (``ver``); the API admits it only
while that still equals ``users.token_version`` and the account is not disabled, and takes
the caller's roles from ``user_roles``, not from the token (``cloud.accounts.principals``).
The version is bumped by the application on a password change and on "log out everywhere",
and by a trigger whenever ``disabled_at`` changes (so re-enabling an account does not revive
tokens issued before it was disabled).

Every change that can end or narrow a principal's access — a ``users`` row updated or
deleted, a ``user_roles`` row inserted, updated or deleted, by the application or by hand in
``psql`` — sends ``NOTIFY cm_principal, '<user id>'`` at commit. Each API instance listens
and drops its cached state of that user, so the change takes effect at once on every
instance.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 21:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The channel ``cloud.accounts.principals.CHANNEL`` listens on.
CHANNEL = "cm_principal"


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column("token_version", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.execute(
        """CREATE FUNCTION cm_users_bump_token_version() RETURNS trigger
           LANGUAGE plpgsql AS $$
           BEGIN
               IF NEW.disabled_at IS DISTINCT FROM OLD.disabled_at THEN
                   NEW.token_version := OLD.token_version + 1;
               END IF;
               RETURN NEW;
           END $$"""
    )
    op.execute(
        """CREATE TRIGGER users_bump_token_version BEFORE UPDATE OF disabled_at ON users
           FOR EACH ROW EXECUTE FUNCTION cm_users_bump_token_version()"""
    )
    op.execute(
        f"""CREATE FUNCTION cm_notify_principal() RETURNS trigger
           LANGUAGE plpgsql AS $$
           DECLARE
               uid text;
           BEGIN
               IF TG_TABLE_NAME = 'users' THEN
                   uid := CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END;
               ELSE
                   uid := CASE WHEN TG_OP = 'DELETE' THEN OLD.user_id ELSE NEW.user_id END;
                   -- A row moved to another user changes both principals.
                   IF TG_OP = 'UPDATE' AND OLD.user_id IS DISTINCT FROM NEW.user_id THEN
                       PERFORM pg_notify('{CHANNEL}', OLD.user_id);
                   END IF;
               END IF;
               PERFORM pg_notify('{CHANNEL}', uid);
               RETURN NULL;
           END $$"""
    )
    op.execute(
        """CREATE TRIGGER users_notify_principal AFTER UPDATE OR DELETE ON users
           FOR EACH ROW EXECUTE FUNCTION cm_notify_principal()"""
    )
    op.execute(
        """CREATE TRIGGER user_roles_notify_principal
           AFTER INSERT OR UPDATE OR DELETE ON user_roles
           FOR EACH ROW EXECUTE FUNCTION cm_notify_principal()"""
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER user_roles_notify_principal ON user_roles")
    op.execute("DROP TRIGGER users_notify_principal ON users")
    op.execute("DROP FUNCTION cm_notify_principal()")
    op.execute("DROP TRIGGER users_bump_token_version ON users")
    op.execute("DROP FUNCTION cm_users_bump_token_version()")
    op.drop_column("users", "token_version")
