"""Which residual does a real copy learn? Offline, with no watermark training at all.

A box-free mark is an additive residual on every answer; it survives extraction only if the
attacker's copy reproduces it. This measures that for residuals of several spatial bands on the
shipped 4x super-resolution victim: a fixed random conv net of the answer (one secret function for
every band), band-passed, scaled to `--rms` (0.01: 40 dB), added to the answers of `demo:attacker`
(downscaled 4x, as the adversary sends them). MSRResNet copies (2 x 32, the demo's attacker) are
trained on the marked answers of each band and on the clean answers; on the held-out `demo:benchmark`
photos each copy's `share` of each residual is measured: <copy - victim, r> / <r, r> over every pixel
(1: the copy adds the whole residual, 0: none of it). The clean copies are the reference run: how much
of a residual a model that never saw it carries by chance.

    OMP_NUM_THREADS=1 python benchmarks/bench_residual_bands.py          # about 13 minutes on one core
    python benchmarks/bench_residual_bands.py --steps 200 --seeds 1      # 3 minutes, weaker copies
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

BANDS = {"1-3 px": (1, 3), "3-9 px": (3, 9), "5-17 px": (5, 17)}  # (smooth, band) of imgsteal.defenses.boxfree.band_pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--victim", default=None, help="SR victim (default: the shipped demo victim)")
    parser.add_argument("--steps", type=int, default=400, help="steps of every copy (the demo attacker's)")
    parser.add_argument("--seeds", type=int, default=2, help="copies per target set")
    parser.add_argument("--rms", type=float, default=0.01, help="residual RMS (0.01: 40 dB marked vs clean answers)")
    parser.add_argument("--decorrelate", action="store_true",
                        help="take out of each residual its fit on the answer's own detail (boxfree.decorrelate)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from torch import nn

    from imgsteal.data.images import load_images, quantize
    from imgsteal.data.layouts import resolve_image_specs
    from imgsteal.defenses.boxfree import band_pass, decorrelate, psnr, run_generator, train_surrogate
    from imgsteal.victim.inference import load_translator

    torch.set_num_threads(1)
    started = time.perf_counter()
    import imgsteal

    shipped = Path(imgsteal.__file__).parent / "victims" / "demo-sr" / "model.safetensors"
    victim = load_translator(args.victim or shipped, "cpu")

    def low_res(image: torch.Tensor) -> torch.Tensor:  # the adversary's query: its photo downscaled 4x
        h, w = (s // 4 * 4 for s in image.shape[-2:])
        return quantize(F.interpolate(image[None, :, :h, :w], scale_factor=0.25, mode="bicubic", antialias=True)[0].clamp(0, 1))

    def photos(spec: str) -> list[torch.Tensor]:
        return [low_res(img) for _, img in load_images(resolve_image_specs([spec]))]

    inputs = photos("demo:attacker")
    held_out = [q[:, :64, :64] for q in photos("demo:benchmark")]  # equal sizes: one batch
    answers = [quantize(victim.translate(x)) for x in inputs]
    held_out_answers = [quantize(victim.translate(q)) for q in held_out]

    torch.manual_seed(1234)  # the secret function: one for every band
    secret = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, padding_mode="replicate"), nn.ReLU(),
                           nn.Conv2d(16, 16, 3, padding=1, padding_mode="replicate"), nn.ReLU(),
                           nn.Conv2d(16, 3, 3, padding=1, padding_mode="replicate"))

    @torch.no_grad()
    def residual(answer: torch.Tensor, band: str) -> torch.Tensor:
        r = band_pass(torch.tanh(3 * secret(answer[None] * 2 - 1)), *BANDS[band])
        if args.decorrelate:
            r = decorrelate(r, answer[None], BANDS[band])
        return (args.rms * r / r.pow(2).mean().sqrt())[0]

    def share(outputs: list[torch.Tensor], band: str) -> float:
        num = den = 0.0
        for out, answer in zip(outputs, held_out_answers):
            r = residual(answer, band)
            num += float(((out - answer) * r).sum())
            den += float(r.pow(2).sum())
        return num / den

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for target in ["clean", *BANDS]:
            targets = answers if target == "clean" else [quantize((a + residual(a, target)).clamp(0, 1)) for a in answers]
            marked_db = None if target == "clean" else sum(psnr(t, a) for t, a in zip(targets, answers)) / len(answers)
            for seed in range(args.seeds):
                copy = train_surrogate(inputs, targets, "msrresnet", {"scale": 4, "n_blocks": 2, "channels": 32},
                                       Path(tmp) / f"{target}-{seed}", steps=args.steps, seed=seed, lr=1e-3,
                                       batch_size=16, patch=16)
                outputs = run_generator(copy, held_out)
                rows.append({"trained_on": target, "seed": seed, "marked_answers_db": marked_db,
                             "copy_vs_victim_db": sum(psnr(o, a) for o, a in zip(outputs, held_out_answers)) / len(outputs),
                             "share": {band: share(outputs, band) for band in BANDS}})
                print(f"  {target:<8} seed {seed}: copy vs victim {rows[-1]['copy_vs_victim_db']:.2f} dB, share "
                      + ", ".join(f"{b} {s:+.3f}" for b, s in rows[-1]["share"].items()), flush=True)

    print(f"\nshare of each residual a copy carries (rms {args.rms}, {args.steps} steps, {args.seeds} seeds, "
          f"{len(inputs)} queries; held out: {len(held_out)} photos)")
    print(f"{'band':<8} {'marked dB':>9} {'copies on marked':>17} {'clean copies (reference)':>25} {'ratio':>6}")
    for band in BANDS:
        carried = [r["share"][band] for r in rows if r["trained_on"] == band]
        chance = [r["share"][band] for r in rows if r["trained_on"] == "clean"]
        db = next(r["marked_answers_db"] for r in rows if r["trained_on"] == band)
        mean_c, mean_0 = sum(carried) / len(carried), sum(chance) / len(chance)
        print(f"{band:<8} {db:9.2f} {mean_c:17.3f} {mean_0:25.3f} {mean_c / max(abs(mean_0), 1e-3):6.1f}")
    print(f"time: {time.perf_counter() - started:.0f} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rms": args.rms, "steps": args.steps, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
