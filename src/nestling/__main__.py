"""`python -m nestling`: the command line."""

import sys

from nestling.commands.cli import main

sys.exit(main())
