"""Experiments A/B/C for style transfer (paper Tables 3 and 4): FID and KID, plus paired PSNR/SSIM.

For each test set of photos, every photo is centre-cropped to a square and resized to the working
size, sent through F_V and through each surrogate F_A (answers quantised to 8 bits, as an API
returns them), and then
  (A) FID/KID of F_V's outputs vs the style set S_X (same preprocessing),
  (B) FID/KID of F_A's outputs vs F_V's outputs,
  (C) FID/KID of F_A's outputs vs S_X,
with mean ± std over surrogates (seeds). Since (B) compares answers to the same inputs, it is also
scored pixel by pixel (PSNR, SSIM of F_A(x) vs F_V(x)), next to the do-nothing baseline x vs F_V(x):
a surrogate that learnt the style must come closer to F_V than the unstyled input does.

Without FID Inception weights (none named, none cached, no download), FID/KID are skipped (the results
say so, and why; a named file that does not work is an error); the paired
figures are computed regardless. Outputs: table.md, results.csv, results.json, outputs/<test set>/
(input/, victim/, surrogateN/: every image scored, as PNG named by its input's stem, and manifest.csv
mapping each name to its input file; ready for `imgsteal study create`), gallery/ (original | F_V | F_A triplets).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from imgsteal.data.images import load_images, quantize, save_image
from imgsteal.data.layouts import center_crop_resize
from imgsteal.errors import ImgstealError, WeightsUnavailableError
from imgsteal.files import safe_name
from imgsteal.evaluate.summary import Cell, abc_rows, output_names, spread_note, summarize, write_abc_outputs, write_manifest
from imgsteal.metrics import psnr, ssim

Model = Callable[[torch.Tensor], torch.Tensor]  # N x 3 x s x s -> N x 3 x s x s, in [0, 1]

DISTRIBUTION_METRICS = (("fid", "FID", 2), ("kid", "KID", 4))
PAIRED_METRICS = (("psnr", "PSNR (dB)", 2), ("ssim", "SSIM", 3))
DEFAULT_SIZE = 256


@dataclass
class StyleTestResult:
    """Scores of one test set. cells: metric -> experiment -> Cell.

    fid/kid: "A", "B", "C" (absent when FID/KID were skipped); psnr/ssim: "B" (F_A vs F_V) and
    "input_vs_victim" (the unstyled input vs F_V).
    """

    name: str
    n_images: int
    cells: dict[str, dict[str, Cell]]
    gallery: list[dict[str, str]] = field(default_factory=list)


@dataclass
class FIDStatus:
    """Whether FID/KID were computed, and if not, why (the message says how to supply the weights)."""

    computed: bool
    reason: str = ""
    weights: str = ""

    def as_dict(self) -> dict:
        """JSON-able form (results.json `fid_kid`)."""
        return {"computed": self.computed, "reason": self.reason, "weights": self.weights}


def prepare_photos(paths: list[Path], size: int) -> list[tuple[Path, torch.Tensor]]:
    """Load images (skipping unreadable ones with a warning), centre-crop each to a square and resize
    it to size x size, quantised to 8 bits: 3 x size x size in [0, 1]."""
    return [(path, quantize(center_crop_resize(image, size))) for path, image in load_images(paths)]


def _translate(model: Model, images: list[torch.Tensor], batch_size: int) -> list[torch.Tensor]:
    outputs = []
    for i in range(0, len(images), batch_size):
        outputs.extend(quantize(model(torch.stack(images[i : i + batch_size]))))
    return outputs


def _write_folder(folder: Path, names: list[str], images: list[torch.Tensor]) -> Path:
    for name, image in zip(names, images):
        save_image(image, folder / name)
    return folder


def _paired(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> dict[str, np.ndarray]:
    x, y = torch.stack(xs), torch.stack(ys)
    return {"psnr": psnr(x, y, crop_border=0).double().numpy(), "ssim": ssim(x, y, crop_border=0).double().numpy()}


class _Features:
    """Inception features of image folders, computed once each; the first WeightsUnavailableError
    switches FID/KID off for the rest of the evaluation."""

    def __init__(self, weights: str | None, device: str | None, cache_dir: str | None) -> None:
        self.weights, self.device, self.cache_dir = weights, device, cache_dir
        self.status: FIDStatus | None = None
        self._seen: dict[Path, np.ndarray] = {}

    def check(self) -> FIDStatus:
        """Find the weights once (explicit path, $IMGSTEAL_INCEPTION_WEIGHTS, torch hub cache, download).
        A file the user named that is missing, unreadable or wrong raises WeightsUnavailableError (naming
        it); only without a named file does "no weights" mean FID/KID are skipped."""
        if self.status is None:
            from imgsteal.metrics.features import load_fid_state_dict, resolve_inception_weights, weights_named

            try:
                path = resolve_inception_weights(self.weights)
                load_fid_state_dict(path)  # a wrong file must be reported here, not halfway through
                self.status = FIDStatus(True, weights=str(path))
            except WeightsUnavailableError as exc:
                if weights_named(self.weights):
                    raise
                self.status = FIDStatus(False, reason=str(exc))
        return self.status

    def __call__(self, folder: Path) -> np.ndarray:
        from imgsteal.metrics.features import inception_features

        if folder not in self._seen:
            self._seen[folder] = inception_features(folder, weights=self.status.weights, device=self.device,
                                                    cache_dir=self.cache_dir)
        return self._seen[folder]


def _distribution_cells(features: _Features, victim_dir: Path, surrogate_dirs: list[Path], style_dir: Path,
                        kid_subsets: int) -> dict[str, dict[str, Cell]]:
    from imgsteal.metrics.fid import fid_from_features
    from imgsteal.metrics.kid import kid_from_features

    fv, fs = features(victim_dir), features(style_dir)
    fas = [features(d) for d in surrogate_dirs]
    comparisons = {"A": [(fv, fs)], "B": [(fa, fv) for fa in fas], "C": [(fa, fs) for fa in fas]}
    cells: dict[str, dict[str, Cell]] = {"fid": {}, "kid": {}}
    for key, pairs in comparisons.items():
        cells["fid"][key] = summarize([np.array([fid_from_features(x, y)]) for x, y in pairs])
        cells["kid"][key] = summarize([np.array([kid_from_features(x, y, n_subsets=kid_subsets).mean]) for x, y in pairs])
    return cells


def evaluate_style_set(
    name: str,
    paths: list[Path],
    victim: Model,
    surrogates: list[Model],
    style_dir: Path,
    size: int,
    out_dir: Path,
    features: _Features,
    gallery_count: int = 4,
    batch_size: int = 16,
    kid_subsets: int = 100,
    progress: bool = True,
) -> StyleTestResult:
    """Score one test set (see module doc); writes its images under out_dir/outputs/<set>/ and the
    gallery triplets under out_dir/gallery/. Raises ImgstealError when no test image is readable."""
    photos = prepare_photos(paths, size)
    if not photos:
        raise ImgstealError(f"test set {name!r}: none of its {len(paths)} images could be read")
    inputs = [image for _, image in photos]
    folder = out_dir / "outputs" / safe_name(name)
    steps = tqdm(total=1 + len(surrogates), desc=f"translate {name}", disable=not progress, unit="model")
    v = _translate(victim, inputs, batch_size)
    steps.update(1)
    outs = []
    for s in surrogates:
        outs.append(_translate(s, inputs, batch_size))
        steps.update(1)
    steps.close()
    # Outputs keep their input's stem, and the prepared inputs and a manifest sit beside them.
    names = output_names([path for path, _ in photos])
    _write_folder(folder / "input", names, inputs)
    write_manifest(folder, names, [p for p, _ in photos])
    victim_dir = _write_folder(folder / "victim", names, v)
    surrogate_dirs = [_write_folder(folder / f"surrogate{r}", names, a) for r, a in enumerate(outs)]

    baseline = _paired(inputs, v)
    per_run = [_paired(a, v) for a in outs]
    cells: dict[str, dict[str, Cell]] = {
        m: {"B": summarize([run[m] for run in per_run]), "input_vs_victim": summarize([baseline[m]])} for m in ("psnr", "ssim")
    }
    if features.check().computed:
        if len(inputs) < 2:
            features.status = FIDStatus(False, reason=f"test set {name!r} has {len(inputs)} image; FID/KID need at least 2")
        else:
            cells.update(_distribution_cells(features, victim_dir, surrogate_dirs, style_dir, kid_subsets))

    gallery = []
    for i, (path, x) in enumerate(photos[:gallery_count]):
        entry = {"name": path.name}
        for label, image in (("input", x), ("victim", v[i]), ("surrogate", outs[0][i] if outs else v[i])):
            rel = f"{safe_name(name)}_{i:02d}_{label}.png"
            save_image(image, out_dir / "gallery" / rel)
            entry[label] = rel
        gallery.append(entry)
    return StyleTestResult(name=name, n_images=len(inputs), cells=cells, gallery=gallery)


def paired_rows(results: list[StyleTestResult]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the paired (B) table: PSNR and SSIM of F_A vs F_V and of input vs F_V."""
    header = ["Test set", "PSNR F_A vs F_V", "PSNR input vs F_V", "SSIM F_A vs F_V", "SSIM input vs F_V"]
    rows = []
    for r in results:
        row = [r.name]
        for metric, _, digits in PAIRED_METRICS:
            row += [f"(B) {r.cells[metric]['B'].text(digits)}", r.cells[metric]["input_vs_victim"].text(digits)]
        rows.append(row)
    return header, rows


