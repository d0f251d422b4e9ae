"""Re-read a saved box-free benchmark run with other statistics (what docs/defenses.md reports as
"ideas measured and dropped"): for every model the run trained - the owner's calibration models,
the attacker-side independent models and the copies on marked answers - on the owner's stored
verification queries:

- pooled: the share of the residual the answers carry, pooled over every query (the statistic in use);
- median: the median of the per-query shares;
- whitened: each pixel weighted by 1 / the suspect's local in-band error energy (plus the residual's
  mean energy), a matched filter for noise that is not stationary;
- decoys: the share for the owner's mark against the shares for `--decoys` fresh random marks through
  the same embedder; p = (1 + decoys at or above it) / (1 + decoys), exact under H0 only if the owner's
  mark were exchangeable with the decoys.

    OMP_NUM_THREADS=1 python benchmarks/bench_boxfree.py --out runs/bf --json runs/bf.json   # about 25 min
    OMP_NUM_THREADS=1 python benchmarks/analyze_boxfree_run.py runs/bf --decoys 49            # about 10 min

Prints one line per model and, per statistic, how many copies lie above every innocent model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the --out folder of benchmarks/bench_boxfree.py")
    parser.add_argument("--decoys", type=int, default=49, help="random decoy marks (0: skip the rank test)")
    parser.add_argument("--window", type=int, default=15, help="side of the local error-energy window (odd), px")
    parser.add_argument("--json", type=Path, default=None, help="also write every statistic as JSON")
    args = parser.parse_args()

    from imgsteal.defenses.boxfree import BoxfreeModel, band_pass, local_mean, new_mark, suspect_outputs
    from imgsteal.victim.inference import load_translator

    torch.set_num_threads(1)
    model = BoxfreeModel.load(args.run / "owner", "cpu")
    ex = model.extractor
    if not hasattr(ex, "correlation_terms"):
        parser.error("the run uses the learned extractor: these statistics need the matched filter's share")
    if not ex.in_band:  # the shares below are read in the residual's band, as the filter reads them since then
        parser.error("the run was trained before 2026-12-02 (its filter reads 1..band px detail): run the benchmark again")
    queries, refs = model.queries(), torch.stack(model.reference_answers())

    groups = {"innocent (owner's calibration)": args.run / "owner" / "calibration",
              "innocent (independent)": args.run / "independent", "copy": args.run / "stolen"}
    models = [(group, d) for group, folder in groups.items() for d in sorted(folder.glob("*"))
              if (d / "model.safetensors").exists()]
    if not models:
        parser.error(f"no trained models under {args.run}: pass the --out folder of bench_boxfree.py")

    def in_band(x: torch.Tensor) -> torch.Tensor:
        return band_pass(x, ex.smooth, ex.band)

    def hints(mark: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([model.embedder(refs[i : i + 16], mark[None].expand(len(refs[i : i + 16]), -1, -1, -1))
                              - refs[i : i + 16] for i in range(0, len(refs), 16)])

    h = hints(model.mark.cpu())
    bh = in_band(h)
    decoy_hints = [hints(new_mark(model.mark.shape[-1])) for _ in range(args.decoys)]
    decoy_dens = [float((in_band(d) * d).sum()) for d in decoy_hints]
    rows = []
    for group, folder in models:
        translator = load_translator(folder, "cpu")
        outs = torch.stack(suspect_outputs(lambda xs: [translator.translate(x) for x in xs], queries))
        be = in_band(outs - refs)
        per_query = (be * h).sum((1, 2, 3)) / (bh * h).sum((1, 2, 3))
        weight = 1.0 / (local_mean(be.pow(2).mean(1, keepdim=True), args.window) + bh.pow(2).mean())
        row = {"group": group, "model": folder.name,
               "pooled": float((be * h).sum() / (bh * h).sum()), "median": float(per_query.median()),
               "whitened": float((weight * be * h).sum() / (weight * bh * h).sum())}
        if args.decoys:
            decoys = torch.tensor([float((be * d).sum()) / den for d, den in zip(decoy_hints, decoy_dens)])
            row.update(decoy_mean=float(decoys.mean()), decoy_sd=float(decoys.std()),
                       p=float((1 + (decoys >= row["pooled"]).sum()) / (1 + args.decoys)))
        rows.append(row)
        extra = "" if not args.decoys else (f"  decoys {row['decoy_mean']:+.3f} (sd {row['decoy_sd']:.3f})  "
                                            f"p {row['p']:.3f}")
        print(f"{group:31} {folder.name:14} pooled {row['pooled']:+.3f}  median {row['median']:+.3f}  "
              f"whitened {row['whitened']:+.3f}{extra}", flush=True)

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
    if args.decoys:
        print(f"decoy rank test: p <= 0.05 for {sum(r['p'] <= 0.05 for r in copies)} of {len(copies)} copies "
              f"and {sum(r['p'] <= 0.05 for r in innocent)} of {len(innocent)} innocent models")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
