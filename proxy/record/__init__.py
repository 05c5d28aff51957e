"""Recording: what happens to an exchange after its client has the answer.

Owns: the ``Exchange`` (``exchange``: pure data, a leaf everyone may import), deriving usage, model,
TTFT and outcome from the raw bytes (``decode``), masking secrets (``redact``), and the bounded queue
with its batching writer and disk spool (``recorder``: the failure policy is its docstring).
May import: leaves, ``apis``, ``store``, ``usage.pricing``. Never aiohttp.
"""
