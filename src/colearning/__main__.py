"""``python -m colearning ...`` is the ``colearn`` command."""

import sys

from colearning.entry import main

sys.exit(main())
