"""``python -m lifelong``: the command line."""

import sys

from lifelong.cli import main

sys.exit(main())
