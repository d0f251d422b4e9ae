"""`imgsteal demo`: the whole attack on the bundled images, on CPU, with no network.

victim training -> harvest through the oracle -> surrogates (2 seeds) -> A/B/C evaluation -> report.
Every stage resumes: re-running the demo after an interruption continues where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from imgsteal.report.html import Report

# Settings the demo can run; `imgsteal demo` without --task runs them all.
DEMO_TASKS: tuple[str, ...] = ("sr", "style")


@dataclass(frozen=True)
class SRDemoPreset:
    """Small enough for ~5 minutes on 2 idle CPU cores; the paper-scale settings are the CLI defaults.

    At this size the victim's PSNR stays below bicubic upscaling, as SRGAN's often does (the
    adversarial phase trades PSNR for texture); what the demo measures is how closely F_A copies F_V.
    """

    n_blocks: int = 4
    channels: int = 32
    victim_pretrain_epochs: int = 10
    victim_gan_epochs: int = 2
    victim_repeat: int = 5
    surrogate_epochs: int = 10
    surrogate_repeat: int = 5
    patch: int = 24
    batch_size: int = 16
    lr: float = 1e-3
    seeds: tuple[int, ...] = (0, 1)


def _log(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _trained(run_dir: Path) -> bool:
    return (run_dir / "model.safetensors").exists()


def _resumable(run_dir: Path) -> bool:
    return (run_dir / "checkpoints" / "last.safetensors").exists()


def harvest_stage(victim_dir: Path, images: list[Path], store_dir: Path, oracle_factory, progress: bool, **options):
    """Harvest `images` from the victim in victim_dir into store_dir (resumes); returns the HarvestReport.

    oracle_factory(victim_model_path) -> Oracle context manager; default: the victim served over HTTP on
    127.0.0.1 (a subprocess with its own API key), so the adversary sees only the API.
    """
    from imgsteal.attack.harvest import harvest
    from imgsteal.data.pairs import PairStore

    if oracle_factory is None:
        from imgsteal.victim.launch import served_oracle as oracle_factory
    with oracle_factory(victim_dir / "model.safetensors") as oracle, PairStore(store_dir) as store:
        return harvest(oracle, images, store, progress=progress, **options)


def surrogate_stage(work: Path, seeds, make_config, progress: bool) -> list[Path]:
    """Train one surrogate per seed into work/surrogate-seed<N> (skipping finished ones, resuming
    interrupted ones); make_config(seed) -> SurrogateConfig. Returns the run folders."""
    from imgsteal.attack.surrogate import train_surrogate

    run_dirs = []
    for seed in seeds:
        run_dir = work / f"surrogate-seed{seed}"
        run_dirs.append(run_dir)
        if not _trained(run_dir):
            train_surrogate(make_config(seed), run_dir, resume=_resumable(run_dir), progress=progress)
    return run_dirs


def run_sr_demo(out: Path, preset: SRDemoPreset = SRDemoPreset(), progress: bool = True, oracle_factory=None) -> dict:
    """Run the super-resolution demo into out/sr; returns the results dict (also in out/sr/eval).

    oracle_factory: see `harvest_stage`.
    """
    from imgsteal.attack.surrogate import SurrogateConfig
    from imgsteal.data.demo import demo_data
    from imgsteal.data.images import list_images
    from imgsteal.evaluate.sr import evaluate_sr
    from imgsteal.victim.inference import load_translator
    from imgsteal.victim.train import SRVictimConfig, train_sr_victim

    data = demo_data()
    work = out / "sr"
    timings: dict[str, float] = {}

    t = time.perf_counter()
    victim_dir = work / "victim"
    if not _trained(victim_dir):
        _log("1/4 training the victim F_V (SRGAN, pixel content loss: no VGG19 weights offline)")
        cfg = SRVictimConfig(hr=[str(data.victim_photos)], n_blocks=preset.n_blocks, channels=preset.channels,
                             disc_channels=16, patch=preset.patch, batch_size=preset.batch_size, repeat=preset.victim_repeat,
                             pretrain_epochs=preset.victim_pretrain_epochs, gan_epochs=preset.victim_gan_epochs,
                             lr=preset.lr, content_loss="pixel", device="cpu")
        train_sr_victim(cfg, victim_dir, resume=_resumable(victim_dir), progress=progress)
    timings["victim_s"] = time.perf_counter() - t

    t = time.perf_counter()
    _log("2/4 harvesting: adversary photos, 4x bicubic downscaled, sent to the victim as a black box")
    harvest_report = harvest_stage(victim_dir, list_images(data.attacker_photos), work / "pairs", oracle_factory,
                                   progress, downscale=4)
    timings["harvest_s"] = time.perf_counter() - t

    t = time.perf_counter()

    def sr_surrogate(seed: int) -> SurrogateConfig:
        _log(f"3/4 training surrogate F_A (SRResNet) seed {seed} on the harvested pairs")
        return SurrogateConfig(store=str(work / "pairs"), arch="srresnet", seed=seed, epochs=preset.surrogate_epochs,
                               batch_size=preset.batch_size, patch=preset.patch, repeat=preset.surrogate_repeat,
                               lr=preset.lr, n_blocks=preset.n_blocks, channels=preset.channels, device="cpu")

    surrogate_dirs = surrogate_stage(work, preset.seeds, sr_surrogate, progress)
    timings["surrogates_s"] = time.perf_counter() - t

    t = time.perf_counter()
    _log("4/4 evaluating A/B/C on the held-out benchmark photos and the SR benchmark images")
    victim = load_translator(victim_dir, "cpu")
    surrogates = [load_translator(d, "cpu") for d in surrogate_dirs]
    test_sets = {"benchmark photos": list_images(data.benchmark_photos), "SR benchmark": list_images(data.sr_benchmark)}
    results, payload = evaluate_sr(victim, surrogates, test_sets, work / "eval", scale=4, progress=progress,
                                   extra={"harvest": harvest_report.as_dict()})
    timings["evaluate_s"] = time.perf_counter() - t
    payload["timings"] = timings
    payload["results_objects"] = results  # for the report; dropped before JSON
    return payload


def sr_headline(payload: dict) -> dict:
    """The demo's success criterion: PSNR(F_A, F_V) above PSNR(bicubic, F_V) on every test set."""
    rows = {}
    for name, cells in payload["test_sets"].items():
        fa = cells["psnr"]["B"]["mean"]
        bic = cells["psnr"]["bicubic_vs_victim"]["mean"]
        rows[name] = {"psnr_surrogate_vs_victim": fa, "psnr_bicubic_vs_victim": bic, "surrogate_beats_bicubic": fa > bic}
    return rows


