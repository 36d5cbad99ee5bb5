"""The tracking database connection as a Prefect block."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr, field_validator

if TYPE_CHECKING:
    from sqlalchemy import Engine


class TrackingDatabaseBlock(Block):
    """Where deployflow records deployments, stages and rollbacks.

    Attributes:
        url: SQLAlchemy URL with its password, e.g.
            ``postgresql+psycopg://deployflow:***@db:5432/deployflow``. When empty, the machine
            that runs the flow uses ``DEPLOYFLOW_DATABASE_URL`` or its local SQLite file
            (``deployflow.tracking.db.database_url()``).

    Example:
        ```python
        from blocks import TrackingDatabaseBlock

        engine = TrackingDatabaseBlock.load("production").get_client()
        ```
    """

    # pydantic echoes the rejected input in validation errors; a URL carries its password.
    model_config = ConfigDict(hide_input_in_errors=True)

    _description = "SQLAlchemy URL of deployflow's tracking database (migrated on first use)."

    # None rather than a default computed here: the local SQLite path belongs to the machine that
    # runs the flow, not to the one that saved the block.
    url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL (secret: it usually carries a password). Empty: "
        "DEPLOYFLOW_DATABASE_URL or the local SQLite file of the machine running the flow.",
    )

    @field_validator("url")
    @classmethod
    def _url_parses(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        # Here rather than at the top: loading the deploy flow does not need SQLAlchemy.
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(value.get_secret_value())
        except ArgumentError:
            # The message must not echo the value: it may contain a password.
            raise ValueError(
                "url: must be a SQLAlchemy URL like "
                "'postgresql+psycopg://user:password@host:5432/db' or 'sqlite:///path/to/file.db'"
            ) from None
        return value

    def resolved_url(self) -> str:
        """The URL ``get_client`` connects to (contains the password: do not log it)."""
        from deployflow.tracking import db

        return self.url.get_secret_value() if self.url is not None else db.database_url()

    def get_client(self) -> Engine:
        """Connect to the tracking database and migrate it to the newest revision.

        Returns:
            A SQLAlchemy engine at the head revision; the caller disposes it.

        Raises:
            deployflow.tracking.db.TrackingDatabaseError: Unreachable or migration failed; the
                message shows the URL with its password masked.
        """
        from deployflow.tracking import db

        engine = db.make_engine(self.resolved_url())
        try:
            db.upgrade(engine)
        except BaseException:
            engine.dispose()
            raise
        return engine
