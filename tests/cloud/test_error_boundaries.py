"""Third-party errors are translated at one boundary per library in :mod:`cloud`.

Every ``except`` clause and ``contextlib.suppress`` of cloud/ is read (its syntax tree,
imports resolved): one that names an exception of a library below outside that library's
boundary fails the test, and so does importing such an exception class elsewhere. Within
each boundary the catch must cover every exception the library defines (as httpx's
``test_httpcore_all_exceptions_mapped`` does for httpcore), so a library upgrade that adds
an error outside the caught base fails here, not in production.

Not watched: pydantic, starlette and fastapi (the framework the routes are written in; their
validation errors are the request's, answered by the route), and the standard library's
OSError, which file and socket code catches where it opens the file.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path
from types import ModuleType

import jwt.exceptions
import pytest
import redis.exceptions
import sqlalchemy.exc
import stripe
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from cloud import db_errors, redis_errors
from cloud.errors import DatabaseRefused
from cloud.settings import sqlalchemy_url
from tests.support.error_boundaries import (
    aliases,
    catches_outside,
    caught_libraries,
    dotted,
    inside,
)

CLOUD = Path(__file__).resolve().parents[2] / "cloud"

#: library -> the modules (relative to cloud/) where its errors are caught and translated.
BOUNDARIES: dict[str, tuple[str, ...]] = {
    "sqlalchemy": ("db_errors.py",),
    # COPY and LISTEN paths use asyncpg directly; its retryable errors are named in pg.py.
    "asyncpg": ("pg.py",),
    "redis": ("redis_errors.py",),
    # The payout provider's client; the demo (a separate program driving the API over HTTP)
    # has its own.
    "httpx": ("payments/razorpayx.py", "demo/runner.py"),
    "stripe": ("payments/stripe_provider.py",),
    "razorpay": ("payments/razorpay_provider.py",),
    "requests": ("payments/razorpay_provider.py",),  # the razorpay SDK's transport
    "smtplib": ("notifications/channels.py",),
    "pywebpush": ("notifications/channels.py",),
    "aiohttp": ("notifications/channels.py",),  # pywebpush's transport
    "jinja2": ("notifications/delivery.py",),
    "argon2": ("accounts/passwords.py",),
    "jwt": ("accounts/tokens.py",),
    "cryptography": ("kyc/storage.py",),
}

#: redis-py errors that are not RedisError: raised only by RedisCluster, or by the sync
#: client's fork check; cloud uses neither (redis.asyncio.Redis, one node).
REDIS_NOT_OURS = frozenset(
    {
        "ChildDeadlockedError",
        "CrossSlotTransactionError",
        "InvalidPipelineStack",
        "RedisClusterException",
        "SlotNotCoveredError",
    }
)


def _defined(module: ModuleType) -> list[type[Exception]]:
    """The exception classes ``module``'s library defines (not warnings, not re-exports of
    the standard library's)."""
    library = module.__name__.split(".")[0]
    return [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, Exception)
        and not issubclass(cls, Warning)
        and cls.__module__.split(".")[0] == library
    ]


def test_third_party_errors_are_caught_only_at_their_boundary() -> None:
    assert catches_outside(CLOUD, BOUNDARIES) == []


def test_the_checker_sees_a_catch_outside_the_boundary() -> None:
    source = (
        "import contextlib\nfrom redis.exceptions import RedisError as E\nimport sqlalchemy.exc\n"
        "try:\n    pass\nexcept (E, sqlalchemy.exc.IntegrityError, ValueError):\n    pass\n"
        "with contextlib.suppress(E):\n    pass\n"
    )
    assert caught_libraries(source, BOUNDARIES) == [(6, "redis"), (6, "sqlalchemy"), (8, "redis")]
    assert not inside("bookings/service.py", BOUNDARIES["sqlalchemy"])


def test_every_boundary_module_exists() -> None:
    missing = [b for paths in BOUNDARIES.values() for b in paths if not (CLOUD / b).is_file()]
    assert missing == []


def test_every_redis_error_is_translated() -> None:
    """cloud/redis_errors.py catches RedisError and OSError: every error redis-py's client
    can raise must be one of them."""
    escaping = [
        cls.__name__
        for cls in _defined(redis.exceptions)
        if not issubclass(cls, redis_errors.TRANSLATED) and cls.__name__ not in REDIS_NOT_OURS
    ]
    assert escaping == []


def test_the_cloud_speaks_mqtt_only_through_its_own_client() -> None:
    """No cloud module imports paho (the edge agent's client): every cloud user of the broker
    goes through cloud/broker.py, on protocols/mqtt5.py, whose errors it translates."""
    importers = []
    for path in sorted(CLOUD.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name.split(".")[0] == "paho" for name in names):
                importers.append(path.relative_to(CLOUD).as_posix())
    assert importers == []


def test_every_sqlalchemy_error_is_a_database_error() -> None:
    """A job tells the database's failure from its own by cloud.db_errors.DATABASE_ERRORS."""
    defined = _defined(sqlalchemy.exc)
    assert defined
    assert [c.__name__ for c in defined if not issubclass(c, db_errors.DATABASE_ERRORS)] == []


def test_every_provider_sdk_error_is_caught_by_its_provider() -> None:
    """Each provider module's except clauses cover every error its SDK defines."""
    sdks = {
        "stripe": stripe.StripeError.__module__,  # stripe._error: the SDK's error tree
        "razorpay": "razorpay.errors",
        "jwt": jwt.exceptions.__name__,
    }
    for library, sdk in sdks.items():
        module = importlib.import_module(sdk)
        boundary = BOUNDARIES[library][0]
        caught = _caught_classes(boundary, library)
        defined = _defined(module)
        assert defined, library
        escaping = [c.__name__ for c in defined if not issubclass(c, caught)]
        assert escaping == [], f"cloud/{boundary} lets {library} errors escape: {escaping}"


def _caught_classes(boundary: str, library: str) -> tuple[type[BaseException], ...]:
    """The classes of ``library`` that cloud/``boundary``'s except clauses name, resolved by
    importing the module and reading the names off it."""
    source = (CLOUD / boundary).read_text("utf-8")
    tree = ast.parse(source)
    names = aliases(tree)
    found: list[type[BaseException]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ExceptHandler) or node.type is None:
            continue
        types = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
        for expr in types:
            name = dotted(expr)
            if name is None:
                continue
            head, _, rest = name.partition(".")
            resolved = names.get(head, head) + (f".{rest}" if rest else "")
            if resolved.split(".")[0] != library:
                continue
            module_name, _, attr = resolved.rpartition(".")
            value = getattr(importlib.import_module(module_name), attr)
            found.append(value)
    return tuple(found)


async def test_a_refusal_carries_its_sqlstate_and_constraint(migrated_db: str) -> None:
    """cloud/chargers/editing.py retries a QR code collision by the constraint's name."""
    engine = create_async_engine(sqlalchemy_url(migrated_db))
    try:
        async with engine.connect() as conn:
            await conn.execute(text("CREATE TEMP TABLE t (x int CONSTRAINT uq_t_x UNIQUE)"))
            await conn.execute(text("INSERT INTO t VALUES (1)"))
            with pytest.raises(DatabaseRefused) as refused, db_errors.refusals():
                await conn.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        await engine.dispose()
    assert (refused.value.sqlstate, refused.value.constraint) == (
        db_errors.UNIQUE_VIOLATION,
        "uq_t_x",
    )
    assert refused.value.integrity
    assert isinstance(refused.value.__cause__, sqlalchemy.exc.IntegrityError)
