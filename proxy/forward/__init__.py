"""The live path: the aiohttp app, routes, the request handler, the upstream session, the stream tee and relay.

Owns: everything that runs while a client waits. Bytes are forwarded first; a copy goes to the record.
May import: every room below it (record, replay, usage, admin, store, apis, leaves). Only ``commands``,
``testing`` and ``bench`` import it. ``hooks`` alone reaches below aiohttp's public API.
"""
