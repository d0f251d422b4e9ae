"""Box-free output watermark on the bundled demo images: verification rate, false positives, fidelity.

The owner trains the watermark on crops of `demo:victim` (stage 1, stage 2, and a check of the decision
on `--calibration` independent models). Attackers then use crops of `demo:attacker` the owner never
saw: `--surrogates` models trained on the marked answers (several small architectures and seeds)
should be verified; `--independent` models trained on the clean answers (other seeds and
architectures than any the owner trained) should not. Every attacker-side model is a small surrogate
trained for `--attack-steps` steps with the rate annealed to 0 (default 3,000: a small SRResNet - no
bilinear skip - copies the shipped victim's answers at 28.8 dB after 1,200 steps at a constant rate,
33.6 dB annealed, 37.4 dB after 2,400 annealed; models that poor are not copies anyone would steal).
The owner's models (stage 2, check models) train for `--surrogate-steps` (1,200): the owner does not
know the attacker's recipe.

The victim (`--victim`) is by default the demo's shipped 4x super-resolution model
(src/imgsteal/victims/demo-sr: +0.6 dB over bicubic upscaling), and the models are SR networks (SRResNet,
MSRResNet, EDSR). `--victim identity` answers each image with itself: a victim
that does nothing, whose CPU copies (small U-Nets and CycleGAN ResNet generators) are poor - the
default until 2026-12-03, kept as a stress test: a copy 20-22 dB from its victim carries about as
much of the mark as its own errors correlate with a random key's residual. Or a victim run folder.

    OMP_NUM_THREADS=1 python benchmarks/bench_boxfree.py --surrogates 20 --independent 20 --json out.json
        # the goal's run: 132 min beside other jobs on 2 cores (2026-12-03, seed 10: 20 of 20, 0 of 30; owner 30 min)
    OMP_NUM_THREADS=1 python benchmarks/bench_boxfree.py --victim identity   # the stress test: 59-68 min beside another job
    OMP_NUM_THREADS=1 python benchmarks/bench_boxfree.py --steps 5 --surrogate-steps 5 --attack-steps 5 --surrogates 1 \
        --independent 1 --calibration 0 --decoys 99 --queries 8                                # a smoke run: about a minute

Every model is decided by the decoy-key rank test at `--alpha` (p <= alpha: its false-positive rate is
alpha by construction, whatever the independent models show) against `--decoys` decoy keys, all
models in one pass (the decoys' residuals are made once).

Goals (issue 15): >= 95% of surrogates on marked answers verified, at <= 1% false positives on
independent models, with marked answers >= 38 dB PSNR against the unmarked ones. (Counted on 20
independent models, 0 false positives bound the rate only to about 14% at 95% confidence; the 1%
comes from the test's construction, the count checks it.)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def victim_path(victim: str) -> str | None:
    """--victim: 'shipped' -> the demo's SR victim in the installed package, 'identity' -> None, else as given."""
    import imgsteal

    if victim == "shipped":
        return str(Path(imgsteal.__file__).parent / "victims" / "demo-sr")
    return None if victim == "identity" else victim


