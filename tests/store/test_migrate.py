"""Migrations build the schema the models describe, on SQLite and PostgreSQL, and can go down and up again."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from proxy.store import migrate
from proxy.store.tables import Base
from tests.support import Database


async def test_head_matches_models(database: Database) -> None:
    async with database.engine.connect() as conn:
        diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata))
    assert diff == []
    assert await migrate.current_revision(database.engine) == migrate.head_revision()


async def test_downgrade_to_base_and_upgrade_again(database: Database) -> None:
    await migrate.downgrade(database.engine, "base")
    assert await migrate.current_revision(database.engine) is None
    await migrate.upgrade(database.engine)
    assert await migrate.current_revision(database.engine) == migrate.head_revision()
