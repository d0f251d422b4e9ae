"""Re-read a saved box-free benchmark run with other statistics (what docs/defenses.md reports as
"ideas measured and dropped") beside the decision itself: for every model the run trained - the
owner's check models, the attacker-side independent models and the copies on marked answers - on
the owner's stored verification queries:

- pooled: the share of the owner's residual the answers carry, pooled over every query (the rank
  test's statistic);
- median: the median of the per-query shares;
- whitened: each pixel weighted by 1 / the suspect's local in-band error energy (plus the residual's
  mean energy), a matched filter for noise that is not stationary;
- p: the decoy-key rank test (`BoxfreeModel.rank_tests`, the decision) with `--decoys` decoys.

    OMP_NUM_THREADS=1 python benchmarks/bench_boxfree.py --out runs/bf --json runs/bf.json   # about 30 min
    OMP_NUM_THREADS=1 python benchmarks/analyze_boxfree_run.py runs/bf --decoys 999 --null-keys 200 --retrain 2

Prints one line per model and, per statistic, how many copies lie above every innocent model.

Two checks of the false-positive guarantee (the owner's key must be one draw like any other to the
innocent models):
- --null-keys N: N fresh keys drawn exactly like the owner's (`new_mark`) each take the owner's place
  against the same decoys; prints how often an innocent model is accused under a fresh key (alpha by
  construction), how many of them one key accuses (they move together: models trained on the same
  answers err alike), and where the owner's key stands among the fresh ones;
- --retrain K: retrains the first K attacker-side independent models here, from their recorded seeds
  and architectures, on the attacker crops alone (no watermark model loaded before), and compares
  their weights with the run's: equal weights rule out anything of the marked answers leaking into them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the --out folder of benchmarks/bench_boxfree.py")
    parser.add_argument("--decoys", type=int, default=999, help="decoy keys of the rank test")
    parser.add_argument("--alpha", type=float, default=0.01, help="level of the rank test")
    parser.add_argument("--window", type=int, default=15, help="side of the local error-energy window (odd), px")
    parser.add_argument("--json", type=Path, default=None, help="also write every statistic as JSON")
    parser.add_argument("--null-keys", type=int, default=0, help="fresh keys that take the owner's place (0: none)")
    parser.add_argument("--retrain", type=int, default=0, help="attacker-side independent models to retrain (0: none)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the benchmark trained (the retrain check compares weights bit for bit)
    if args.retrain:  # first, before anything of the watermark is loaded in this process
        retrain_check(args.run, args.retrain)

    from imgsteal.defenses.boxfree import BoxfreeModel, band_pass, local_mean, suspect_outputs
    from imgsteal.victim.inference import load_translator

    model = BoxfreeModel.load(args.run / "owner", "cpu")
    queries, refs = model.queries(), torch.stack(model.reference_answers())
    groups = {"innocent (owner's check)": args.run / "owner" / "calibration",
              "innocent (independent)": args.run / "independent", "copy": args.run / "stolen"}
    models = [(group, d) for group, folder in groups.items() for d in sorted(folder.glob("*"))
              if (d / "model.safetensors").exists()]
    if not models:
        parser.error(f"no trained models under {args.run}: pass the --out folder of bench_boxfree.py")

    answers = []
    for _, folder in models:
        translator = load_translator(folder, "cpu")
        answers.append(suspect_outputs(lambda xs: [translator.translate(x) for x in xs], queries))
    decoy_table = model.share_table(answers, model.decoy_keys(args.decoys), progress=True)  # decoys x models
    tests = model.rank_tests(answers, args.decoys, args.alpha, table=decoy_table)

    def in_band(x: torch.Tensor) -> torch.Tensor:
        return band_pass(x, model.embedder.smooth, model.embedder.band)

    h = next(model.embedder.hints(refs, [model.key]))
    bh = in_band(h)
    rows = []
    for (group, folder), outs, test in zip(models, answers, tests):
        be = in_band(torch.stack(outs) - refs)
        per_query = (be * h).sum((1, 2, 3)) / (bh * h).sum((1, 2, 3))
        weight = 1.0 / (local_mean(be.pow(2).mean(1, keepdim=True), args.window) + bh.pow(2).mean())
        row = {"group": group, "model": folder.name, "pooled": test.share, "median": float(per_query.median()),
               "whitened": float((weight * be * h).sum() / (weight * bh * h).sum()), "p": test.p_value,
               "z": test.z, "decoy_mean": test.decoy_mean, "decoy_sd": test.decoy_sd}
        rows.append(row)
        print(f"{group:25} {folder.name:14} pooled {row['pooled']:+.3f}  median {row['median']:+.3f}  "
              f"whitened {row['whitened']:+.3f}  decoys {row['decoy_mean']:+.3f} (sd {row['decoy_sd']:.3f})  "
              f"z {row['z']:+.2f}  p {row['p']:.4f}", flush=True)

    copies = [r for r in rows if r["group"] == "copy"]
    innocent = [r for r in rows if r["group"] != "copy"]
    for stat in ("pooled", "median", "whitened"):
        values = [r[stat] for r in innocent]
        mean = sum(values) / len(values)
        sd = (sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)) ** 0.5
        above = sum(r[stat] > max(values) for r in copies)
        print(f"{stat:9} innocent {min(values):+.3f}..{max(values):+.3f} (sd {sd:.3f}); copies "
              f"{min(r[stat] for r in copies):+.3f}..{max(r[stat] for r in copies):+.3f}; "
              f"copies above every innocent model: {above} of {len(copies)}")
    print(f"rank test, p <= {args.alpha}: {sum(r['p'] <= args.alpha for r in copies)} of {len(copies)} copies, "
          f"{sum(r['p'] <= args.alpha for r in innocent)} of {len(innocent)} innocent models")
    if args.null_keys:
        innocent = [j for j, (group, _) in enumerate(models) if group != "copy"]
        null_key_check(model, [answers[j] for j in innocent], decoy_table[:, innocent],
                       [tests[j].p_value for j in innocent], args.null_keys, args.alpha)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))


def null_key_check(model, answer_sets, decoy_table: torch.Tensor, owner_p: list[float], count: int,
                   alpha: float) -> None:
    """Fresh keys in the owner's place against the same decoys (`decoy_table`, decoys x models), on the
    innocent models' answers."""
    from imgsteal.defenses.boxfree import decoy_p_values, new_mark

    fresh = torch.stack([new_mark(model.key.shape[-1]) for _ in range(count)])
    shares = model.share_table(answer_sets, fresh, progress=True)  # fresh keys x models
    p = decoy_p_values(shares, decoy_table)  # fresh keys x models
    accused = (p <= alpha).sum(1)  # per fresh key
    owner_accused = sum(v <= alpha for v in owner_p)
    owner_median = float(torch.tensor(owner_p).median())  # the lower median, as for the fresh keys
    medians = p.median(1).values
    print(f"null keys: {count} fresh keys x {len(answer_sets)} innocent models: "
          f"{float((p <= alpha).float().mean()):.2%} of pairs at p <= {alpha} (alpha by construction)")
    spread = ", ".join(f"{n}: {int((accused == n).sum())}" for n in range(int(accused.max()) + 1))
    print(f"  innocent models accused per fresh key: {spread}")
    print(f"  the owner's key accuses {owner_accused} (fresh keys accusing as many or more: "
          f"{float((accused >= owner_accused).float().mean()):.1%}); its median innocent p {owner_median:.3f} "
          f"(fresh keys with a median as low or lower: {float((medians <= owner_median).float().mean()):.1%})")