def run_demo(out: str | Path = "runs/demo", tasks: tuple[str, ...] = DEMO_TASKS, progress: bool = True,
             sr_preset: SRDemoPreset = SRDemoPreset()) -> dict:
    """Run the demo for `tasks` and write out/report.html and out/results.json."""
    from imgsteal.evaluate.sr import sr_report_blocks

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = Report("imgsteal demo: model extraction of image-to-image translation")
    report.text("Everything below ran on the bundled images (see imgsteal/demo_data/MANIFEST.csv for sources and "
                "licenses). The victim is reachable only as a black box: images in, images out.")
    results: dict = {}
    for task in tasks:
        if task == "sr":
            payload = run_sr_demo(out, sr_preset, progress=progress)
            objects = payload.pop("results_objects")
            payload["headline"] = sr_headline(payload)
            results["sr"] = payload
            report.heading("Super-resolution (4x): SRGAN victim, SRResNet surrogate")
            for name, row in payload["headline"].items():
                verdict = "closer to the victim than bicubic upscaling" if row["surrogate_beats_bicubic"] else "NOT closer to the victim than bicubic upscaling"
                report.text(f"{name}: PSNR(F_A, F_V) = {row['psnr_surrogate_vs_victim']:.2f} dB vs "
                            f"PSNR(bicubic, F_V) = {row['psnr_bicubic_vs_victim']:.2f} dB: the surrogate is {verdict}.")
            h = payload["harvest"]
            report.text(f"Harvest: {h['stored_pairs']} pairs in the store, {h['queried']} queried in this run, "
                        f"cost ${h['total_usd']:.3f} at $0.016 per 256x256 answer.")
            report.text(f"Scores use {payload['convention']['color']} with crop_border = {payload['convention']['crop_border']}; "
                        "mean ± std over surrogate seeds (victim cells: std over images).")
            sr_report_blocks(report, objects, prefix="sr/eval/")
        elif task == "style":
            from imgsteal.demo_style import run_style_demo

            results["style"] = run_style_demo(out, report, progress=progress)
        else:
            raise ValueError(f"unknown demo task {task!r} (sr, style)")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    report.write(out / "report.html")
    _log(f"report: {out / 'report.html'}  results: {out / 'results.json'}")
    return results
