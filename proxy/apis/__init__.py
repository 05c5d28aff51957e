"""API families: what each wire format means (request fields, stream events, usage), with no I/O.

Owns: the msgspec views of request and response bodies, the SSE parser, and per family the knowledge of
its stream (which event ends it, which carries usage, how events fold into the response a non-streamed
call returns), the usage option the proxy adds, and conversion between streamed and non-streamed forms.
May import: nothing of the proxy but ``record.exchange`` (a leaf). Never aiohttp, never SQL.
"""