def write_style_results(results: list[StyleTestResult], out_dir: Path, size: int, status: FIDStatus,
                        extra: dict | None = None) -> dict:
    """Write table.md, results.csv and results.json into out_dir; return the JSON dict."""
    head = {"kind": "style", "size": size, "fid_kid": status.as_dict(), **(extra or {})}
    return write_abc_outputs(out_dir, head, results, style_tables(results, status))


def evaluate_style(
    victim: Model,
    surrogates: list[Model],
    test_sets: dict[str, list[Path]],
    style_set: list[Path],
    out_dir: str | Path,
    size: int = DEFAULT_SIZE,
    inception_weights: str | None = None,
    device: str | None = None,
    gallery_count: int = 4,
    kid_subsets: int = 100,
    progress: bool = True,
    extra: dict | None = None,
) -> tuple[list[StyleTestResult], dict]:
    """Run A/B/C on every test set at `size` px and write the results into out_dir.

    style_set: the style images S_X (prepared like the test photos). inception_weights: FID
    Inception weights file (default: $IMGSTEAL_INCEPTION_WEIGHTS, torch hub cache, download); a named
    file that is missing, unreadable or wrong raises WeightsUnavailableError naming it before any work;
    when no file is named and none can be had, FID/KID are skipped and results.json says why. Returns (results, JSON dict).
    """
    if not surrogates:
        raise ImgstealError("style evaluation needs at least one surrogate model")
    features = _Features(inception_weights, device, None)
    features.check()  # a named weights file that does not work fails here, before any work
    out_dir = Path(out_dir)
    styles = prepare_photos(style_set, size)
    if len(styles) < 2:
        raise ImgstealError(f"the style set needs at least 2 readable images, found {len(styles)}")
    style_dir = _write_folder(out_dir / "outputs" / "style_set", output_names([p for p, _ in styles]),
                              [image for _, image in styles])
    results = [
        evaluate_style_set(name, paths, victim, surrogates, style_dir, size, out_dir, features, gallery_count,
                           kid_subsets=kid_subsets, progress=progress)
        for name, paths in test_sets.items()
    ]
    status = features.check()
    return results, write_style_results(results, out_dir, size, status, extra)


