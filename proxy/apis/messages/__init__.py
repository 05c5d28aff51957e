"""The Anthropic Messages family (``POST /v1/messages``).

Owns: its wire views and usage mapping (``wire``), folding a stream into the ``message`` a non-streamed
call returns (``assemble``), playing a non-streamed recording as a stream (``convert``), and the family
itself with the error shape an Anthropic client expects (``family``).
"""
