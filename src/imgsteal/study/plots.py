"""Figures of the user study: score histograms per task (paper, Figure 6) and demographics (Figure 5).

Each figure is written as PNG and SVG with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path

from imgsteal.study.analyze import NOT_GIVEN, StudyAnalysis
from imgsteal.study.model import DEMOGRAPHIC_FIELDS, Demographics

V_COLOR = "#2c5fd4"
A_COLOR = "#e07b24"
_FIELD_TITLES = {"gender": "Gender", "age": "Age", "education": "Highest completed education"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    return paths


def plot_scores(analysis: StudyAnalysis, out_dir: str | Path, stem: str = "scores") -> list[Path]:
    """Figure 6: per task, the histogram of 1..5 scores for F_V and F_A with vertical mean lines."""
    plt = _pyplot()
    n = len(analysis.tasks)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 3.8), squeeze=False)
    for ax, task in zip(axes[0], analysis.tasks):
        scores = range(1, 6)
        groups = ((task.victim, "F_V", V_COLOR, -0.2), (task.surrogate, "F_A", A_COLOR, 0.2))
        for values, label, color, shift in groups:
            counts = [values.count(s) for s in scores]
            if values:
                mean = sum(values) / len(values)
                std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
                label = f"{label}: mean {mean:.2f}, std {std:.2f}"
                ax.axvline(mean, color=color, linestyle="--", linewidth=1.8)
            ax.bar([s + shift for s in scores], counts, width=0.4, color=color, alpha=0.85, label=label)
        ax.set_title(f"{task.task} (F_V n={len(task.victim)}, F_A n={len(task.surrogate)})")
        ax.set_xticks(list(scores))
        ax.set_xlim(0.4, 5.6)
        ax.set_ylim(0, max([1] + [max(task.victim.count(s), task.surrogate.count(s)) for s in scores]) * 1.3)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("score (1 = no resemblance, 5 = very much like the target style)")
        ax.set_ylabel("number of ratings")
        ax.legend(fontsize=8, loc="upper left", title="dashed lines: means", title_fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    paths = _save(fig, Path(out_dir), stem)
    plt.close(fig)
    return paths


def _ordered(field: str, counts: dict[str, int]) -> list[tuple[str, int]]:
    """Every default answer (zero counts too) in the questionnaire's order, other answers after, 'not given' last."""
    known = Demographics().choices(field)
    rank = {value: i for i, value in enumerate(known)}
    full = {value: 0 for value in known} | counts
    return sorted(full.items(), key=lambda kv: (kv[0] == NOT_GIVEN, rank.get(kv[0], len(known)), kv[0]))


def plot_demographics(analysis: StudyAnalysis, out_dir: str | Path, stem: str = "demographics") -> list[Path]:
    """Figure 5: bar charts of gender, age and education (participants per answer). [] if no data."""
    fields = [f for f in DEMOGRAPHIC_FIELDS if f in analysis.demographics]
    if not fields:
        return []
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(fields), figsize=(4.6 * len(fields), 3.8), squeeze=False)
    for ax, field in zip(axes[0], fields):
        items = _ordered(field, analysis.demographics[field])
        labels = [k for k, _ in items]
        bars = ax.barh(range(len(items)), [v for _, v in items], color=V_COLOR, alpha=0.85)
        ax.bar_label(bars, padding=3, fontsize=8)
        ax.set_xlim(0, max(v for _, v in items) * 1.15 + 0.5)
        ax.set_yticks(range(len(items)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(_FIELD_TITLES[field])
        ax.set_xlabel("participants")
        ax.grid(axis="x", alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    paths = _save(fig, Path(out_dir), stem)
    plt.close(fig)
    return paths
