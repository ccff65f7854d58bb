"""`python -m nestling.worker`: a permanent name, called by local pools and containerised workers of every
version; the program lives in `nestling.execute.worker`."""

import sys

from nestling.execute.worker import main

if __name__ == "__main__":
    sys.exit(main())
