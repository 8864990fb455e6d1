"""`python -m t1.training ...` (e.g. under torchrun) is the `t1` command."""

import runpy

runpy.run_module("t1", run_name="__main__", alter_sys=True)
