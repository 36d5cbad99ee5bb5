"""A fresh SQLite tracking database per test, in the test's tmp dir (created from the models)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from deployflow.tracking.db import make_engine, session_factory
from deployflow.tracking.models import Base


@pytest.fixture
def tracking_engine(tmp_path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'tracking.db'}")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(tracking_engine: Engine) -> sessionmaker[Session]:
    return session_factory(tracking_engine)
