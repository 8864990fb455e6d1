"""`python -m t1.training ...` (e.g. under torchrun) is the `t1` command."""

import sys

from ..cli import main

sys.exit(main())