def retrain_check(run: Path, count: int) -> None:
    """Retrain attacker-side independent models from their recorded seeds; compare weights with the run's."""
    import tempfile

    from imgsteal.defenses.boxfree import BoxfreeTrainConfig, make_pairs, train_surrogate
    from imgsteal.train.checkpoint import load_checkpoint

    from bench_boxfree import attacker_config  # the attacker's crops exactly as the benchmark draws them

    cfg = BoxfreeTrainConfig.model_validate_json((run / "owner" / "config.json").read_text())
    attacker = attacker_config(cfg)
    inputs, answers, _ = make_pairs(attacker, torch.device("cpu"))
    for folder in sorted((run / "independent").glob("*"))[:count]:
        saved = load_checkpoint(folder)
        spec = saved.meta["archs"]["generator"]
        with tempfile.TemporaryDirectory() as tmp:
            g = train_surrogate(inputs, answers, spec["arch"], spec.get("kwargs", {}), Path(tmp), seed=saved.meta["seed"],
                                steps=saved.meta["step"], device=torch.device("cpu"))
        weights = saved.module_state("generator")
        state = g.state_dict()
        if state.keys() != weights.keys():
            raise SystemExit(f"{folder}: the retrained model's tensors differ from the saved model's by name")
        diff = max(float((weights[k] - v).abs().max()) for k, v in state.items())
        print(f"retrained {folder.name} ({spec['arch']}, seed {saved.meta['seed']}): largest weight difference "
              f"{diff:.3g}{' (identical)' if diff == 0 else ''}", flush=True)


if __name__ == "__main__":
    main()
