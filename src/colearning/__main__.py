"""``python -m colearning ...`` is the ``colearn`` command."""

import sys

from colearning.cli import main

sys.exit(main())