def attacker_config(owner_cfg):
    """The attacker's crops: the same recipe on `demo:attacker` (photos the owner never saw), another seed."""
    return owner_cfg.model_copy(update={"images": ["demo:attacker"], "seed": owner_cfg.seed + 1000})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--victim", default="shipped", help="shipped (the demo's SR victim), identity (each image "
                                                            "answered with itself), or a victim run folder")
    parser.add_argument("--size", type=int, default=48, help="answer crop side, px")
    parser.add_argument("--steps", type=int, default=400, help="stage-1 steps")
    parser.add_argument("--queries", type=int, default=None, help="verification queries (default: BoxfreeTrainConfig's)")
    parser.add_argument("--query-size", type=int, default=None, help="their answer side, px (default: BoxfreeTrainConfig's)")
    parser.add_argument("--surrogate-steps", type=int, default=1200, help="steps of the owner's stage-2 and check models")
    parser.add_argument("--attack-steps", type=int, default=3000, help="steps of the attackers' and independent models")
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--surrogates", type=int, default=10, help="attacker surrogates trained on marked answers")
    parser.add_argument("--independent", type=int, default=10, help="independent models trained on clean answers")
    parser.add_argument("--calibration", type=int, default=10, help="independent models the owner checks the decision on")
    parser.add_argument("--alpha", type=float, default=0.01, help="level of the rank test")
    parser.add_argument("--decoys", type=int, default=999, help="decoy keys of the rank test")
    parser.add_argument("--distinct-weight", type=float, default=None, help="stage 1: weight of the loss keeping two "
                                                                            "keys' residuals apart (default: BoxfreeTrainConfig's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extractor", default="matched", choices=["learned", "matched"])
    parser.add_argument("--band", type=int, default=None, help="the mark's residual is detail finer than band x band px "
                                                               "(odd; default: BoxfreeTrainConfig's)")
    parser.add_argument("--smooth", type=int, default=None, help="... and coarser than smooth x smooth px (odd, < band)")
    parser.add_argument("--strength", type=float, default=None, help="max residual per pixel")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="keep the run here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the measurements as JSON")
    parser.add_argument("--save-answers", type=Path, default=None,
                        help="also save every model's answers to the verification queries ({name: uint8 tensor}, "
                             "torch.save), to study the decision offline")
    args = parser.parse_args()

    from imgsteal.data.images import bicubic_upscale, quantize
    from imgsteal.defenses.boxfree import (
        BoxfreeModel, BoxfreeTrainConfig, make_pairs, module_suspect, psnr, run_generator, surrogate_specs, suspect_outputs,
        train_boxfree, train_surrogate, verify_many,
    )

    torch.set_num_threads(1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        cfg = BoxfreeTrainConfig(images=["demo:victim"], victim=victim_path(args.victim), size=args.size, mark_size=32,
                                 crops_per_image=2, steps=args.steps, batch_size=16, surrogates=2,
                                 negatives=4, surrogate_steps=args.surrogate_steps, finetune_steps=args.finetune_steps,
                                 calibration_models=args.calibration, seed=args.seed, extractor=args.extractor, device=args.device,
                                 alpha=args.alpha, decoys=args.decoys,
                                 **{k: v for k, v in (("band", args.band), ("smooth", args.smooth),
                                                      ("distinct_weight", args.distinct_weight),
                                                      ("strength", args.strength), ("queries", args.queries),
                                                      ("query_size", args.query_size)) if v is not None})
        result = train_boxfree(cfg, root / "owner", progress=False)
        owner_s = time.perf_counter() - started
        model = BoxfreeModel.load(root / "owner", args.device)
        # read now: without --out the run folder is gone after this block
        calibration = model.calibration() if args.calibration else {"p_values": {}}
        device = torch.device(args.device)

        attacker = attacker_config(cfg)
        inputs, answers, scale = make_pairs(attacker, device)
        marked = [quantize(model.embed(a)) for a in answers]
        fidelity = sum(psnr(m, a) for m, a in zip(marked, answers)) / len(answers)
        worst = min(psnr(m, a) for m, a in zip(marked, answers))
        specs = surrogate_specs(scale)
        # Doing nothing - the input upscaled bicubically (itself, for the identity service) - against the same
        # targets: a model farther from its targets than that has copied nothing worth stealing.
        upscaled = [quantize(bicubic_upscale(x, scale)) for x in inputs[:16]]
        doing_nothing = {"stolen": sum(psnr(u, t) for u, t in zip(upscaled, marked)) / len(upscaled),
                         "independent": sum(psnr(u, t) for u, t in zip(upscaled, answers)) / len(upscaled)}

        def train(targets, count, offset, tag):
            models = {}
            for k in range(count):
                arch, kwargs = specs[(k + offset) % len(specs)]
                g = train_surrogate(inputs, targets, arch, kwargs, root / tag / f"{k}", steps=args.attack_steps,
                                    seed=args.seed * 977 + offset * 131 + k, device=device)
                # How well the model copies its targets at all (a blurry copy carries little of any residual)
                copies = run_generator(g, inputs[:16], device)
                models[f"{tag}-{k}-{arch}"] = (g, sum(psnr(c, t) for c, t in zip(copies, targets[:16])) / len(copies))
            return models

        trained = {**train(marked, args.surrogates, 0, "stolen"), **train(answers, args.independent, 3, "independent")}
        suspects = {name: module_suspect(g, device) for name, (g, _) in trained.items()}
        verdicts = verify_many(model, suspects)
        if args.save_answers is not None:
            args.save_answers.parent.mkdir(parents=True, exist_ok=True)
            from imgsteal.data.patches import to_uint8_tensor

            torch.save({name: torch.stack([to_uint8_tensor(a) for a in suspect_outputs(s, model.queries())])
                        for name, s in suspects.items()}, args.save_answers)
        rows = [{"name": name, "share": round(v.share, 4), "p_value": v.p_value,
                 "share_threshold": round(v.share_threshold, 4), "z": round(v.z, 2), "similarity": round(v.similarity, 4),
                 "ncc": round(v.ncc, 4), "verified": v.verified, "psnr_to_targets_db": round(trained[name][1], 2),
                 "beats_doing_nothing": trained[name][1] > doing_nothing[name.split("-")[0]]}
                for name, v in verdicts.items()]
        stolen = [r for r in rows if r["name"].startswith("stolen")]
        independent = [r for r in rows if r["name"].startswith("independent")]

    rate = sum(v["verified"] for v in stolen) / max(1, len(stolen))
    real_copies = [v for v in stolen if v["beats_doing_nothing"]]
    innocent_p = [*(v["p_value"] for v in independent), *calibration["p_values"].values()]
    false_positives = sum(p <= args.alpha for p in innocent_p)
    from imgsteal.defenses.scorecard import fpr_upper_bound

    report = {
        "victim": args.victim or "identity", "size": args.size, "queries": cfg.queries, "query_size": cfg.verification_size,
        "band": cfg.band, "smooth": cfg.smooth, "strength": cfg.strength, "distinct_weight": cfg.distinct_weight,
        "scale": scale, "attack_steps": args.attack_steps, "alpha": args.alpha, "decoys": args.decoys, "owner_training_s": round(owner_s, 1),
        "total_s": round(time.perf_counter() - started, 1),
        "psnr_db_mean": round(fidelity, 2), "psnr_db_min": round(worst, 2),
        "doing_nothing_psnr_db": {k: round(v, 2) for k, v in doing_nothing.items()},
        "verification_rate": rate, "verified_real_copies": sum(v["verified"] for v in real_copies),
        "real_copies": len(real_copies), "false_positives": false_positives, "innocent_models": len(innocent_p),
        "false_positive_rate": false_positives / max(1, len(innocent_p)),
        "fpr_upper_95": fpr_upper_bound(false_positives, len(innocent_p)),
        "stolen": stolen, "independent": independent, "owner": result.as_dict(), "calibration": calibration,
    }
    print(f"box-free watermark, {len(answers)} attacker crops of {args.size} px, victim: {report['victim']}")
    print(f"verification: {cfg.queries} queries of {cfg.verification_size} px answers (the smallest image caps the side)")
    print(f"decision: the decoy-key rank test, p <= {args.alpha} against {args.decoys} decoy keys")
    print(f"doing nothing (the input {'upscaled bicubically' if scale > 1 else 'itself'}) vs the targets: "
          f"{doing_nothing['stolen']:.2f} dB (marked answers), {doing_nothing['independent']:.2f} dB (clean answers)")
    for v in stolen + independent:
        print(f"  {v['name']:<36} share {v['share']:+.3f} (threshold {v['share_threshold']:+.3f}, z {v['z']:+.1f})  "
              f"p {v['p_value']:.4f}  "
              f"mark SSIM {v['similarity']:+.3f}  copy of its targets {v['psnr_to_targets_db']:5.2f} dB  "
              f"{'VERIFIED' if v['verified'] else '-'}")
    owners = ", ".join(f"{p:.3f}" for p in calibration["p_values"].values())
    if calibration["p_values"]:
        print(f"  the owner's {len(calibration['p_values'])} check models: p {owners}")
    print(f"verified: {rate:.0%} of {len(stolen)} surrogates on marked answers   (goal >= 95%)")
    print(f"  {sum(v['verified'] for v in real_copies)} of the {len(real_copies)} closer to their targets than doing nothing")
    print(f"false positives: {false_positives} of {len(innocent_p)} independent models (the attacker-side ones and the "
          f"owner's check models)   (goal <= 1%; by construction <= {args.alpha:.0%})")
    print(f"  ({false_positives}/{len(innocent_p)} bound the rate to {report['fpr_upper_95']:.0%} at 95% confidence by count alone)")
    print(f"marked vs unmarked answers: PSNR {fidelity:.2f} dB mean, {worst:.2f} dB worst   (goal >= 38 dB)")
    print(f"time: owner training {owner_s:.0f} s, total {report['total_s']:.0f} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
