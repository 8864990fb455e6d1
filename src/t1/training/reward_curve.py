"""The stage-3 metrics log (one JSON object per logged step): written as training goes
(`MetricsLogger`, also to TensorBoard and one line per step on stdout), read, and plotted."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from ..atomic import atomic_open
from ..errors import T1Error

METRICS_FILE = "metrics.jsonl"


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a metrics.jsonl (or of `<folder>/metrics.jsonl`); [] when there is none."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut short by a killed process
        if isinstance(row, dict):
            rows.append(row)
    return rows


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


HEADLINE = (("reward", "reward {:.3f}"), ("reward_std", "± {:.3f}"), ("t1/positive_rank", "pos rank {:.2f}"),
            ("t1/reasoning_length", "len {:.1f}"), ("kl", "kl {:.4f}"), ("loss", "loss {:.4f}"),
            ("contrastive_loss", "nce {:.3f}"))


class MetricsLogger(TrainerCallback):
    """One line per logged step on stdout, the full dict to metrics.jsonl and TensorBoard."""

    def __init__(self, output_dir: Path, stream=None):
        self.path = Path(output_dir) / METRICS_FILE
        self.tb_dir = Path(output_dir) / "tensorboard"
        self.stream = stream or sys.stdout
        self.writer = None
        self.start = time.time()

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            _truncate_log(self.path, state.global_step)  # drop steps after the checkpoint we resume from
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.tb_dir))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, **{k: v for k, v in logs.items() if _is_number(v)}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in row.items():
                if key != "step":
                    self.writer.add_scalar(key, value, state.global_step)
            self.writer.flush()
        if "reward" in row:
            parts = [fmt.format(row[key]) for key, fmt in HEADLINE if key in row]
            print(f"step {state.global_step}/{state.max_steps} | " + " | ".join(parts)
                  + f" | {time.time() - self.start:.0f}s", file=self.stream, flush=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _truncate_log(path: Path, step: int) -> None:
    """Keep the rows of steps up to the checkpoint resumed from (a line cut short by a killed
    process goes too)."""
    if path.exists():
        with atomic_open(path) as f:
            f.writelines(json.dumps(row) + "\n" for row in read_metrics(path) if row.get("step", 0) <= step)
