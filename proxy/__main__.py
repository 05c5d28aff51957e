"""``python -m proxy`` is the ``proxy`` command."""

import sys

from proxy.cli import main

sys.exit(main())
