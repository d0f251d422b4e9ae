"""ratings.csv -> per-task Welch t-test and TOST equivalence test of F_V vs F_A, plus demographics counts.

The CSV needs the columns `task`, `source` (victim / surrogate) and `rating` (1..5); `participant`,
`gender`, `age`, `education` and `finished` are used when present (as written by `study export`).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from imgsteal.errors import ImgstealError
from imgsteal.study.model import DEMOGRAPHIC_FIELDS, Source
from imgsteal.study.stats import StatsInputError, TostResult, WelchResult, check_tost_parameters, tost, welch
from imgsteal.study.store import StudyInputError, validate_rating

REQUIRED_COLUMNS = ("task", "source", "rating")
_SOURCE_ALIASES = {
    "victim": Source.victim, "f_v": Source.victim, "v": Source.victim,
    "surrogate": Source.surrogate, "f_a": Source.surrogate, "a": Source.surrogate,
}  # fmt: skip
NOT_GIVEN = "(not given)"


@dataclass
class Rating:
    task: str
    source: Source
    rating: int
    participant: str = ""
    demographics: dict[str, str] = field(default_factory=dict)
    finished: bool = True


@dataclass
class TaskAnalysis:
    """One task's ratings and tests; `error` says why a test could not run (then welch/tost are None)."""

    task: str
    victim: list[int]
    surrogate: list[int]
    welch: WelchResult | None
    tost: TostResult | None
    error: str | None = None


