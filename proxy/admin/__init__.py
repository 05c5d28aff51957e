"""The ``/_proxy/`` admin API and the dashboard (``static/``), over the same query layer as the CLI.

Owns: the admin routes and their authorization (``api``), and the shapes shared by the CLI and the API
(``views``: report filters from strings, one exchange as a document).
May import: leaves, ``store``, ``usage``, ``record``. Never ``forward`` (which mounts it).
"""
