"""The tracking database as the tasks see it: one engine per process, a session per write."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from deployflow.tracking import db

_lock = threading.Lock()
_engines: dict[str, Engine] = {}


def engine() -> Engine:
    """The engine for ``DEPLOYFLOW_DATABASE_URL`` (or the local SQLite file), migrated to head."""
    url = db.database_url()
    with _lock:
        if url not in _engines:
            eng = db.make_engine(url)
            db.upgrade(eng)
            _engines[url] = eng
        return _engines[url]


@contextmanager
def session() -> Iterator[Session]:
    """A session whose transaction commits when the block ends without an error."""
    factory = db.session_factory(engine())
    with factory() as s, s.begin():
        yield s
