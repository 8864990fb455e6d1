"""Comparison of run folders: markdown tables and a bar chart.

BRIGHT runs (a `t1 bright` folder, or `t1 eval` runs of single BRIGHT tasks) go in tables in the
benchmark's style: one row per run, the mean over tasks and one column per task in BRIGHT's
order, ×100 with one decimal; one table per metric BRIGHT reports (nDCG@10 for short documents;
Recall@1 and nDCG@10 for long ones), short and long runs apart. Other datasets get BEIR-style tables: one per metric, a row per dataset and a column
per run. A folder that is not a run itself but holds run folders stands for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_open
from ..bright_tasks import BRIGHT_TASKS
from ..errors import T1Error
from .metrics import bright_metrics, pretty_name
from .runs import INFO_FILE, METRICS_FILE, read_json, read_metrics

BRIGHT_COLUMNS = {
    "biology": "Bio.", "earth_science": "Earth.", "economics": "Econ.", "psychology": "Psy.",
    "robotics": "Rob.", "stackoverflow": "Stack.", "sustainable_living": "Sus.", "leetcode": "Leet.",
    "pony": "Pony", "aops": "AoPS", "theoremqa_questions": "TheoQ.", "theoremqa_theorems": "TheoT.",
}


@dataclass
class Run:
    label: str
    path: Path
    bright: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> metrics
    other: dict[str, dict[str, float]] = field(default_factory=dict)   # dataset -> metrics
    seconds: dict[str, float] = field(default_factory=dict)            # dataset/task -> wall seconds
    long: bool = False                                                 # BRIGHT with long documents


def _is_run(path: Path) -> bool:
    return (path / INFO_FILE).exists() or (path / METRICS_FILE).exists()


def _add_eval(run: Run, folder: Path) -> None:
    info = read_json(folder / INFO_FILE) if (folder / INFO_FILE).exists() else {}
    if not (folder / METRICS_FILE).exists():
        return  # unfinished
    metrics = read_metrics(folder / METRICS_FILE)
    dataset = info.get("dataset") or folder.name
    seconds = info.get("wall_seconds", {}).get("total")
    task = dataset.removeprefix("bright/").removesuffix("-long")
    if dataset.startswith("bright/") and task in BRIGHT_TASKS:
        run.bright[task] = metrics
        run.long = dataset.endswith("-long")
        key = task
    else:
        run.other[dataset] = metrics
        key = dataset
    if seconds is not None:
        run.seconds[key] = seconds


def load_run(path: str | Path, label: str | None = None) -> Run:
    path = Path(path)
    info = read_json(path / INFO_FILE) if (path / INFO_FILE).exists() else {}
    run = Run(label or path.resolve().name, path)
    if info.get("kind") == "bright":
        for task in BRIGHT_TASKS:
            if (path / task).is_dir():
                _add_eval(run, path / task)
    else:
        _add_eval(run, path)
    return run


def expand(paths: list[str | Path]) -> list[Path]:
    """Run folders named directly, or held one level down in a folder of runs."""
    found = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise T1Error(f"{p}: no such run folder")
        if _is_run(p):
            found.append(p)
            continue
        children = sorted(c for c in p.iterdir() if c.is_dir() and _is_run(c))
        if not children:
            raise T1Error(f"{p}: not a run folder (no {INFO_FILE} or {METRICS_FILE}) and holds none")
        found.extend(children)
    return found


def load_runs(paths: list[str | Path]) -> list[Run]:
    folders = [f.resolve() for f in expand(paths)]
    names = [f.name for f in folders]
    runs = [load_run(f, n if names.count(n) == 1 else f"{f.parent.name}/{n}") for f, n in zip(folders, names)]
    if not any(r.bright or r.other for r in runs):
        raise T1Error("no finished runs (no metrics.json) in " + ", ".join(map(str, paths)))
    return runs


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def bright_average(run: Run, tasks: list[str], metric: str) -> float | None:
    values = [run.bright[t][metric] for t in tasks if t in run.bright and metric in run.bright[t]]
    return sum(values) / len(values) if values else None


def bright_groups(runs: list[Run]) -> list[tuple[bool, list[Run]]]:
    """(long, runs) for the short-document and the long-document BRIGHT runs there are."""
    groups = [(long, [r for r in runs if r.bright and r.long == long]) for long in (False, True)]
    return [(long, group) for long, group in groups if group]


def bright_tables(runs: list[Run], metrics: tuple[str, ...] | None = None) -> list[str]:
    """One table per metric: `metrics`, else those BRIGHT reports (see `bright_metrics`)."""
    return [bright_table(group, m, long) for long, group in bright_groups(runs) for m in metrics or bright_metrics(long)]


def bright_table(runs: list[Run], metric: str = "ndcg@10", long: bool = False) -> str:
    runs = [r for r in runs if r.bright]
    tasks = [t for t in BRIGHT_TASKS if any(t in r.bright for r in runs)]
    header = ["Run", "Avg."] + [BRIGHT_COLUMNS[t] for t in tasks]
    lines = [f"BRIGHT{' long documents' if long else ''}, {pretty_name(metric)} ×100", "",
             "| " + " | ".join(header) + " |", "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|"]
    partial = False
    for r in runs:
        avg = _cell(bright_average(r, tasks, metric))
        if any(t not in r.bright for t in tasks):
            avg, partial = avg + "*", True
        cells = [_cell(r.bright.get(t, {}).get(metric)) for t in tasks]
        lines.append("| " + " | ".join([r.label, avg] + cells) + " |")
    if partial:
        lines += ["", "\\* average over the tasks this run has finished"]
    return "\n".join(lines)


def beir_table(runs: list[Run], metric: str = "ndcg@10") -> str:
    runs = [r for r in runs if r.other]
    datasets = sorted({d for r in runs for d in r.other})
    header = ["Dataset"] + [r.label for r in runs]
    lines = [f"{pretty_name(metric)} ×100", "",
             "| " + " | ".join(header) + " |", "|" + "|".join([" --- "] + [" ---: "] * len(runs)) + "|"]
    for d in datasets:
        lines.append("| " + " | ".join([d] + [_cell(r.other.get(d, {}).get(metric)) for r in runs]) + " |")
    if len(datasets) > 1:
        avgs = []
        for r in runs:
            vals = [r.other[d][metric] for d in datasets if d in r.other and metric in r.other[d]]
            avgs.append(_cell(sum(vals) / len(vals)) if len(vals) == len(datasets) else "–")
        lines.append("| " + " | ".join(["**Avg.**"] + avgs) + " |")
    return "\n".join(lines)


BEIR_METRICS = ("ndcg@10", "recall@100")


def markdown(runs: list[Run], metrics: tuple[str, ...] | None = None) -> str:
    """BRIGHT tables (`metrics`, else BRIGHT's own) and BEIR tables (`metrics`, else BEIR_METRICS)."""
    parts = bright_tables(runs, metrics)
    if any(r.other for r in runs):
        parts.extend(beir_table(runs, m) for m in metrics or BEIR_METRICS)
    return "\n\n".join(parts) + "\n"


def plot(runs: list[Run], path: str | Path, metrics: tuple[str, ...] | None = None) -> None:
    """Grouped bars, one bar per run: BRIGHT (average + tasks, the first of `metrics` or BRIGHT's
    headline metric) and/or other datasets × metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for long, bright_runs in bright_groups(runs):
        metric = (metrics or bright_metrics(long))[0]
        tasks = [t for t in BRIGHT_TASKS if any(t in r.bright for r in bright_runs)]
        groups = ["Avg."] + [BRIGHT_COLUMNS[t] for t in tasks]
        values = {r.label: [bright_average(r, tasks, metric)] + [r.bright.get(t, {}).get(metric) for t in tasks]
                  for r in bright_runs}
        panels.append((f"BRIGHT{' long documents' if long else ''} {pretty_name(metric)}", groups, values))
    other_runs = [r for r in runs if r.other]
    metrics = metrics or BEIR_METRICS
    if other_runs:
        datasets = sorted({d for r in other_runs for d in r.other})
        groups = [f"{d}\n{pretty_name(m)}" for d in datasets for m in metrics]
        values = {r.label: [r.other.get(d, {}).get(m) for d in datasets for m in metrics] for r in other_runs}
        panels.append(("Other datasets", groups, values))

    n_groups = max(len(p[1]) for p in panels)
    width_in = min(24.0, max(6.0, 2 + n_groups * (0.3 + 0.25 * len(runs))))
    fig, axes = plt.subplots(len(panels), 1, figsize=(width_in, 4 * len(panels)), squeeze=False)
    for ax, (title, groups, values) in zip(axes[:, 0], panels):
        width = 0.8 / len(values)
        for i, (label, vals) in enumerate(values.items()):
            xs = [g + (i - (len(values) - 1) / 2) * width for g in range(len(groups))]
            ax.bar(xs, [100 * v if v is not None else 0 for v in vals], width, label=label)
        ax.set_xticks(range(len(groups)), groups, fontsize=8)
        ax.set_ylabel("×100")
        ax.set_title(title)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def write_report(paths: list[str | Path], out: str | Path,
                 metrics: tuple[str, ...] | None = None) -> tuple[str, Path, Path]:
    """Render report.md and report.png into `out`; returns (markdown, md path, png path)."""
    runs = load_runs(paths)
    text = markdown(runs, metrics)
    out = Path(out)
    with atomic_open(out / "report.md") as f:
        f.write(text)
    plot(runs, out / "report.png", metrics)
    return text, out / "report.md", out / "report.png"
