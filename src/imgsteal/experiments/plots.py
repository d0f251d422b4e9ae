"""Figure 7 (metric vs fraction of data, +- std over seeds, for B and C) and the augmentation curves.

Both figures have one panel per task and are written as PNG and SVG.
"""

from __future__ import annotations

import math
from pathlib import Path

from imgsteal.experiments.aggregate import (
    AUGMENTATION_TITLES, Key, Stat, TaskSummary, base_augmentation, has_experiment, metric_info, pct,
)

STYLES = {"B": "-", "C": "--"}
LABELS = {"B": "(B) F_A vs F_V", "C": "(C) F_A vs truth"}
# What (B) would score with no surrogate at all: the line a stolen model has to beat.
BASELINES = {"bicubic_vs_victim": "bicubic vs F_V", "input_vs_victim": "input vs F_V"}


def _figure(n_panels: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n_panels, figsize=(5.4 * n_panels, 5.6), squeeze=False)
    return plt, fig, list(axes[0])


def _fraction_axis(ax, summary: TaskSummary) -> None:
    queries = {c["fraction"]: c["queries"] for c in summary.costs}
    ticks = summary.fractions
    ax.set_xticks([f * 100 for f in ticks])
    ax.set_xticklabels([f"{pct(f)}\n{queries[f]:,} q" if f in queries else pct(f) for f in ticks])
    ax.set_xlabel("fraction of the harvested pairs (queries)")
    ax.grid(alpha=0.3)


def _band(ax, fractions: list[float], stats: list[Stat], **style) -> None:
    xs = [f * 100 for f in fractions]
    means = [s.mean for s in stats]
    lows = [s.mean - s.std for s in stats]
    highs = [s.mean + s.std for s in stats]
    line, = ax.plot(xs, means, marker="o", **style)
    ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.18, linewidth=0)


def _save(plt, fig, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    fig.savefig(paths[0], dpi=130)
    with plt.rc_context({"svg.fonttype": "none"}):  # text stays text: searchable and editable
        fig.savefig(paths[1])
    plt.close(fig)
    return paths


def plot_fraction_curves(summaries: list[TaskSummary], stats: dict[Key, Stat], out_dir: Path) -> list[Path]:
    """Figure 7: per task, the main metric of (B) and (C) vs the fraction of data (augmentation none),
    mean line and +- std band per test set; the victim's (A) as a dotted line, the no-surrogate baseline of
    (B) (bicubic or the input itself vs F_V) as a sparse dotted line; the plateau marked."""
    plt, fig, axes = _figure(len(summaries))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, s in zip(axes, summaries):
        info, base = metric_info(s.metric), base_augmentation(s.augmentations)
        for i, test_set in enumerate(s.test_sets):
            color = colors[i % len(colors)]
            for experiment in ("B", "C"):
                points = [(f, stats[k]) for f in s.fractions if (k := (s.name, f, base, test_set, s.metric, experiment)) in stats]
                points = [(f, st) for f, st in points if math.isfinite(st.mean)]
                if points:
                    _band(ax, [f for f, _ in points], [st for _, st in points], color=color, linestyle=STYLES[experiment],
                          label=f"{test_set} {LABELS[experiment]}")
            a = [stats[k] for f in s.fractions if (k := (s.name, f, base, test_set, s.metric, "A")) in stats]
            if a and math.isfinite(a[0].mean):
                ax.axhline(a[0].mean, color=color, linestyle=":", linewidth=1, label=f"{test_set} (A) F_V vs truth")
            for baseline, label in BASELINES.items():
                b = [stats[k] for f in s.fractions if (k := (s.name, f, base, test_set, s.metric, baseline)) in stats]
                if b and math.isfinite(b[0].mean):
                    ax.axhline(b[0].mean, color=color, linestyle=(0, (1, 3)), linewidth=1.5, alpha=0.7,
                               label=f"{test_set} baseline: {label}")
        if s.plateau is not None:
            ax.axvline(s.plateau * 100, color="grey", linewidth=1, linestyle="-.", label=f"plateau ({pct(s.plateau)})")
        _fraction_axis(ax, s)
        arrow = "higher is better" if info.higher_is_better else "lower is better"
        ax.set_ylabel(f"{info.label} ({arrow})")
        ax.set_title(s.title)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    return _save(plt, fig, out_dir, "fraction_curves")


def plot_augmentations(summaries: list[TaskSummary], stats: dict[Key, Stat], out_dir: Path) -> list[Path]:
    """Per task: the main metric of (C) - (B) when (C) was not scored - vs fraction, one line
    (+- std band) per augmentation, on the task's first test set."""
    plt, fig, axes = _figure(len(summaries))
    for ax, s in zip(axes, summaries):
        info = metric_info(s.metric)
        experiment = "C" if has_experiment(stats, s.name, s.metric, "C") else "B"
        test_set = s.test_sets[0]
        for aug in s.augmentations:
            points = [(f, stats[k]) for f in s.fractions if (k := (s.name, f, aug, test_set, s.metric, experiment)) in stats]
            points = [(f, st) for f, st in points if math.isfinite(st.mean)]
            if points:
                _band(ax, [f for f, _ in points], [st for _, st in points], label=AUGMENTATION_TITLES.get(aug, aug))
        if s.before_plateau is not None:
            ax.axvline(s.before_plateau * 100, color="grey", linewidth=1, linestyle="-.",
                       label=f"before plateau ({pct(s.before_plateau)})")
        _fraction_axis(ax, s)
        ax.set_ylabel(f"({experiment}) {info.label} on {test_set}")
        ax.set_title(f"{s.title}: augmentations")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    return _save(plt, fig, out_dir, "augmentations")
