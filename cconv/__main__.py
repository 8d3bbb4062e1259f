"""python -m cconv: the same as the `cconv` command."""
import sys

from cconv.cli import main

sys.exit(main())
