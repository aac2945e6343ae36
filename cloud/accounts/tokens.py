"""Access tokens: short-lived JWTs, HS256 keyed by ``app.secret_key``, algorithm pinned.

The verifier accepts exactly HS256 (never ``none``, never an algorithm named by the token),
and checks issuer, audience, expiry and the token type, so a refresh token or another
service's JWT cannot be used as an access token. Refresh tokens are not JWTs: they are random
strings stored hashed (:mod:`cloud.accounts.models` ``RefreshToken``).

A verified token is only a *claim*: :mod:`cloud.accounts.principals` admits it against the
account's current state (its ``ver`` claim against ``users.token_version``, not disabled,
roles as they are now) before any route sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt

from cloud.accounts.models import Role
from cloud.errors import Unauthorized
from protocols.ids import new_ulid

ALGORITHM = "HS256"
ISSUER = "chargemitra"
AUDIENCE = "chargemitra-api"
TOKEN_TYPE = "access"  # noqa: S105 -- a claim value, not a secret
#: Accepted clock difference between API instances.
LEEWAY_S = 10


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the verified claims of an access token (and, once admitted by
    :func:`cloud.accounts.principals.admit`, the account's current roles)."""

    user_id: str
    roles: frozenset[Role]
    token_id: str
    #: ``users.token_version`` when the token was issued (0 for tokens without ``ver``).
    token_version: int = 0

    def has(self, role: Role) -> bool:
        return role in self.roles


def issue_access_token(
    secret: str,
    *,
    user_id: str,
    roles: frozenset[Role] | set[Role],
    now: datetime,
    ttl_s: int,
    token_version: int = 0,
) -> str:
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "typ": TOKEN_TYPE,
        "sub": user_id,
        "roles": sorted(r.value for r in roles),
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl_s)).timestamp()),
        "jti": new_ulid(),
        "ver": token_version,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_access_token(secret: str, token: str) -> Principal:
    """The token's principal; :class:`Unauthorized` for anything wrong with it."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=LEEWAY_S,
            options={"require": ["exp", "iat", "sub", "jti", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("the access token has expired") from exc
    except jwt.PyJWTError as exc:
        raise Unauthorized("the access token is invalid") from exc
    if claims.get("typ") != TOKEN_TYPE:
        raise Unauthorized("not an access token")
    try:
        roles = frozenset(Role(r) for r in claims.get("roles", []))
    except (ValueError, TypeError) as exc:
        raise Unauthorized("the access token names an unknown role") from exc
    version = claims.get("ver", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise Unauthorized("the access token is invalid")
    return Principal(
        user_id=str(claims["sub"]),
        roles=roles,
        token_id=str(claims["jti"]),
        token_version=version,
    )
