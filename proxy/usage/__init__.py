"""Usage accounting: what an exchange cost, and the numbers a running proxy exposes.

Owns: price entries and the bundled table (``pricing``, ``prices.toml``), re-pricing stored exchanges
(``accounting``), and Prometheus metrics (``metrics``).
May import: leaves and ``store``. Never ``record`` beyond ``record.exchange``, never aiohttp.
"""
