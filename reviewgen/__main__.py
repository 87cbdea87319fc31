"""`python -m reviewgen`: the command line of reviewgen.cli."""
import sys

from .cli import main

sys.exit(main())
