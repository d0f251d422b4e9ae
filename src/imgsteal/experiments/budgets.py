"""Fidelity against queries: what a copy of a given fidelity costs (the owner's audit, issue "strongest attack").

For a grid with a `budgets` axis, each line is one way to steal (attack method x surrogate
architecture x query selection); its points are the (B) score - the copy against the victim - at each
budget, mean ± std over seeds. From the lines come the figure (with a dollars axis at the configured
price) and the table "queries and dollars needed to reach X".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from imgsteal.experiments.aggregate import Stat, metric_info


@dataclass
class BudgetLine:
    """One way to steal: its label and (budget in queries, Stat of (B)) points in budget order."""

    label: str
    attack: str
    arch: str | None
    selection: str
    points: list[tuple[int, Stat]] = field(default_factory=list)


def budget_lines(records: list[dict], task: str, test_set: str, metric: str, defense: str = "none") -> list[BudgetLine]:
    """The lines of a task and test set from the cells' records (fraction 1.0, no augmentation); the paper's
    method with the default architecture and random queries first (the reference the others are read
    against), then the rest by name."""
    groups: dict[tuple, dict[int, list[float]]] = {}
    for r in records:
        if r["task"] != task or r["test_set"] != test_set or r.get("defense", "none") != defense \
                or r["augmentation"] != "none" or r["fraction"] != 1.0:
            continue
        value = r["metrics"].get(metric, {}).get("B")
        if value is None:
            continue
        key = (r.get("attack", "paper"), r.get("arch"), r.get("selection", "random"))
        groups.setdefault(key, {}).setdefault(int(r["queries"]), []).append(float(value))
    lines = []
    def order(item: tuple) -> tuple:
        (attack, arch, selection), _ = item
        return (attack, arch, selection) != ("paper", None, "random"), attack != "paper", str(item[0])

    for (attack, arch, selection), points in sorted(groups.items(), key=order):
        label = attack + (f", {arch}" if arch else "") + (f", {selection} queries" if selection != "random" else "")
        lines.append(BudgetLine(label, attack, arch, selection, [(q, Stat.of(v)) for q, v in sorted(points.items())]))
    return lines


def baseline_value(records: list[dict], task: str, test_set: str, metric: str) -> float | None:
    """(B)'s do-nothing score: bicubic (or the unstyled input) against the victim."""
    for r in records:
        if r["task"] == task and r["test_set"] == test_set:
            per = r["metrics"].get(metric, {})
            for key in ("bicubic_vs_victim", "input_vs_victim"):
                if key in per:
                    return float(per[key])
    return None


def queries_to_reach(line: BudgetLine, target: float, higher_is_better: bool = True) -> int | None:
    """The smallest budget whose mean reaches `target` (None: no budget of the line does)."""
    for queries, stat in line.points:
        if math.isfinite(stat.mean) and (stat.mean >= target if higher_is_better else stat.mean <= target):
            return queries
    return None


def default_targets(lines: list[BudgetLine], baseline: float | None) -> list[tuple[str, float]]:
    """(name, value) targets: what the first line (normally the paper's method) reaches with its largest
    budget, and halfway from the do-nothing baseline to it."""
    if not lines or not lines[0].points:
        return []
    full = lines[0].points[-1][1].mean
    targets = [(f"{lines[0].label} at {lines[0].points[-1][0]} queries", full)]
    if baseline is not None and math.isfinite(full):
        targets.append(("halfway from the baseline to that", baseline + (full - baseline) / 2))
    return targets


def dollars(value: float) -> str:
    """$0.016, $0.128, $1.28, $1,280: three significant digits below $10, cents above."""
    return f"${value:.3g}" if value < 10 else f"${value:,.2f}"


def reach_table(lines: list[BudgetLine], targets: list[tuple[str, float]], metric: str, price: float) -> tuple[list[str], list[list[str]]]:
    """Rows: one per way to steal; per target, the queries and dollars needed to reach it ('not reached')."""
    info = metric_info(metric)
    header = ["Attack"] + [f"to reach {info.label} {v:.{info.digits}f} ({name})" for name, v in targets]
    rows = []
    for line in lines:
        cells = []
        for _, value in targets:
            q = queries_to_reach(line, value, info.higher_is_better)
            cells.append("not reached" if q is None else f"{q:,} {'query' if q == 1 else 'queries'} ({dollars(q * price)})")
        rows.append([line.label, *cells])
    return header, rows


def plot_budget_curves(panels: list[tuple[str, list[BudgetLine], float | None, str]], price: float, out_dir: Path,
                       stem: str = "budget_curves") -> list[Path]:
    """One panel per (title, lines, baseline, metric): (B) vs queries on a log axis, ± std bands over
    seeds, the do-nothing baseline dotted, and the cost in dollars on the top axis."""
    from imgsteal.experiments.plots import _figure, _save

    plt, fig, axes = _figure(len(panels))
    for ax, (title, lines, baseline, metric) in zip(axes, panels):
        info = metric_info(metric)
        budgets = sorted({q for line in lines for q, _ in line.points})
        for line in lines:
            xs = [q for q, _ in line.points]
            means = [st.mean for _, st in line.points]
            drawn, = ax.plot(xs, means, marker="o", label=line.label)
            ax.fill_between(xs, [st.mean - st.std for _, st in line.points], [st.mean + st.std for _, st in line.points],
                            color=drawn.get_color(), alpha=0.18, linewidth=0)
        if baseline is not None:
            ax.axhline(baseline, color="grey", linestyle=(0, (1, 3)), linewidth=1.5, label="no copy (baseline vs F_V)")
        if budgets:
            from matplotlib.ticker import NullLocator

            ax.set_xscale("log", base=2)
            ax.set_xticks(budgets)
            ax.set_xticklabels([f"{q:,}" for q in budgets])
            ax.xaxis.set_minor_locator(NullLocator())
            top = ax.secondary_xaxis("top")
            top.set_xticks(budgets)
            top.set_xticklabels([dollars(q * price) for q in budgets], fontsize=7)
            top.xaxis.set_minor_locator(NullLocator())
            top.set_xlabel(f"cost at ${price:g} per query")
        ax.set_xlabel("queries to the victim")
        ax.set_ylabel(f"(B) {info.label}, copy vs victim ({'higher' if info.higher_is_better else 'lower'} is closer)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    return _save(plt, fig, out_dir, stem)
