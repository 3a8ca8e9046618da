"""`python -m hearth.benchmarks ...`: see benchmarks/cli.py."""

import sys

from hearth.benchmarks.cli import main

sys.exit(main())