def style_report_blocks(report, results: list[StyleTestResult], status: FIDStatus, prefix: str = "",
                        gallery: bool = True) -> None:
    """Add Tables 3/4 (FID, KID) or the reason they were skipped, the paired (B) table and (with
    `gallery`) the original | F_V | F_A galleries to a Report. prefix: path from the report to the
    evaluation folder."""
    n = {r.name: r.n_images for r in results}
    if status.computed:
        for metric, label, digits in DISTRIBUTION_METRICS:
            rows = {r.name: r.cells[metric] for r in results if metric in r.cells}
            if rows:
                note = spread_note([c for cells in rows.values() for c in cells.values()], n)
                report.table(*abc_rows(rows, "style set", digits), caption=f"{label} (lower = closer); {note}")
    else:
        report.text(f"FID and KID were skipped: {status.reason}")
    note = spread_note([c for r in results for m in ("psnr", "ssim") for c in r.cells[m].values()], n)
    report.table(*paired_rows(results), caption="Paired (B): surrogate vs victim on the same inputs, and the unstyled "
                                                f"input vs victim; {note}")
    if not gallery:
        return
    for r in results:
        if r.gallery:
            report.gallery(["original", "victim F_V", "surrogate F_A"],
                           [[f"{prefix}gallery/{g[k]}" for k in ("input", "victim", "surrogate")] for g in r.gallery],
                           captions=[g["name"] for g in r.gallery], title=r.name)


def style_tables(results: list[StyleTestResult], status: FIDStatus):
    """The tables alone (a Report without galleries): `.markdown()` for table.md and the terminal."""
    from imgsteal.report.html import Report

    report = Report("Style transfer A/B/C")
    style_report_blocks(report, results, status, gallery=False)
    return report


def working_size(victim, surrogates) -> int:
    """The resolution the attack ran at, read from the models: the `image_size` a pix2pix surrogate
    (or a U-GAT-IT victim) was built for; DEFAULT_SIZE (256) when none records one."""
    for model in [*surrogates, victim]:
        spec = getattr(getattr(model, "generator", model), "build_spec", None) or {}
        size = spec.get("kwargs", {}).get("image_size")
        if size:
            return int(size)
    return DEFAULT_SIZE


def evaluate_style_cli(fv, fas, test_sets: dict[str, list[Path]], style_set: str, out: str | Path, report,
                       inception_weights: str | None, size: int | None = None, device: str | None = None) -> dict:
    """`imgsteal evaluate --task style`: run evaluate_style, add its blocks to `report`, print the tables.

    style_set: folder or dataset spec of S_X (required). size: working resolution; default the one
    the surrogates were trained at (see working_size).
    """
    import typer

    from imgsteal.data.layouts import resolve_images

    if not style_set:
        raise ImgstealError("--task style needs --style-set DIR (the style images S_X) for experiments (A) and (C)")
    size = size or working_size(fv, fas)
    results, payload = evaluate_style(fv, fas, test_sets, resolve_images(style_set), out, size=size,
                                      inception_weights=inception_weights, device=device)
    status = FIDStatus(**payload["fid_kid"])
    style_report_blocks(report, results, status)
    typer.echo(style_tables(results, status).markdown(title=False))
    return payload
