"""Experiments A/B/C for super-resolution (paper Table 5): PSNR and SSIM on HR test sets.

For each HR test image: LR = 4x bicubic downscale, then
  (A) F_V(LR) vs HR,  (B) F_A(LR) vs F_V(LR),  (C) F_A(LR) vs HR,
plus the bicubic baseline (bicubic(LR) vs F_V(LR) and vs HR) that tells whether F_A learnt anything.
Victim answers are quantised to 8 bits, as the API returns them.

Outputs (evaluate_sr): table.md, results.csv, results.json, outputs/<test set>/ (lr/, hr/, bicubic/,
victim/, surrogateN/: every image scored, as PNG named by its input's stem, and manifest.csv mapping
each name to its input file; `imgsteal study create` takes hr/ as originals and victim/, surrogate0/
as the two models' outputs), gallery/ (<set>_NN_<stem>_<lr|bicubic|victim|surrogate|hr>.png).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from imgsteal.data.images import bicubic_downscale, bicubic_upscale, crop_to_multiple, load_images, quantize, save_image
from imgsteal.evaluate.summary import Cell, abc_rows, output_names, spread_note, summarize, write_abc_outputs, write_manifest
from imgsteal.metrics import psnr, ssim

Model = Callable[[torch.Tensor], torch.Tensor]  # N x 3 x h x w -> N x 3 x sh x sw, in [0, 1]


@dataclass
class SRConvention:
    """How scores are computed; the default is RGB with `scale` pixels cropped from each border."""

    crop_border: int = 4
    y_channel: bool = False


@dataclass
class SRTestResult:
    name: str
    n_images: int
    cells: dict[str, dict[str, Cell]]  # metric -> {"A","B","C","bicubic_vs_victim","bicubic_vs_hr"}
    gallery: list[dict[str, str]] = field(default_factory=list)


def _scores(x: torch.Tensor, y: torch.Tensor, conv: SRConvention) -> tuple[float, float]:
    kw = dict(crop_border=conv.crop_border, y_channel=conv.y_channel)
    return float(psnr(x[None], y[None], **kw)[0]), float(ssim(x[None], y[None], **kw)[0])


def evaluate_sr_set(
    name: str,
    paths: list[Path],
    victim: Model,
    surrogates: list[Model],
    scale: int,
    convention: SRConvention,
    gallery_dir: Path | None = None,
    gallery_count: int = 4,
    progress: bool = True,
    outputs_dir: Path | None = None,
) -> SRTestResult:
    """Score one test set. Returns cells for A, B, C and the bicubic baselines, for PSNR and SSIM.
    outputs_dir: also keep every scored image there (lr/, hr/, bicubic/, victim/, surrogateN/, each PNG
    named by its input's stem) with manifest.csv mapping each name to its input file."""
    keys = ("A", "B", "C", "bicubic_vs_victim", "bicubic_vs_hr")
    scores = {m: {k: [[] for _ in (surrogates if k in "BC" else [None])] for k in keys} for m in ("psnr", "ssim")}
    gallery = []
    images = load_images(paths)
    names = output_names([path for path, _ in images])
    if outputs_dir is not None:
        write_manifest(outputs_dir, names, [path for path, _ in images])
    for i, (path, hr) in enumerate(tqdm(images, desc=f"evaluate {name}", disable=not progress, unit="img")):
        hr = crop_to_multiple(hr, scale)
        lr = bicubic_downscale(hr, scale)
        v = quantize(victim(lr[None])[0])
        bic = bicubic_upscale(lr, scale)
        pairs = {"A": [(v, hr)], "bicubic_vs_victim": [(bic, v)], "bicubic_vs_hr": [(bic, hr)]}
        outs = [quantize(s(lr[None])[0]) for s in surrogates]
        pairs["B"] = [(a, v) for a in outs]
        pairs["C"] = [(a, hr) for a in outs]
        for key, items in pairs.items():
            for run, (x, y) in enumerate(items):
                p, s = _scores(x, y, convention)
                scores["psnr"][key][run].append(p)
                scores["ssim"][key][run].append(s)
        if outputs_dir is not None:
            for label, image in (("lr", lr), ("hr", hr), ("bicubic", bic), ("victim", v),
                                 *((f"surrogate{r}", a) for r, a in enumerate(outs))):
                save_image(image, outputs_dir / label / names[i])
        if gallery_dir is not None and i < gallery_count:
            stem = f"{name}_{i:02d}_{Path(names[i]).stem}"
            entry = {"name": path.name}
            for label, image in (("lr", lr), ("victim", v), ("surrogate", outs[0] if outs else v), ("hr", hr), ("bicubic", bic)):
                rel = f"{stem}_{label}.png"
                save_image(image, gallery_dir / rel)
                entry[label] = rel
            gallery.append(entry)
    cells = {m: {k: summarize([np.array(r) for r in runs]) for k, runs in per.items()} for m, per in scores.items()}
    return SRTestResult(name=name, n_images=len(images), cells=cells, gallery=gallery)


SR_METRICS = (("ssim", "SSIM", 3, "5a"), ("psnr", "PSNR (dB)", 2, "5b"))


def victim_verdicts(results: list[SRTestResult]) -> list[str]:
    """One sentence per test set on whether the victim beats bicubic upscaling against the truth (PSNR):
    a victim worse than doing nothing makes every attack figure mean little."""
    lines = []
    for r in results:
        a, bic = r.cells["psnr"]["A"].mean, r.cells["psnr"]["bicubic_vs_hr"].mean
        if a < bic:
            lines.append(f"Warning: on {r.name} the victim F_V is worse than bicubic upscaling against the ground truth "
                         f"(A: {a:.2f} dB vs bicubic {bic:.2f} dB PSNR), so copying it copies a model that is worse "
                         "than doing nothing; read (B) and (C) with that in mind.")
        else:
            lines.append(f"On {r.name} the victim F_V beats bicubic upscaling against the ground truth "
                         f"(A: {a:.2f} dB vs bicubic {bic:.2f} dB PSNR).")
    return lines


def sr_report_blocks(report, results: list[SRTestResult], prefix: str = "", gallery: bool = True) -> None:
    """Add Table 5 (5a SSIM, 5b PSNR) with the bicubic rows, the victim-vs-bicubic verdicts and (with
    `gallery`) the LR | bicubic | F_V | F_A | HR galleries to a Report. prefix: path from the report's
    folder to the evaluation folder holding gallery/."""
    for line in victim_verdicts(results):
        report.text(line)
    for metric, label, digits, number in SR_METRICS:
        header, rows = abc_rows({r.name: r.cells[metric] for r in results}, "original high-res", digits)
        for r in results:
            rows.append(["bicubic baseline", r.name, r.cells[metric]["bicubic_vs_victim"].text(digits),
                         r.cells[metric]["bicubic_vs_hr"].text(digits)])
        note = spread_note([c for r in results for c in r.cells[metric].values()], {r.name: r.n_images for r in results})
        report.table(header, rows, caption=f"Table {number}: {label}; {note}")
    if not gallery:
        return
    for r in results:
        if r.gallery:
            report.gallery(["LR input", "bicubic", "victim F_V", "surrogate F_A", "HR"],
                           [[f"{prefix}gallery/{g[k]}" for k in ("lr", "bicubic", "victim", "surrogate", "hr")] for g in r.gallery],
                           captions=[g["name"] for g in r.gallery], title=f"{r.name}")


def sr_tables(results: list[SRTestResult]):
    """The tables alone (a Report without galleries): `.markdown()` for table.md and the terminal."""
    from imgsteal.report.html import Report

    report = Report("Super-resolution A/B/C")
    sr_report_blocks(report, results, gallery=False)
    return report


def write_sr_results(results: list[SRTestResult], out_dir: Path, convention: SRConvention, extra: dict | None = None) -> dict:
    """Write table.md, results.csv and results.json into out_dir; return the JSON dict."""
    head = {
        "kind": "sr",
        "convention": {"color": "Y (BT.601)" if convention.y_channel else "RGB", "crop_border": convention.crop_border},
        **(extra or {}),
    }
    return write_abc_outputs(out_dir, head, results, sr_tables(results))


def evaluate_sr(
    victim: Model,
    surrogates: list[Model],
    test_sets: dict[str, list[Path]],
    out_dir: str | Path,
    scale: int,
    convention: SRConvention | None = None,
    gallery_count: int = 4,
    progress: bool = True,
    extra: dict | None = None,
) -> tuple[list[SRTestResult], dict]:
    """Run A/B/C on every test set and write the results, every scored image (outputs/<set>/, named by
    input stem, with manifest.csv) and the gallery images into out_dir."""
    from imgsteal.files import safe_name

    convention = convention or SRConvention(crop_border=scale)
    out_dir = Path(out_dir)
    results = [
        evaluate_sr_set(name, paths, victim, surrogates, scale, convention, out_dir / "gallery", gallery_count, progress,
                        outputs_dir=out_dir / "outputs" / safe_name(name))
        for name, paths in test_sets.items()
    ]
    return results, write_sr_results(results, out_dir, convention, extra)
