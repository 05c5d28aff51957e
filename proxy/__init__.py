"""llm-recording-proxy: a recording reverse proxy for OpenAI-compatible LLM APIs.

Rooms, from the ground up (imports point down this list, never up):

- leaves: ``config`` (the only reader of os.environ), ``durations``, ``timespec``, ``headers``, ``errors``,
  ``apis`` (what each wire format means), ``record.exchange`` (the one object that flows),
  ``replay.matchkey`` (the pure replay key)
- ``store``: engine, tables, writes, reads, queries, rollups, prune; the only room that writes SQL
- ``usage``: pricing, re-pricing, Prometheus metrics
- ``record``: decoding a finished exchange, redaction, the recorder queue and its writer
- ``replay``: the replay index, playback, export/import, HAR, re-send and its report
- ``admin``: the ``/_proxy/`` API and the dashboard
- ``forward``: the aiohttp app, routes, the request handler, the upstream session, the tee
- ``commands`` and ``cli``: the ``proxy`` command; nothing imports them
- ``testing`` and ``bench``: the fake upstream, and every benchmark; the product never imports them
"""
