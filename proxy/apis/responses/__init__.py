"""The OpenAI Responses family (``POST /v1/responses``).

Owns: its wire views (``wire``), folding a stream of semantic events into the final ``response`` object
(``assemble``), the family itself (``family``), and playing a non-streamed response as the events a
streamed request expects (``convert``).
"""
