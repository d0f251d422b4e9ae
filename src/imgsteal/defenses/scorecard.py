"""The adaptive-attack scorecard (issue 15, item 3): every defence against attackers who adapt.

A scorecard is part of a defence evaluation (`imgsteal defense evaluate`, section `scorecard:`). It
adds cells to the evaluation's experiment - all through the experiment pipeline, into OUT/experiment:

    defences (none + every run) x attacks          the attack axis (imgsteal.attack.methods): paper,
                                                   jpeg, resize, noise, overmark, finetune, few-shot ...
    defences x the paper's augmentations           the augmentation axis, attack `paper`
    none x paper x independent seeds x archs       more models trained on clean answers

and then scores, for each defence and attack:

- verification: the defence's own statistic on each surrogate (watermark: how much of the trigger
  alterations the surrogate reproduces, `WatermarkVerdict.reproduced` = 1 - the median over triggers
  of d_alt / D: 0 for a model as far from the altered answers as the clean ones are, 1 for the
  altered answers exactly - continuous, where the share of triggers matched at a fixed closeness
  jumped between 0% and 44% from run to run as copies sat near the cut-off; fingerprint: bit
  accuracy on test images; boxfree: -log10 p of its decoy-key rank test; PGD has no verification),
  against ONE threshold per defence, fixed on the independent models only: every surrogate of the
  `none` run (clean answers: every attack, every seed) and the extra independent seeds and
  architectures. The threshold is the lowest value that at most a share `fpr` of the independent
  models exceed (with fewer than 100 models: their maximum, i.e. 0 false positives), and never less
  than a floor: for the fingerprint the independent models' mean bit accuracy plus what a coin adds
  to one half on 1% of tries over the bits read (a copy must read significantly more bits than
  innocent models do); for the box-free mark -log10 fpr (p <= fpr, the rank test's own level). A
  suspect is verified when its statistic is above it. A defended surrogate is never in the pool.
- fidelity: (B), PSNR and SSIM of F_A vs F_V on the first test set (the cells' own scores);
- cost to honest clients: PSNR and SSIM of the defended answers against the undefended ones.

What N independent models support: 0 false positives among N bounds the true rate only to
`fpr_upper_bound(0, N)` (95% one-sided, Clopper-Pearson): about 26% for 10 models, 3% for 100.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator

from imgsteal.data.augment import Augmentation
from imgsteal.errors import ImgstealError

if TYPE_CHECKING:
    from imgsteal.defenses.evaluate import Context

MIN_INDEPENDENT = 10
NO_DEFENSE = "none"
VERIFIABLE = ("boxfree", "fingerprint", "watermark")  # the first of these a run applies is what it verifies
STATISTIC = {"watermark": "alteration reproduced (1 - median d_alt/D)", "fingerprint": "bit accuracy",
             "boxfree": "-log10 p of the decoy-key rank test"}


class ScorecardSection(BaseModel):
    """Which adaptive attacks, seeds and independent models the scorecard runs."""

    model_config = ConfigDict(extra="forbid")

    attacks: list[str] = Field(
        default_factory=lambda: ["paper", "jpeg", "resize", "noise", "finetune", "few-shot", "overmark"],
        description="attack methods (imgsteal.attack.methods) every defence is attacked with")
    augmentations: list[Augmentation] = Field(
        default_factory=lambda: [Augmentation.flip],
        description="the paper's augmentations, each one more attack (attack paper with that augmentation)")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="surrogate seeds per defence x attack")
    independent_seeds: list[int] = Field(default_factory=lambda: [101, 102], description="extra clean-answer models: "
                                         "attack paper, these seeds x `independent_archs`")
    independent_archs: list[str] = Field(default_factory=list, description="architectures of the extra independent "
                                         "models (default: the task's)")
    fpr: float = Field(0.01, gt=0, lt=1, description="largest share of independent models allowed above the threshold")

    @field_validator("attacks")
    @classmethod
    def _attacks(cls, value: list[str]) -> list[str]:
        from imgsteal.attack.methods import ATTACK_METHODS

        unknown = [a for a in value if a not in ATTACK_METHODS]
        if unknown:
            raise ValueError(f"unknown attack(s) {', '.join(unknown)}; known: {', '.join(ATTACK_METHODS)}")
        if not value:
            raise ValueError("needs at least one attack")
        return list(dict.fromkeys(value))

    def independent_count(self, archs: int = 1) -> int:
        """Models trained on clean answers: the none run's cells plus the extra seeds x architectures."""
        columns = len(self.attacks) + len(self.augmentations)
        return columns * len(self.seeds) + len(self.independent_seeds) * max(1, archs)


