"""`python -m t1 ...` (and `torchrun -m t1 train ...`) run the `t1` command."""

import sys

from .cli import main

sys.exit(main())
