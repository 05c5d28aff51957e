"""Storage: engine, schema, migrations, writes and queries. Never imports aiohttp."""