# -- statistics ------------------------------------------------------------------------------------
def fpr_threshold(scores: Sequence[float], fpr: float, minimum: int = MIN_INDEPENDENT) -> float:
    """The threshold (verified when a statistic is strictly above it) that at most floor(fpr * n) of
    the n independent models' `scores` exceed; ImgstealError with fewer than `minimum` models."""
    values = [float(s) for s in scores if s is not None and not math.isnan(float(s))]
    if len(values) < minimum:
        raise ImgstealError(f"the threshold needs at least {minimum} independent models, got {len(values)}")
    allowed = math.floor(fpr * len(values) + 1e-9)
    return sorted(values, reverse=True)[allowed]


def chance_floor(trials: int, alpha: float = 0.01) -> float:
    """The highest share of `trials` coin flips (p = 1/2) that is not above chance at `alpha` (the
    one-sided binomial test the fingerprint's own verdict uses), half a trial below the first that is:
    a share strictly above it is significant."""
    from imgsteal.defenses.verify import binomial_p_value

    first = next(k for k in range(trials // 2, trials + 1) if binomial_p_value(k, trials) < alpha)
    return (first - 0.5) / trials


def fpr_upper_bound(false_positives: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound on the false-positive rate after `false_positives` of `n`
    (the `confidence` quantile of Beta(k + 1, n - k))."""
    if n <= 0 or false_positives >= n:
        return 1.0
    from scipy import stats

    return float(stats.beta.ppf(confidence, false_positives + 1, n - false_positives))


# -- the cells -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """One attack of the scorecard: an attack method, or the paper's recipe with an augmentation."""

    attack: str
    augmentation: str = "none"

    @property
    def label(self) -> str:
        return self.attack if self.augmentation == "none" else f"augment ({self.augmentation})"


def columns(section: ScorecardSection) -> list[Column]:
    return [Column(a) for a in section.attacks] + [Column("paper", Augmentation(a).value) for a in section.augmentations]


def experiments(cfg, section: ScorecardSection) -> list[tuple[str, Any]]:
    """The experiments the scorecard adds (label, ExperimentConfig), all run into OUT/experiment:
    independent models first (they also train the victim), then augmentations, then attacks."""
    runs = [NO_DEFENSE, *cfg.runs]
    out = [("independent models", cfg.experiment(defenses=[NO_DEFENSE], attacks=["paper"],
                                                 seeds=section.independent_seeds or section.seeds,
                                                 surrogates=section.independent_archs or None))]
    if section.augmentations:
        out.append(("augmentations", cfg.experiment(defenses=runs, attacks=["paper"], seeds=section.seeds,
                                                    augmentations=[Augmentation(a).value for a in section.augmentations])))
    out.append(("attacks", cfg.experiment(defenses=runs, attacks=section.attacks, seeds=section.seeds)))
    return out


def _cell(ctx: "Context", defense: str, column: Column, seed: int, arch: str | None = None):
    from imgsteal.experiments.grid import GridCell

    task = ctx.cfg.task
    arch = None if arch == task.surrogate_settings()["arch"] else arch
    return GridCell(task.name, 1.0, column.augmentation, seed, defense, column.attack, None, arch)


def independent_cells(ctx: "Context", section: ScorecardSection) -> list:
    """Every model trained on clean answers: the none run's cells and the extra seeds x architectures."""
    cells = [_cell(ctx, NO_DEFENSE, c, s) for c in columns(section) for s in section.seeds]
    for arch in section.independent_archs or [None]:
        cells += [_cell(ctx, NO_DEFENSE, Column("paper"), s, arch) for s in section.independent_seeds]
    unique = list(dict.fromkeys(cells))
    if any(c.defense != NO_DEFENSE for c in unique):
        raise ImgstealError("an independent model must be trained on clean answers")
    return unique


# -- verification statistics -----------------------------------------------------------------------
Scorer = Callable[[Sequence[Path]], list[float]]  # surrogate run folders -> their statistics, in order
Floor = Callable[[Sequence[float]], float]  # the independent models' statistics -> the least a threshold may be


def verifier(ctx: "Context", run: str, cache: dict, fpr: float) -> tuple[str, Scorer, Floor | None] | None:
    """(defence, statistic of surrogate run folders: higher = more of the mark, the least the threshold
    may be given the independent models' statistics, or None) for `run`, or None when its defences have
    nothing to verify (PGD). Scored all at once: the box-free rank test makes its decoys' residuals once."""
    from imgsteal.defenses.verify import checkpoint_suspect

    names = ctx.defenses(run)
    defense = next((d for d in VERIFIABLE if d in names), None)
    device = ctx.cfg.task.device
    device = "cpu" if device == "auto" else device
    if defense == "watermark":
        from imgsteal.defenses.verify import verify_watermark

        db = ctx.watermark_db(run)
        if not db.exists():
            return None

        def score(folders: Sequence[Path]) -> list[float]:
            return [verify_watermark(db, ctx.cfg.client, checkpoint_suspect(f, device), alpha=ctx.cfg.alpha).reproduced
                    for f in folders]
        floor = None
    elif defense == "fingerprint":
        from imgsteal.defenses.fingerprint import FingerprintModel, detect_fingerprint
        from imgsteal.victim.inference import load_translator

        if "fingerprint" not in cache:
            cache["fingerprint"] = FingerprintModel.load(ctx.fingerprint_dir, "cpu")
            cache["detect"] = [q for _, q in ctx.test_queries(ctx.cfg.detect_images)]
        fp, queries = cache["fingerprint"], cache["detect"]

        def score(folders: Sequence[Path]) -> list[float]:
            out = []
            for folder in folders:
                model = load_translator(folder, device)
                out.append(detect_fingerprint(fp, [model.translate(q) for q in queries]).accuracy)
            return out
        # A copy must read significantly more bits than innocent models do, not merely more than the
        # highest of a few: with the secret drawn against the decoder's reading of unstamped images
        # innocent models sit well below one half (0.35-0.37 on the demo), and before that one run's
        # all sat at 0.477-0.492 and chance-level copies were "verified". The margin is what a coin
        # adds to one half on 1% of tries over these bits.
        margin = chance_floor(fp.bits * len(queries)) - 0.5

        def floor(values: Sequence[float]) -> float:
            return sum(values) / len(values) + margin
    elif defense == "boxfree":
        from imgsteal.defenses.boxfree import BoxfreeModel, verify_many

        if "boxfree" not in cache:
            cache["boxfree"] = BoxfreeModel.load(ctx.boxfree_dir(run), "cpu")
        model = cache["boxfree"]

        def score(folders: Sequence[Path]) -> list[float]:
            verdicts = verify_many(model, {str(f): checkpoint_suspect(f, device) for f in folders}, alpha=fpr)
            return [-math.log10(verdicts[str(f)].p_value) for f in folders]

        def floor(values: Sequence[float]) -> float:
            # the rank test's own level: p <= fpr holds an innocent model's rate at fpr whatever the pool shows
            return -math.log10(fpr) - 1e-9
    else:
        return None
    return defense, score, floor


# -- the scorecard ---------------------------------------------------------------------------------
def _fidelity(folder: Path) -> dict[str, float | None]:
    """(B) of a finished cell on its first test set: PSNR and SSIM of F_A vs F_V."""
    import json

    records = json.loads((folder / "result.json").read_text())["records"]
    metrics = records[0]["metrics"] if records else {}
    return {"psnr_db": metrics.get("psnr", {}).get("B"), "ssim": metrics.get("ssim", {}).get("B")}


def build_scorecard(ctx: "Context", section: ScorecardSection, costs: dict[str, dict], log=print) -> dict:
    """Score every defence x attack (see the module docstring); `costs`: run -> answer_cost(...)."""
    experiment = ctx.experiment
    cols = columns(section)
    pool = independent_cells(ctx, section)
    cache: dict = {}
    rows, thresholds = [], {}
    for run in [NO_DEFENSE, *ctx.cfg.runs]:
        check = None if run == NO_DEFENSE else verifier(ctx, run, cache, section.fpr)
        cells = {col: [_cell(ctx, run, col, seed) for seed in section.seeds] for col in cols}
        calibration, statistics = None, {}
        if check is not None:
            defense, score, floor_of = check
            log(f"scorecard: {run}: scoring {len(pool)} independent models and the surrogates ({STATISTIC[defense]})")
            folders = [c.folder(experiment) / "surrogate" for c in pool]
            folders += [c.folder(experiment) / "surrogate" for group in cells.values() for c in group]
            statistics = dict(zip(folders, score(folders)))
            independent = {c.key: statistics[c.folder(experiment) / "surrogate"] for c in pool}
            values = list(independent.values())
            floor = None if floor_of is None else floor_of(values)
            threshold = max(fpr_threshold(values, section.fpr), -math.inf if floor is None else floor)
            fp = sum(1 for v in independent.values() if v > threshold)
            calibration = {"defense": defense, "statistic": STATISTIC[defense], "threshold": threshold, "floor": floor,
                           "independent_models": len(independent), "false_positives": fp,
                           "fpr_observed": fp / len(independent),
                           "fpr_upper_95": fpr_upper_bound(fp, len(independent)), "independent": independent}
            thresholds[run] = calibration
        for col in cols:
            suspects = []
            for seed, cell in zip(section.seeds, cells[col]):
                folder = cell.folder(experiment)
                entry: dict[str, Any] = {"seed": seed, "cell": cell.key, **_fidelity(folder)}
                if calibration is not None:
                    entry["statistic"] = statistics[folder / "surrogate"]
                    entry["verified"] = entry["statistic"] > calibration["threshold"]
                suspects.append(entry)
            verified = [s["verified"] for s in suspects if "verified" in s]

            def mean(key: str) -> float | None:
                values = [s[key] for s in suspects if s.get(key) is not None]
                return sum(values) / len(values) if values else None

            cost = costs.get(run, {})
            rows.append({"run": run, "defenses": ctx.defenses(run), "attack": col.label,
                         "verified": sum(verified) if calibration else None, "surrogates": len(suspects),
                         "verification_rate": sum(verified) / len(verified) if calibration else None,
                         "statistic": mean("statistic"), "threshold": calibration["threshold"] if calibration else None,
                         "fidelity_psnr_db": mean("psnr_db"), "fidelity_ssim": mean("ssim"),
                         "cost_psnr_db": cost.get("psnr_db"), "cost_ssim": cost.get("ssim"), "suspects": suspects})
    return {"attacks": [c.label for c in cols], "seeds": section.seeds, "fpr": section.fpr,
            "independent_models": [c.key for c in pool], "calibration": thresholds, "rows": rows}


def scorecard_rows(card: dict) -> tuple[list[str], list[list[str]]]:
    """The scorecard as one table (header, rows of text): a row per defence x attack."""
    def f(value, digits=2):
        if value is None:
            return "–"
        if isinstance(value, float) and math.isinf(value):
            return "∞"
        return f"{value:.{digits}f}"

    header = ["run", "attack", "verified", "statistic (mean)", "threshold", "F_A vs F_V PSNR (dB)", "F_A vs F_V SSIM",
              "answers PSNR (dB)", "answers SSIM"]
    rows = []
    for r in card["rows"]:
        verified = "n/a" if r["verified"] is None else f"{r['verified']}/{r['surrogates']} ({r['verification_rate']:.0%})"
        rows.append([r["run"], r["attack"], verified, f(r["statistic"], 3), f(r["threshold"], 3),
                     f(r["fidelity_psnr_db"]), f(r["fidelity_ssim"], 3), f(r["cost_psnr_db"]), f(r["cost_ssim"], 4)])
    return header, rows


def _comparison(statistic: float, threshold: float, name: str) -> str:
    """'statistic > threshold' as a cell prints it; a -log10 p statistic as p against its level (the
    box-free threshold sits a hair below -log10 alpha, so p = alpha would print as '2.000 > 2.000')."""
    above = statistic > threshold
    if name.startswith("-log10 p"):
        return f"p {10 ** -statistic:.2g} {'<=' if above else '>'} {10 ** -threshold:.2g}"
    return f"{statistic:.3f} {'>' if above else '<='} {threshold:.3f}"


def plot_scorecard(card: dict, path: Path) -> Path:
    """Heat map: runs x attacks, colour = verification rate, text = rate, statistic vs threshold and
    F_A's PSNR vs F_V (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = card["attacks"]
    runs = list(dict.fromkeys(r["run"] for r in card["rows"]))
    grid = [[float("nan")] * len(attacks) for _ in runs]
    text = [[""] * len(attacks) for _ in runs]
    for r in card["rows"]:
        i, j = runs.index(r["run"]), attacks.index(r["attack"])
        rate = r["verification_rate"]
        grid[i][j] = float("nan") if rate is None else rate
        psnr = "–" if r["fidelity_psnr_db"] is None else f"{r['fidelity_psnr_db']:.1f} dB"
        # the statistic against the threshold shows the margin a 0% / 100% cell hides
        margin = ("" if rate is None or r["statistic"] is None or r["threshold"] is None
                  else "\n" + _comparison(r["statistic"], r["threshold"], card["calibration"][r["run"]]["statistic"]))
        text[i][j] = ("n/a" if rate is None else f"{rate:.0%}") + margin + f"\n{psnr}"
    fig, ax = plt.subplots(figsize=(1.4 * len(attacks) + 2.2, 0.9 * len(runs) + 1.8))
    image = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    for i in range(len(runs)):
        for j in range(len(attacks)):
            dark = not math.isnan(grid[i][j]) and not 0.2 < grid[i][j] < 0.8  # the map's deep red and green ends
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xticks(range(len(attacks)))
    ax.set_xticklabels(attacks, rotation=30, ha="right")
    ax.set_yticks(range(len(runs)))
    ax.set_yticklabels(runs)
    ax.set_title(f"verified surrogates (threshold: <= {card['fpr']:.0%} of independent models above it)\n"
                 "cell: rate, the defence's statistic (mean) vs its threshold, F_A vs F_V PSNR", fontsize=9)
    fig.colorbar(image, ax=ax, label="verification rate")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
