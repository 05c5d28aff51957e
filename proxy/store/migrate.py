"""Run Alembic from inside the proxy: the only way the schema is created or changed.

The revisions are the repository's top-level ``migrations/`` folder, installed as the ``proxy.migrations``
package (a mapping in pyproject.toml), so a source checkout and an installed wheel find them the same way.
"""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from alembic.config import Config

SCRIPT_LOCATION = str(files("proxy.migrations"))

# The newest revision in migrations/versions, so that starting on a database already at it never imports
# Alembic (with Mako and Pygments: 8 MB of every serving process's memory). tests/store/test_migrate.py
# checks it against Alembic's own head, so a new revision cannot be added without it.
HEAD = "0006_reported_counts"


def alembic_config(connection: Any = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    """Alembic's head, read from the revision scripts (``HEAD`` is the copy the start-up uses)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    from alembic import command

    async with engine.begin() as conn:
        await conn.run_sync(lambda sync_conn: command.upgrade(alembic_config(sync_conn), revision))


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    from alembic import command

    async with engine.begin() as conn:
        await conn.run_sync(lambda sync_conn: command.downgrade(alembic_config(sync_conn), revision))


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None: no schema); read as Alembic stores it, without Alembic."""
    async with engine.connect() as conn:
        return await conn.run_sync(_stored_revision)


def _stored_revision(conn: sa.Connection) -> str | None:
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    # One row on a linear history; Alembic's own reader refuses more (branches), and so does this.
    rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(rows) > 1:
        raise RuntimeError(f"the database is at more than one revision: {', '.join(sorted(rows))}")
    return rows[0] if rows else None