@dataclass
class StudyAnalysis:
    tasks: list[TaskAnalysis]
    bound_d: float
    alpha: float
    n_participants: int
    demographics: dict[str, dict[str, int]]  # field -> answer -> number of participants

    def to_dict(self) -> dict:
        """JSON-ready results (non-finite numbers become None)."""

        def clean(value):
            if isinstance(value, float) and not math.isfinite(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        tasks = []
        for t in self.tasks:
            tasks.append(
                {
                    "task": t.task,
                    "victim": {"n": len(t.victim), "ratings_histogram": _histogram(t.victim)},
                    "surrogate": {"n": len(t.surrogate), "ratings_histogram": _histogram(t.surrogate)},
                    "welch": asdict(t.welch) if t.welch else None,
                    "tost": asdict(t.tost) if t.tost else None,
                    "error": t.error,
                }
            )
        return clean(
            {
                "groups": {"a": "victim (F_V)", "b": "surrogate (F_A)", "diff": "mean(F_V) - mean(F_A)"},
                "bound_d": self.bound_d,
                "alpha": self.alpha,
                "n_participants": self.n_participants,
                "tasks": tasks,
                "demographics": self.demographics,
            }
        )


def _histogram(values: list[int]) -> dict[str, int]:
    return {str(score): values.count(score) for score in range(1, 6)}


def read_ratings_csv(path: str | Path) -> list[Rating]:
    """Parse a ratings CSV; raises ImgstealError naming the line of any bad row."""
    path = Path(path)
    if not path.is_file():
        raise ImgstealError(f"ratings file not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise ImgstealError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(columns) or 'none'}")
        ratings = []
        for line, row in enumerate(reader, start=2):
            source = _SOURCE_ALIASES.get((row["source"] or "").strip().lower())
            if source is None:
                raise ImgstealError(f"{path}, line {line}: source must be 'victim' or 'surrogate', got {row['source']!r}")
            try:
                value = validate_rating(row["rating"] or "")
            except StudyInputError as exc:
                raise ImgstealError(f"{path}, line {line}: {exc}") from None
            task = (row["task"] or "").strip()
            if not task:
                raise ImgstealError(f"{path}, line {line}: empty task")
            ratings.append(
                Rating(
                    task=task,
                    source=source,
                    rating=value,
                    participant=(row.get("participant") or "").strip(),
                    demographics={f: (row.get(f) or "").strip() for f in DEMOGRAPHIC_FIELDS if f in columns},
                    finished=(row.get("finished") or "1").strip() not in ("0", "false", "False"),
                )
            )
    return ratings


def analyze_ratings(ratings: list[Rating], bound_d: float = 0.3, alpha: float = 0.05, finished_only: bool = False) -> StudyAnalysis:
    """Per task (in order of first appearance): Welch's t-test and TOST of F_V (a) vs F_A (b) ratings."""
    check_tost_parameters(bound_d, alpha)
    if finished_only:
        ratings = [r for r in ratings if r.finished]
    if not ratings:
        raise ImgstealError("no ratings to analyse")
    tasks: list[TaskAnalysis] = []
    for name in dict.fromkeys(r.task for r in ratings):
        victim = [r.rating for r in ratings if r.task == name and r.source is Source.victim]
        surrogate = [r.rating for r in ratings if r.task == name and r.source is Source.surrogate]
        try:
            tasks.append(TaskAnalysis(name, victim, surrogate, welch(victim, surrogate), tost(victim, surrogate, bound_d, alpha)))
        except StatsInputError as exc:
            tasks.append(TaskAnalysis(name, victim, surrogate, None, None, error=str(exc)))

    # Demographics: one answer per participant (the first row that names them).
    per_participant: dict[str, dict[str, str]] = {}
    for r in ratings:
        if r.participant and r.participant not in per_participant:
            per_participant[r.participant] = r.demographics
    demographics: dict[str, dict[str, int]] = {}
    for f in DEMOGRAPHIC_FIELDS:
        if any(f in d for d in per_participant.values()):
            counts: dict[str, int] = {}
            for d in per_participant.values():
                answer = d.get(f) or NOT_GIVEN
                counts[answer] = counts.get(answer, 0) + 1
            demographics[f] = counts
    return StudyAnalysis(tasks, float(bound_d), float(alpha), len(per_participant), demographics)


def format_report(analysis: StudyAnalysis) -> str:
    """Human-readable per-task table and test results."""
    lines = []
    for t in analysis.tasks:
        lines.append(f"== {t.task} ==")
        if t.welch is None or t.tost is None:
            lines.append(f"  F_V n={len(t.victim)}  F_A n={len(t.surrogate)}  -- not tested: {t.error}")
            lines.append("")
            continue
        w, q = t.welch, t.tost
        lines.append(f"  {'group':<10}{'n':>6}{'mean':>8}{'std':>8}")
        lines.append(f"  {'F_V':<10}{w.n_a:>6}{w.mean_a:>8.3f}{w.std_a:>8.3f}")
        lines.append(f"  {'F_A':<10}{w.n_b:>6}{w.mean_b:>8.3f}{w.std_b:>8.3f}")
        lines.append(f"  difference F_V - F_A = {w.diff:+.3f} (se {w.se:.3f})")
        lines.append(f"  Welch's t-test: t = {w.t:.3f}, df = {w.df:.1f}, p = {w.p:.4g} (two-sided)")
        verdict = "EQUIVALENT" if q.equivalent else "equivalence NOT shown"
        lines.append(
            f"  TOST: bounds d = +-{q.bound_d:g} (Cohen's d) = +-{q.bound_raw:.3f} rating points "
            f"(pooled sd {q.pooled_sd:.3f})"
        )
        lines.append(
            f"        lower: t = {q.t_lower:.3f}, p = {q.p_lower:.4g}; upper: t = {q.t_upper:.3f}, p = {q.p_upper:.4g}; "
            f"df = {q.df:.1f}"
        )
        lines.append(f"        p = {q.p:.4g} -> {verdict} at alpha = {q.alpha:g}")
        lines.append(
            f"  smallest bound showing equivalence: d = +-{q.smallest_equivalent_bound_d:.3f} "
            f"(+-{q.smallest_equivalent_bound_raw:.3f} rating points)"
        )
        lines.append("")
    if analysis.n_participants:
        lines.append(f"participants: {analysis.n_participants}")
    return "\n".join(lines).rstrip() + "\n"


def write_results(analysis: StudyAnalysis, out_dir: str | Path) -> Path:
    """Write `out_dir/results.json`; returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    path.write_text(json.dumps(analysis.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
