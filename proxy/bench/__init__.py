"""The benchmark harness: ``python -m proxy.bench`` (see ``--help`` and the README's Performance section).

Modules: ``upstream`` (the emulated model server), ``loadgen`` (the load generator, its own process),
``procs`` (processes and /proc), ``peers`` (nginx, mitmproxy, LiteLLM), ``records`` (completeness),
``scenarios`` (what a round is), ``writerate`` (database write rate), ``profile`` (py-spy),
``report`` (medians, targets, Markdown) and ``run`` (the orchestration); beside the harness,
``queries`` (usage reports over a million generated rows) and ``replay`` (replay with many recordings).

Nothing here is imported by the proxy itself; the proxy under test runs as ``proxy serve`` in its own
process tree, exactly as users run it.
"""
