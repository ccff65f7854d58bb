"""`python -m nestling.supervisor ROOT`: a permanent name, started by `--detach`; the program lives in
`nestling.commands.supervisor`."""

import sys

from nestling.commands.supervisor import main

if __name__ == "__main__":
    sys.exit(main())
