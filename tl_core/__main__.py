"""`python -m tl_core`: the command-line interface."""

import sys

from tl_core.cli import main

if __name__ == "__main__":
    sys.exit(main())
