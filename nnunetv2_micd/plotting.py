"""Charts written to files: matplotlib set up once without a display, and the Dice bar chart the demo and the
benchmark report share."""
from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt
import numpy as np


def save_figure(fig, filename: str) -> None:
    fig.tight_layout()
    fig.savefig(filename)
    plt.close(fig)


def labels_would_overlap(groups: Sequence[str]) -> bool:
    """Whether the group names, set level side by side, would run into each other (many groups, or long names such as
    tagged benchmark runs); they are then slanted."""
    return len(groups) > 4 or sum(max(len(line) for line in group.split("\n")) for group in groups) > 60


def grouped_bars(filename: str, groups: Sequence[str], series: Dict[str, List[float]],
                 errors: Optional[Dict[str, List[float]]] = None, ylabel: str = "test Dice",
                 zoom: bool = False) -> None:
    """One bar per series in every group (e.g. one per class for every method), with optional error bars. With
    ``zoom`` the axis spans the bars' range rather than 0 to 1, so that differences of a few thousandths show."""
    fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(groups)), 4.5))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        ax.bar(np.arange(len(groups)) + i * width, values, width, label=name, capsize=2,
               yerr=None if errors is None else errors[name])
    ax.set_xticks(np.arange(len(groups)) + width * (len(series) - 1) / 2)
    crowded = labels_would_overlap(groups)
    ax.set_xticklabels(groups, fontsize=7 if crowded else None, rotation=30 if crowded else 0,
                       ha="right" if crowded else "center")
    if zoom:
        values = np.array([v for vs in series.values() for v in vs])
        spread = np.array([e for es in (errors or {}).values() for e in es]) if errors else np.zeros_like(values)
        low, high = float((values - spread).min()), float((values + spread).max())
        margin = max(0.1 * (high - low), 0.005)
        ax.set_ylim(max(0.0, low - margin), min(1.0, high + margin))
        ylabel += " (axis not from 0)"
    else:
        ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    save_figure(fig, filename)
