"""Turning per-image scores into the paper's 'mean +- std' cells, rendering Table 3-5 style tables, and
naming the scored images after their inputs (with a manifest), for both kinds of evaluation."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Cell:
    """A table cell: mean and std across runs (surrogate seeds), plus the spread across images.

    For a single model (the victim) there is one run, and `std` is the std across images, which is
    how the paper reports the victim's (A) cells.
    """

    mean: float
    std: float
    image_std: float
    runs: list[float] = field(default_factory=list)
    n_images: int = 0

    def text(self, digits: int = 2) -> str:
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(per_run_scores: list[np.ndarray]) -> Cell:
    """per_run_scores: one array of per-image scores per run -> Cell (inf-safe: PSNR of identical images)."""
    runs = [np.asarray(s, dtype=np.float64) for s in per_run_scores]
    finite = [s[np.isfinite(s)] for s in runs]
    run_means = [float(s.mean()) if s.size else float("inf") for s in finite]
    image_std = float(np.mean([s.std(ddof=1) if s.size > 1 else 0.0 for s in finite]))
    if len(runs) == 1:
        return Cell(run_means[0], image_std, image_std, run_means, int(runs[0].size))
    std = float(np.std(run_means, ddof=1))
    return Cell(float(np.mean(run_means)), std, image_std, run_means, int(runs[0].size))


def abc_rows(rows: dict[str, dict[str, Cell]], reference: str, digits: int = 2) -> tuple[list[str], list[list[str]]]:
    """(header, rows) laid out like the paper's Tables 3-5.

    rows: test set name -> {"A": cell, "B": cell, "C": cell}; reference names the ground-truth
    column (e.g. 'original high-res' or 'style set').
    """
    header = ["Output", "Test set", "vs victim output", f"vs {reference}"]
    body = [["victim F_V", name, "N/A", f"(A) {c['A'].text(digits)}"] for name, c in rows.items()]
    body += [["surrogate F_A", name, f"(B) {c['B'].text(digits)}", f"(C) {c['C'].text(digits)}"] for name, c in rows.items()]
    return header, body


def spread_note(cells: list[Cell], n_images: int | dict[str, int]) -> str:
    """Which spread the ± of a table shows: over surrogate seeds, or over images for a single model.

    n_images: the test images per set ({name: count}), or one count for all."""
    counts = n_images if isinstance(n_images, dict) else {"": n_images}
    if len(set(counts.values())) <= 1:
        images = f"the {next(iter(counts.values()), 0)} test images"
    else:
        images = "the test images (" + ", ".join(f"{name}: {n}" for name, n in counts.items()) + ")"
    runs = max((len(c.runs) for c in cells), default=1)
    if runs > 1:
        return f"mean ± std over {runs} surrogate seeds (victim and baseline rows: std over {images})"
    return f"mean ± std over {images} (one surrogate: the ± is the spread over images, not over seeds)"


def write_abc_outputs(out_dir: Path, head: dict, results: list, tables) -> dict:
    """Write results.json, results.csv and table.md for A/B/C results; returns the JSON dict.

    head: the leading JSON fields (kind, conventions, ...); results: objects with name, n_images
    and cells (metric -> experiment -> Cell), one per test set; tables: the Report holding the
    tables (table.md is its Markdown rendering, report.html its HTML one).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        **head,
        "test_sets": {
            r.name: {"n_images": r.n_images, **{m: {k: c.as_dict() for k, c in cells.items()} for m, cells in r.cells.items()}}
            for r in results
        },
    }
    (out_dir / "results.json").write_text(json.dumps(payload, indent=2))
    with open(out_dir / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["test_set", "metric", "experiment", "mean", "std", "image_std", "n_images", "runs"])
        for r in results:
            for metric, cells in r.cells.items():
                for key, cell in cells.items():
                    writer.writerow([r.name, metric, key, f"{cell.mean:.6f}", f"{cell.std:.6f}", f"{cell.image_std:.6f}",
                                     r.n_images, len(cell.runs)])
    (out_dir / "table.md").write_text(tables.markdown(title=False))
    return payload


def output_names(paths: list[Path]) -> list[str]:
    """PNG file names that keep each input's stem (so outputs match their inputs by name, as `imgsteal
    study create` needs): 'photo.png', and 'photo-2.png' for a second input called photo.*."""
    names, seen = [], set()
    for path in paths:
        name, n = f"{path.stem}.png", 1
        while name in seen:
            n += 1
            name = f"{path.stem}-{n}.png"
        seen.add(name)
        names.append(name)
    return names


def write_manifest(folder: Path, names: list[str], inputs: list[Path]) -> Path:
    """folder/manifest.csv: one row per output name (as `output_names` made it) with its input file."""
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["name", "input"])
    writer.writerows([name, str(path)] for name, path in zip(names, inputs))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.csv").write_text(buf.getvalue())
    return folder / "manifest.csv"
