"""`python -m nestling.array_task`: a permanent name, called by sbatch scripts that may wait in a queue across
upgrades; the program lives in `nestling.execute.array_task`."""

import sys

from nestling.execute.array_task import main

if __name__ == "__main__":
    sys.exit(main())
