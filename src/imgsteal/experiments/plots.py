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


def _series(stats: dict[Key, Stat], s: TaskSummary, augmentation: str, test_set: str, experiment: str) -> list[tuple[float, Stat]]:
    """(fraction, Stat) of one experiment of a task over its fractions, where scored with a finite mean."""
    keys = ((f, (s.name, f, augmentation, test_set, s.metric, experiment)) for f in s.fractions)
    return [(f, stats[k]) for f, k in keys if k in stats and math.isfinite(stats[k].mean)]


def _band(ax, series: list[tuple[float, Stat]], **style) -> None:
    """Mean line with a +- std band; nothing for an empty series."""
    if not series:
        return
    xs = [f * 100 for f, _ in series]
    line, = ax.plot(xs, [st.mean for _, st in series], marker="o", **style)
    ax.fill_between(xs, [st.mean - st.std for _, st in series], [st.mean + st.std for _, st in series],
                    color=line.get_color(), alpha=0.18, linewidth=0)


def _level(ax, series: list[tuple[float, Stat]], **style) -> None:
    """A score that does not depend on the fraction (the victim's (A), a no-surrogate baseline) as a
    horizontal line; nothing for an empty series."""
    if series:
        ax.axhline(series[0][1].mean, **style)


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
                _band(ax, _series(stats, s, base, test_set, experiment), color=color, linestyle=STYLES[experiment],
                      label=f"{test_set} {LABELS[experiment]}")
            _level(ax, _series(stats, s, base, test_set, "A"), color=color, linestyle=":", linewidth=1,
                   label=f"{test_set} (A) F_V vs truth")
            for baseline, label in BASELINES.items():
                _level(ax, _series(stats, s, base, test_set, baseline), color=color, linestyle=(0, (1, 3)),
                       linewidth=1.5, alpha=0.7, label=f"{test_set} baseline: {label}")
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
            _band(ax, _series(stats, s, aug, test_set, experiment), label=AUGMENTATION_TITLES.get(aug, aug))
        if s.before_plateau is not None:
            ax.axvline(s.before_plateau * 100, color="grey", linewidth=1, linestyle="-.",
                       label=f"before plateau ({pct(s.before_plateau)})")
        _fraction_axis(ax, s)
        ax.set_ylabel(f"({experiment}) {info.label} on {test_set}")
        ax.set_title(f"{s.title}: augmentations")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    return _save(plt, fig, out_dir, "augmentations")
