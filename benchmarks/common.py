"""Shared helpers for the benchmark scripts (run from the repository root)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

SCIFACT = Path(os.environ.get("T1_SCIFACT", Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"))


def machine() -> str:
    """The host in words: figures from two hosts of one name (an Intel and an AMD VM) differ."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, {gpu}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def matmul_peak_gflops(n: int = 2048, repeats: int = 10, device: str = "cpu", dtype=torch.float32) -> float:
    """Measured dense matmul throughput: the practical peak to compare a model against."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device="cpu"):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def report(name: str, result: dict) -> None:
    result = {"benchmark": name, "machine": machine(), **result}
    print(json.dumps(result, indent=2))
    out = os.environ.get("T1_BENCH_OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{name}.json").write_text(json.dumps(result, indent=2))
