"""``python -m repoman`` is the ``repoman`` command."""

import sys

from repoman.cli import main

sys.exit(main())
