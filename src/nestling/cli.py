"""`nestling` (the console script `nestling.cli:main`) and `python -m nestling.cli`; the command line lives in
`nestling.commands.cli`."""

import sys

from nestling.commands.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
