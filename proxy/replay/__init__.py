"""Replay: answering from recordings, and recordings as files.

Owns: the match key (``matchkey``: pure, a leaf), the index of recordings (``index``), serving them
(``playback``), export/import (``export``) and HAR (``har``), re-sending a session (``resend``) and the
comparison report (``report``).
May import: leaves, ``apis``, ``record``, ``store``. Never ``forward``.
"""
