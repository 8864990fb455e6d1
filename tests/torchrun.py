"""Two-process (torchrun, gloo, CPU) runs compared with the same work done in this process."""

from __future__ import annotations

import os
import subprocess
import sys


def torchrun_beside(args: list[str], work, nproc: int = 2, timeout: float = 280):
    """Start `torchrun --standalone --nproc_per_node NPROC -m ARGS` (one OpenMP thread a rank,
    no inherited rank variables) and, meanwhile, `work()` here on one thread, as each rank runs.
    Returns (what `work` returned, the run's output); the run must exit 0."""
    import torch

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", *map(str, args)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = work()
        output, _ = proc.communicate(timeout=timeout)
    finally:
        torch.set_num_threads(threads)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output[-3000:]
    return result, output
