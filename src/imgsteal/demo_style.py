"""`imgsteal demo --task style`: the style-transfer attack on the bundled images, on CPU, offline.

The victim trains a CycleGAN photo -> painting on its photos (domain A) and the secret paintings S_X
(domain B), and serves it over HTTP; the adversary queries it with its own photos, trains pix2pix
surrogates (2 seeds) on the answers, and the judge compares them on held-out photos: the victim's
own test split and the benchmark photos. Every stage resumes after an interruption.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from imgsteal.demo import _log, _resumable, _trained, harvest_stage, surrogate_stage
from imgsteal.report.html import Report


@dataclass(frozen=True)
class StyleDemoPreset:
    """Small enough for the whole style demo to run within ~15 minutes on 2 CPU cores; the paper-scale
    settings (256 px, 9 blocks, ngf 64, 200 epochs) are the CLI defaults."""

    size: int = 64
    victim_ngf: int = 16
    victim_blocks: int = 6
    victim_epochs: int = 20
    victim_repeat: int = 2  # 2 passes over the photos per epoch: 26 steps of 4, 520 in all
    victim_batch: int = 4
    victim_lr: float = 2e-4
    surrogate_channels: int = 16
    surrogate_epochs: int = 24
    surrogate_repeat: int = 3  # 45 steps of 4 pairs per epoch, 1080 in all
    surrogate_batch: int = 4
    surrogate_lr: float = 2e-4
    seeds: tuple[int, ...] = (0, 1)
    victim_test_every: int = 6  # every 6th victim photo is held out as the victim's test split


def split_victim_photos(photos: list[Path], folder: Path, test_every: int) -> tuple[Path, Path]:
    """Copy the victim's photos into folder/train and folder/test (every `test_every`-th photo, in
    sorted order, is a test photo); returns the two folders. Idempotent."""
    train, test = folder / "train", folder / "test"
    for i, path in enumerate(sorted(photos)):
        target = (test if i % test_every == test_every - 1 else train) / path.name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return train, test


def style_headline(payload: dict) -> dict:
    """The demo's success criterion per test set: PSNR(F_A, F_V) above PSNR(input, F_V), i.e. the
    surrogate reproduces the victim's answers better than leaving the photo unstyled does."""
    rows = {}
    for name, cells in payload["test_sets"].items():
        fa, base = cells["psnr"]["B"]["mean"], cells["psnr"]["input_vs_victim"]["mean"]
        rows[name] = {
            "psnr_surrogate_vs_victim": fa, "psnr_input_vs_victim": base,
            "ssim_surrogate_vs_victim": cells["ssim"]["B"]["mean"], "ssim_input_vs_victim": cells["ssim"]["input_vs_victim"]["mean"],
            "surrogate_beats_input": fa > base,
        }
    return rows


