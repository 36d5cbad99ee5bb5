"""The tracking database: every deploy, its stages, incidents and check results.

Plain SQLAlchemy 2 and Alembic, no Prefect: the flow calls ``repository`` functions with a session
it owns, and ``db.upgrade`` brings any database (SQLite or PostgreSQL) to the current schema.
"""
