"""Engine and session factory.

The engine is created lazily from the settings, in the process that uses it: a Celery worker forks after import, and
pooled connections must never cross a fork (see :func:`dispose_after_fork`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from models.settings import get_settings

SessionFactory: sessionmaker[Session] = sessionmaker(expire_on_commit=False)
_engine: Engine | None = None


# A connection whose peer went silent (a failover that took the old address away, a pulled cable) is given up in
# seconds, not left to the kernel's retransmissions, about 15 minutes, while every statement on it waits.
# ``tcp_user_timeout``: data sent and not acknowledged for 10 s ends the connection (the server's kernel acknowledges
# at once however busy Postgres is, so a slow query never trips it). Keepalives: a connection waiting for an answer
# with nothing unacknowledged (a long query on a server that then vanished) is probed after 30 s idle, every 10 s.
SILENT_PEER_LIMITS = {
    "tcp_user_timeout": 10_000,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """An engine with pre-ping, so a Postgres restart costs one failed checkout, not a stream of errors.

    Database errors never carry the statement's parameters (``hide_parameters``): those are users' names and emails,
    and errors end up in logs and on inbox rows.
    """
    return create_engine(
        url,
        hide_parameters=True,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=10,
        pool_timeout=5,
        connect_args={"connect_timeout": 5, **SILENT_PEER_LIMITS},
    )


# SQLSTATEs that say the server went away or is not taking connections, not that it refused what was sent: class 08
# (connection exception) and 57P01-57P03 (shutting down, crash shutdown, starting up).
_SERVER_GONE_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def postgres_unreachable(error: BaseException) -> bool:
    """Whether ``error`` says Postgres could not be reached, not that it refused a statement: no connection to be
    had from the pool, a connection lost or refused (a client-side error, with no SQLSTATE), or the server going
    away. A lock or statement timeout, a deadlock or a serialization failure is about the work, and is not this."""
    if isinstance(error, sa_exc.InterfaceError | sa_exc.TimeoutError):
        return True
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    if not isinstance(error, sa_exc.OperationalError):
        return False
    sqlstate = getattr(error.orig, "sqlstate", None)
    return sqlstate is None or str(sqlstate).startswith(_SERVER_GONE_SQLSTATES)


def get_engine() -> Engine:
    """The process's engine, created on first use and bound to :data:`SessionFactory`."""
    global _engine  # noqa: PLW0603 - one engine per process is the point
    if _engine is None:
        settings = get_settings()
        _engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
        SessionFactory.configure(bind=_engine)
    return _engine


def reset_engine() -> None:
    """Drop the current engine (tests that switch databases, and shutdown)."""
    global _engine  # noqa: PLW0603
    if _engine is not None:
        _engine.dispose()
    _engine = None


def dispose_after_fork() -> None:
    """Called in a freshly forked child: forget the parent's pooled connections without closing them."""
    if _engine is not None:
        _engine.dispose(close=False)


@contextmanager
def unit_of_work() -> Iterator[Session]:
    """One transaction: commits on success, rolls back on error. Tasks and CLI commands use this."""
    get_engine()
    with SessionFactory.begin() as session:
        yield session