def run_style_demo(out: str | Path, report: Report, preset: StyleDemoPreset = StyleDemoPreset(), progress: bool = True,
                   oracle_factory=None) -> dict:
    """Run the style-transfer demo into out/style, add its sections to `report`; returns a JSON-able dict
    (also written as out/style/eval/results.json, without the timings and headline).

    oracle_factory: see `imgsteal.demo.harvest_stage`.
    """
    from imgsteal.attack.surrogate import SurrogateConfig
    from imgsteal.data.demo import demo_data
    from imgsteal.data.images import list_images
    from imgsteal.evaluate.style import FIDStatus, evaluate_style, style_report_blocks
    from imgsteal.victim.inference import load_translator
    from imgsteal.victim.style import StyleVictimConfig, train_style_victim

    out = Path(out)
    data = demo_data()
    work = out / "style"
    timings: dict[str, float] = {}
    started = time.perf_counter()

    t = time.perf_counter()
    victim_train, victim_test = split_victim_photos(list_images(data.victim_photos), work / "victim_photos",
                                                    preset.victim_test_every)
    victim_dir = work / "victim"
    if not _trained(victim_dir):
        _log(f"1/4 training the victim F_V (CycleGAN photo -> painting, {preset.size} px) on "
             f"{len(list_images(victim_train))} photos and {len(list_images(data.paintings))} secret paintings")
        cfg = StyleVictimConfig(arch="cyclegan", domain_a=str(victim_train), domain_b=str(data.paintings), size=preset.size,
                                epochs=preset.victim_epochs, repeat=preset.victim_repeat, batch_size=preset.victim_batch,
                                lr=preset.victim_lr,
                                ngf=preset.victim_ngf, ndf=preset.victim_ngf, n_blocks=preset.victim_blocks, device="cpu",
                                checkpoint_every=50)
        train_style_victim(cfg, victim_dir, resume=_resumable(victim_dir), progress=progress)
    timings["victim_s"] = time.perf_counter() - t

    t = time.perf_counter()
    _log(f"2/4 harvesting: adversary photos, centre-cropped to {preset.size} px, sent to the victim's API as a black box")
    store_dir = work / "pairs"
    harvest_report = harvest_stage(victim_dir, list_images(data.attacker_photos), store_dir, oracle_factory, progress,
                                   resize=preset.size)
    timings["harvest_s"] = time.perf_counter() - t

    t = time.perf_counter()

    def style_surrogate(seed: int) -> SurrogateConfig:
        _log(f"3/4 training surrogate F_A (pix2pix, {preset.size} px) seed {seed} on the harvested pairs")
        return SurrogateConfig(store=str(store_dir), arch="pix2pix", seed=seed, epochs=preset.surrogate_epochs,
                               batch_size=preset.surrogate_batch, size=preset.size, channels=preset.surrogate_channels,
                               repeat=preset.surrogate_repeat, lr=preset.surrogate_lr, augmentation="flip", device="cpu",
                               checkpoint_every=50)

    surrogate_dirs = surrogate_stage(work, preset.seeds, style_surrogate, progress)
    timings["surrogates_s"] = time.perf_counter() - t

    t = time.perf_counter()
    _log("4/4 evaluating A/B/C on the victim's held-out photos and the benchmark photos")
    victim = load_translator(victim_dir, "cpu")
    surrogates = [load_translator(d, "cpu") for d in surrogate_dirs]
    test_sets = {"victim test photos": list_images(victim_test), "benchmark photos": list_images(data.benchmark_photos)}
    results, payload = evaluate_style(victim, surrogates, test_sets, list_images(data.paintings), work / "eval",
                                      size=preset.size, progress=progress,
                                      extra={"harvest": harvest_report.as_dict(), "preset": asdict(preset)})
    timings["evaluate_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - started
    payload["timings"] = timings
    payload["headline"] = style_headline(payload)

    status = FIDStatus(**payload["fid_kid"])
    report.heading("Style transfer: CycleGAN victim (photo -> painting), pix2pix surrogate")
    report.text(f"The victim trained on {len(list_images(victim_train))} photos and {len(list_images(data.paintings))} "
                f"paintings (the secret style set S_X) at {preset.size} x {preset.size} px. The adversary never saw the "
                f"paintings: it sent its own photos to the victim's HTTP API and trained pix2pix on the answers "
                f"(seeds {', '.join(map(str, preset.seeds))}).")
    for name, row in payload["headline"].items():
        verdict = "closer to the victim than the unstyled input" if row["surrogate_beats_input"] else "NOT closer to the victim than the unstyled input"
        report.text(f"{name}: PSNR(F_A, F_V) = {row['psnr_surrogate_vs_victim']:.2f} dB vs PSNR(input, F_V) = "
                    f"{row['psnr_input_vs_victim']:.2f} dB; SSIM {row['ssim_surrogate_vs_victim']:.3f} vs "
                    f"{row['ssim_input_vs_victim']:.3f}: the surrogate is {verdict}.")
    h = harvest_report.as_dict()
    report.text(f"Harvest: {h['stored_pairs']} pairs in the store, {h['queried']} queried in this run, "
                f"cost ${h['total_usd']:.3f} at $0.016 per 256x256 answer.")
    style_report_blocks(report, results, status, prefix="style/eval/")
    report.text("Time per stage: " + ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in timings.items()) + ".")
    return payload
