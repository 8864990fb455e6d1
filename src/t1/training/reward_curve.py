"""Reading a stage-3 metrics log (one JSON object per logged step) and plotting its reward curve."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import T1Error

METRICS_FILE = "metrics.jsonl"


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a metrics.jsonl (or of `<folder>/metrics.jsonl`); [] when there is none."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_rewards(metrics: str | Path, out_png: str | Path) -> Path:
    """Reward mean ± spread and the rank of the best positive per step (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [r for r in read_metrics(metrics) if "reward" in r]
    if not rows:
        raise T1Error(f"{metrics}: no reward rows to plot")
    step = np.array([r["step"] for r in rows])
    mean = np.array([r["reward"] for r in rows])
    std = np.array([r.get("reward_std", 0.0) for r in rows])
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot(step, mean, label="mean")
    ax[0].fill_between(step, mean - std, mean + std, alpha=0.25, label="± std")
    ax[0].set(xlabel="step", ylabel="reward", title="Stage-3 reward")
    ax[0].legend()
    ax[1].plot(step, [r.get("t1/positive_rank", np.nan) for r in rows], color="tab:orange")
    ax[1].set(xlabel="step", ylabel="rank", title="Rank of the best positive (lower is better)")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png
