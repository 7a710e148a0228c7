"""``python -m lifelong.cli``: the command line, as ``python -m lifelong`` and the ``lifelong`` script."""

import sys

from lifelong.cli import main

sys.exit(main())
